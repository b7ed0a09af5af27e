"""Flat-region detector for the patch filter (spec: ../shared/specs/degradations.md, "Flat-region detector").

A cell is flat when the variance of its Sobel gradient magnitude is below `threshold` (0-255 intensities).
The gradient is taken on a cleaned copy of the grayscale patch so that texture living in isolated pixels
does not count as texture:

1. despeckle: each pixel is clamped into the [min, max] of the 16 pixels on the 5x5 ring around it. A bright
   or dark speck of up to 3x3 px (stars, salt-and-pepper, hot pixels) is surrounded by background on that ring
   and disappears; an edge, a line of any width or dense texture crosses the ring, so it is left alone (only
   the most extreme pixel of a random texture is shaved to its neighbourhood's range);
2. a Gaussian blur of sigma 0.8 px removes the near-Nyquist patterns (periods 2-4 px) of ordered (Bayer)
   dithering, which keep the local mean of the smooth gradient they encode; texture with a period of 3 px
   or more (std 20) keeps enough contrast to stay above the threshold (sigma 0.9 already loses 3-px stripes,
   sigma 0.7 keeps some Bayer-dithered cells textured).

Without step 1 a ramp with 0.2% white pixels or a starfield wallpaper scores ~0; without step 2 an
8-level Bayer-dithered ramp scores 0 (every cell "textured").

The price of step 2 is a contrast floor for fine texture, the same as for noise (sigma <= 5 on a ramp must
read flat): scikit-image's grass, gravel and brick photos stay textured down to std 8 (tested), but at std
6 grass and gravel read flat; synthetic 1/f texture needs std ~12 and isotropic period-3 texture std ~20,
where the plain Sobel variance (no steps 1-2) kept them from std 8 and 6.
"""

from __future__ import annotations

import cv2
import numpy as np

CELL = 64
GRADIENT_VARIANCE = 150.0
DESPECKLE_RING = 5  # side of the square ring used to clamp isolated specks (specks up to RING-2 px wide vanish)
DITHER_SIGMA = 0.8  # Gaussian sigma (px) applied before the Sobel gradient

_RING = np.ones((DESPECKLE_RING, DESPECKLE_RING), np.uint8)
_RING[1:-1, 1:-1] = 0


def gray(image: np.ndarray) -> np.ndarray:
    """Grayscale (0.299 R + 0.587 G + 0.114 B): uint8 for uint8 input (rounded), else float32 on 0-255.

    A pointwise map: converting a whole image once and slicing patches out of it gives each patch
    exactly the gray values (and so the flat ratio) of converting the patch itself.
    """
    img = image[..., :3] if image.ndim == 3 else image
    if img.dtype != np.uint8:
        img = img.astype(np.float32)
        if image.dtype == np.uint16:
            img *= np.float32(1 / 257.0)
    if img.ndim == 2:
        return img
    if img.strides[-1] < 0:  # an RGB view of a BGR array (patches.py passes patch[..., ::-1]): no copy
        return cv2.cvtColor(img[..., ::-1], cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)


def cleaned_gray(image: np.ndarray) -> np.ndarray:
    """Grayscale with isolated specks clamped away and dither checkerboards blurred (what the gradient sees)."""
    luma = gray(image)
    if np.shares_memory(luma, image) or not luma.flags.c_contiguous:  # 2-D input: never clamp the caller's pixels
        luma = luma.copy()
    hi = cv2.dilate(luma, _RING, borderType=cv2.BORDER_REFLECT)
    lo = cv2.erode(luma, _RING, borderType=cv2.BORDER_REFLECT)
    np.minimum(luma, hi, out=luma)
    np.maximum(luma, lo, out=luma)
    return cv2.GaussianBlur(luma.astype(np.float32, copy=False), (0, 0), DITHER_SIGMA)


def flat_cells(patch: np.ndarray, cell: int = CELL, threshold: float = GRADIENT_VARIANCE) -> np.ndarray:
    """rows x cols booleans: True where a `cell`-sized cell's Sobel gradient-magnitude variance is below `threshold`.

    The gradient is measured on `cleaned_gray(patch)`, so sparse dots and ordered dithering on a smooth
    gradient read as flat while edges and fine texture do not.
    """
    gray = cleaned_gray(patch)
    rows, cols = gray.shape[0] // cell, gray.shape[1] // cell
    if rows == 0 or cols == 0:
        raise ValueError(f"patch {gray.shape} is smaller than one {cell}-px cell")
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.ascontiguousarray(cv2.magnitude(gx, gy)[: rows * cell, : cols * cell])  # a copy only for ragged sizes
    n = cell * cell
    mean = _cell_sums(mag, rows, cols, cell) / n
    variance = _cell_sums(cv2.multiply(mag, mag), rows, cols, cell) / n - mean * mean
    return variance < threshold


def _cell_sums(values: np.ndarray, rows: int, cols: int, cell: int) -> np.ndarray:
    """rows x cols float64 sums of a contiguous float32 (rows*cell, cols*cell) array over its cell x cell cells.

    OpenCV sums each cell-wide run of a pixel row in float64 (one vectorised pass, 4x faster than numpy's
    multi-axis sum), then numpy adds the `cell` runs of each cell.
    """
    runs = cv2.reduce(values.reshape(-1, cell), 1, cv2.REDUCE_SUM, dtype=cv2.CV_64F)
    return runs.reshape(rows, cell, cols).sum(axis=1)


def flat_ratio(patch: np.ndarray, cell: int = CELL, threshold: float = GRADIENT_VARIANCE) -> float:
    """Fraction of the patch's cells that `flat_cells` calls flat (the patches stage drops a patch above 0.5)."""
    return float(flat_cells(patch, cell, threshold).mean())
