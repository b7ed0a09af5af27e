"""Additive Gaussian noise and random-valued impulse noise."""

from __future__ import annotations

from typing import Any

import numpy as np

from degradations.registry import DegradationError, check_range, draw, register

ROUNDINGS = ("truncate", "round")


def to_uint8(values: np.ndarray, rounding: str = "round") -> np.ndarray:
    """Clip float values to [0, 255] and cast to uint8 by truncation or rounding."""
    if rounding not in ROUNDINGS:
        raise DegradationError(f"rounding={rounding!r}: use one of {ROUNDINGS}")
    clipped = np.clip(values, 0.0, 255.0)
    if rounding == "round":
        clipped = np.rint(clipped)
    return clipped.astype(np.uint8)


@register("gaussian_noise")
def gaussian_noise(image: np.ndarray, rng: np.random.Generator, sigma: Any = 25.0, gray: bool = False,
                   rounding: str = "truncate") -> tuple[np.ndarray, dict]:
    """uint8 + N(0, sigma^2) in float, clipped, cast by truncation (the reference quirk) unless rounding='round'.

    `gray=True` adds the same noise field to all three channels.
    """
    s = draw(rng, sigma, "sigma")
    check_range(s, "sigma", 0.0, 255.0)
    h, w, _ = image.shape
    shape = (h, w, 1) if gray else (h, w, 3)
    noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(s)
    out = to_uint8(image.astype(np.float32) + noise, rounding)
    return out, {"sigma": s, "gray": bool(gray), "rounding": rounding}


@register("impulse_noise")
def impulse_noise(image: np.ndarray, rng: np.random.Generator, p: Any = 0.1,
                  per_channel: bool = True) -> tuple[np.ndarray, dict]:
    """Random-valued impulse noise: a fraction `p` of pixels replaced by uniform values in 0..255.

    With `per_channel` (default) each replaced pixel gets an independent value per channel; otherwise
    one grey value for all three.
    """
    frac = draw(rng, p, "p")
    check_range(frac, "p", 0.0, 1.0)
    h, w, _ = image.shape
    hit = rng.random((h, w), dtype=np.float32) < frac
    n = int(hit.sum())
    values = rng.integers(0, 256, size=(n, 3 if per_channel else 1), dtype=np.uint8)
    out = image.copy()
    out[hit] = values
    return out, {"p": frac, "per_channel": bool(per_channel)}
