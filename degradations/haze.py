"""Atmospheric scattering haze: I = J*t + A*(1 - t), t = exp(-beta*d)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from degradations.noise import to_uint8
from degradations.registry import DegradationError, check_range, draw, register

OTS_A = (0.8, 0.85, 0.9, 0.95, 1.0)
OTS_BETA = (0.04, 0.06, 0.08, 0.1, 0.12, 0.16, 0.2)
DEPTH_RANGE = (2.3, 3.9)  # effective relative depth measured by inverting real OTS pairs
DEPTH_MODES = ("gradient", "constant")


def transmission(depth: np.ndarray, beta: float) -> np.ndarray:
    """t = exp(-beta * depth)."""
    return np.exp(-float(beta) * np.asarray(depth, np.float64))


def haze_float(clean: np.ndarray, A: float, t: np.ndarray) -> np.ndarray:
    """The hazy image in [0, 1] floats for a clean image in [0, 1] and a transmission map (HxW)."""
    t3 = np.asarray(t, np.float64)[..., None]
    return np.asarray(clean, np.float64) * t3 + float(A) * (1.0 - t3)


def estimate_transmission(clean: np.ndarray, hazy: np.ndarray, A: float, axis: int | None = None) -> np.ndarray:
    """Least-squares t from I - A = t (J - A) over channels (and over `axis` when given); inputs in [0, 1]."""
    a = np.asarray(clean, np.float64) - A
    b = np.asarray(hazy, np.float64) - A
    axes = (-1,) if axis is None else (axis, -1)
    return (a * b).sum(axis=axes) / np.maximum((a * a).sum(axis=axes), 1e-12)


def synth_depth(rng: np.random.Generator, h: int, w: int, depth_range: tuple[float, float] = DEPTH_RANGE,
                mode: str = "gradient", noise: float = 0.1) -> np.ndarray:
    """A smooth relative depth map: far at the top to near at the bottom (or constant), with mild smooth noise."""
    lo, hi = float(depth_range[0]), float(depth_range[1])
    if not 0 <= lo <= hi:
        raise DegradationError(f"depth_range={depth_range!r}: give (low, high) with 0 <= low <= high")
    if mode == "constant":
        return np.full((h, w), rng.uniform(lo, hi))
    if mode != "gradient":
        raise DegradationError(f"depth_mode={mode!r}: use one of {DEPTH_MODES} or pass a depth map")
    depth = np.repeat(np.linspace(hi, lo, h)[:, None], w, axis=1)
    if noise > 0:
        coarse = rng.normal(0.0, noise, size=(4, 4)).astype(np.float32)
        depth = depth + cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    return np.clip(depth, lo, hi)


def _pick(rng: np.random.Generator, value: Any, grid: tuple[float, ...], param: str) -> float:
    if value is None:
        return float(grid[int(rng.integers(len(grid)))])
    return draw(rng, value, param)


@register("haze")
def haze(image: np.ndarray, rng: np.random.Generator, A: Any = None, beta: Any = None,
         depth: np.ndarray | float | None = None, depth_range: tuple[float, float] = DEPTH_RANGE,
         depth_mode: str = "gradient", depth_noise: float = 0.1, rounding: str = "round") -> tuple[np.ndarray, dict]:
    """Haze a clean image; A and beta default to a draw from the RESIDE OTS grid.

    `depth` may be an HxW relative depth map or a constant; without it a smooth map in `depth_range`
    is synthesised (our default: the literature's depth came from a monocular network).
    """
    a = _pick(rng, A, OTS_A, "A")
    b = _pick(rng, beta, OTS_BETA, "beta")
    check_range(a, "A", 0.0, 1.0)
    check_range(b, "beta", 0.0, 10.0)
    h, w, _ = image.shape
    if depth is None:
        d = synth_depth(rng, h, w, depth_range, depth_mode, depth_noise)
        mode = depth_mode
    elif np.isscalar(depth):
        d, mode = np.full((h, w), float(depth)), "given-constant"
    else:
        d, mode = np.asarray(depth, np.float64), "given-map"
        if d.shape != (h, w):
            raise DegradationError(f"haze: depth map shape {d.shape} must match the image's (H, W) = {(h, w)}")
    t = transmission(d, b)
    out = to_uint8(haze_float(image / 255.0, a, t) * 255.0, rounding)
    used = {"A": a, "beta": b, "depth_mode": mode, "depth_min": float(d.min()), "depth_max": float(d.max()),
            "t_min": float(t.min()), "t_max": float(t.max())}
    return out, used
