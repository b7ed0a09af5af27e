"""Synthetic additive rain streaks: sparse seeds stretched by a rotated line kernel, weighted by beta."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from degradations.registry import DegradationError, check_range, draw, register

# amount = fraction of pixels that seed a streak; width px; length px; angle degrees from vertical
# (positive = the top leans right, "/"); beta = blend weight. Ranges are drawn once per image.
PRESETS: dict[str, dict[str, Any]] = {
    "rain100l": {"amount": 0.001, "width": 1, "length": (20, 40), "angle": (-10.0, 10.0), "beta": (0.8, 1.0)},
    "light": {"amount": 0.002, "width": 1, "length": (15, 30), "angle": (-15.0, 15.0), "beta": (0.6, 0.8)},
    "medium": {"amount": 0.002, "width": (1, 3), "length": (25, 45), "angle": (-30.0, 30.0), "beta": (0.7, 0.9)},
    "heavy": {"amount": 0.002, "width": (3, 7), "length": (35, 55), "angle": (-60.0, 60.0), "beta": (0.8, 1.0)},
}
SEED_LEVEL = (0.25, 0.5)  # brightness of one streak before beta (our calibration: Rain100L-like Y-PSNR)


def line_kernel(length: int, width: int, angle: float) -> np.ndarray:
    """A float32 kernel holding an anti-aliased line of `length` x `width` px at `angle` degrees from vertical."""
    size = int(length) + 2 * int(width) + 3
    size += 1 - size % 2
    canvas = np.zeros((size, size), np.uint8)
    c = (size - 1) / 2.0
    rad = np.deg2rad(angle)
    dx, dy = np.sin(rad) * (length - 1) / 2.0, np.cos(rad) * (length - 1) / 2.0
    scale = 16  # cv2 fixed-point shift of 4 bits
    p1 = (round((c + dx) * scale), round((c - dy) * scale))
    p2 = (round((c - dx) * scale), round((c + dy) * scale))
    cv2.line(canvas, p1, p2, 255, thickness=int(width), lineType=cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0


def streak_layer(rng: np.random.Generator, h: int, w: int, amount: float, width: int, length: int,
                 angle: float) -> np.ndarray:
    """An HxW float32 streak layer in [0, 1]."""
    seeds = np.zeros((h, w), np.float32)
    hit = rng.random((h, w), dtype=np.float32) < amount
    seeds[hit] = rng.uniform(*SEED_LEVEL, size=int(hit.sum())).astype(np.float32)
    layer = cv2.filter2D(seeds, -1, line_kernel(length, width, angle), borderType=cv2.BORDER_CONSTANT)
    if width > 1:
        layer = cv2.GaussianBlur(layer, (0, 0), sigmaX=width / 4.0)
    return np.clip(layer, 0.0, 1.0)


def _resolve(preset: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    name = preset or "rain100l"
    if name not in PRESETS:
        raise DegradationError(f"rain: unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    spec = dict(PRESETS[name])
    spec.update({k: v for k, v in overrides.items() if v is not None})
    return spec


@register("rain")
def rain(image: np.ndarray, rng: np.random.Generator, preset: str | None = None, amount: Any = None,
         width: Any = None, length: Any = None, angle: Any = None, beta: Any = None) -> tuple[np.ndarray, dict]:
    """Add rain streaks; a preset fills the parameters not given (default preset 'rain100l')."""
    spec = _resolve(preset, {"amount": amount, "width": width, "length": length, "angle": angle, "beta": beta})
    a = draw(rng, spec["amount"], "amount")
    wd = int(draw(rng, spec["width"], "width", integer=True))
    ln = int(draw(rng, spec["length"], "length", integer=True))
    ang = draw(rng, spec["angle"], "angle")
    b = draw(rng, spec["beta"], "beta")
    check_range(a, "amount", 0.0, 0.1)
    check_range(wd, "width", 1, 31)
    check_range(ln, "length", 1, 255)
    check_range(ang, "angle", -90.0, 90.0)
    check_range(b, "beta", 0.0, 2.0)
    h, w, _ = image.shape
    layer = streak_layer(rng, h, w, a, wd, ln, ang)
    out = np.clip(image.astype(np.float32) + (255.0 * b) * layer[..., None], 0, 255)
    used = {"preset": preset or "rain100l", "amount": a, "width": wd, "length": ln, "angle": ang, "beta": b}
    return np.rint(out).astype(np.uint8), used
