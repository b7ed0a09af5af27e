"""Block masking: a seeded choice of square blocks filled with a constant."""

from __future__ import annotations

from typing import Any

import numpy as np

from degradations.registry import DegradationError, check_range, draw, register


def block_grid(h: int, w: int, block: int) -> tuple[int, int]:
    """Rows and columns of `block`-sized cells covering an h x w image (edge cells may be partial)."""
    if block < 1:
        raise DegradationError(f"block={block}: use a positive block size in pixels")
    return -(-h // block), -(-w // block)


def choose_blocks(rng: np.random.Generator, h: int, w: int, block: int, ratio: float) -> np.ndarray:
    """A boolean h x w mask covering about `ratio` of the area with whole blocks chosen by a permutation."""
    rows, cols = block_grid(h, w, block)
    heights = np.minimum(block, h - np.arange(rows) * block)
    widths = np.minimum(block, w - np.arange(cols) * block)
    areas = (heights[:, None] * widths[None, :]).ravel()
    order = rng.permutation(rows * cols)
    covered = np.cumsum(areas[order])
    # fewest blocks whose area is closest to the requested fraction
    k = int(np.argmin(np.abs(np.concatenate([[0], covered]) - ratio * h * w)))
    chosen = np.zeros(rows * cols, bool)
    chosen[order[:k]] = True
    cells = chosen.reshape(rows, cols)
    return np.repeat(np.repeat(cells, block, axis=0), block, axis=1)[:h, :w]


@register("mask")
def mask(image: np.ndarray, rng: np.random.Generator, ratio: Any = 0.3, block: int = 16,
         fill: float | None = 1.0) -> tuple[np.ndarray, dict]:
    """Fill about `ratio` of the image with `block` x `block` cells of `fill` (0..1; None = random colour)."""
    r = draw(rng, ratio, "ratio")
    check_range(r, "ratio", 0.0, 1.0)
    h, w, _ = image.shape
    where = choose_blocks(rng, h, w, int(block), r)
    out = image.copy()
    if fill is None:
        colour = rng.integers(0, 256, size=3, dtype=np.uint8)
        used_fill: Any = colour.tolist()
    else:
        check_range(float(fill), "fill", 0.0, 1.0)
        colour = np.full(3, round(float(fill) * 255), np.uint8)
        used_fill = float(fill)
    out[where] = colour
    return out, {"ratio": r, "block": int(block), "fill": used_fill, "covered": float(where.mean())}
