"""Composition: apply registered degradations in sequence with one generator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from degradations.registry import DegradationError, get, register


@register("compose")
def compose(image: np.ndarray, rng: np.random.Generator,
            steps: Sequence[Mapping[str, Any]] = ()) -> tuple[np.ndarray, dict]:
    """Apply `steps` in order, each {'name': str, 'params': {...}}; the used params list every step."""
    out, used = image, []
    for i, step in enumerate(steps):
        if not isinstance(step, Mapping) or "name" not in step or step["name"] == "compose":
            raise DegradationError(f"compose: step {i} must be {{'name': <degradation>, 'params': {{...}}}}, "
                                   f"not compose itself; got {step!r}")
        out, p = get(step["name"])(out, rng, **dict(step.get("params", {})))
        used.append({"name": step["name"], "params": p})
    return out, {"steps": used}
