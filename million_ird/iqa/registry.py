"""The metric registry: a decorator that refuses duplicate names and `get(name)` that lists valid names."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from million_ird import __version__


@dataclass(frozen=True)
class MetricOptions:
    """What a metric may need at construction: parameter files, device and batch size."""

    niqe_params: str | None = None
    nima_weights: str | None = None
    device: str = "cpu"
    batch_size: int = 16


class Metric(ABC):
    """A no-reference image quality metric; `score` takes an RGB (HxWx3) or gray (HxW) array."""

    name: str = "metric"
    version: str = "0"
    lower_is_better: bool = True
    accepts_gray: bool = True  # NIQE/BRISQUE work from gray; the score stage then converts once
    batched: bool = False  # True: score_batch runs many images at once on a device (NIMA); scored per batch

    def __init__(self, options: MetricOptions) -> None:
        self.options = options

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load parameters or weights (called once per worker)."""

    def unavailable(self) -> str | None:
        """Why this metric cannot run here (missing weights, say), or None when it can."""
        return None

    @property
    def params_sha256(self) -> str:
        """Hash of the parameter files this metric uses ('' when none)."""
        return ""

    @property
    def full_version(self) -> str:
        """Package version plus implementation version, as stored in scores.scorer_version."""
        return f"million_ird-{__version__}/{self.version}"

    @abstractmethod
    def score(self, img: np.ndarray) -> float:
        """Score one image."""

    def score_batch(self, imgs: list[np.ndarray]) -> list[float]:
        """Score several images (default: one by one; NIMA overrides to batch on the device)."""
        return [self.score(img) for img in imgs]


_REGISTRY: dict[str, Callable[[MetricOptions], Metric]] = {}
_FAMILIES: dict[str, Callable[[str, MetricOptions], Metric]] = {}  # prefix -> factory of `prefix:<name>`


def register(name: str) -> Callable[[type[Metric]], type[Metric]]:
    """Class decorator adding a metric under `name`; a second metric with the same name is an error."""

    def deco(cls: type[Metric]) -> type[Metric]:
        if name in _REGISTRY:
            raise ValueError(f"metric {name!r} is already registered ({_REGISTRY[name]})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def register_family(prefix: str, factory: Callable[[str, MetricOptions], Metric]) -> None:
    """Add a family of metrics named `prefix:<name>` (built by `factory(name, options)`)."""
    if prefix in _FAMILIES:
        raise ValueError(f"metric family {prefix!r} is already registered")
    _FAMILIES[prefix] = factory


def names() -> list[str]:
    """The registered metric names (families such as `pyiqa:<name>` are listed by `get` on a miss)."""
    return sorted(_REGISTRY)


def get(name: str, options: MetricOptions | None = None) -> Metric:
    """Build the metric `name`; unknown names raise KeyError listing the valid ones."""
    options = options or MetricOptions()
    prefix, _, member = name.partition(":")
    if member and prefix in _FAMILIES:
        return _FAMILIES[prefix](member, options)
    if name not in _REGISTRY:
        families = "".join(f", or {f}:<name>" for f in sorted(_FAMILIES))
        raise KeyError(f"unknown metric {name!r}; valid: {', '.join(names())}{families}")
    return _REGISTRY[name](options)
