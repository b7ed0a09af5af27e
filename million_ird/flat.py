"""Flat-region detector for the patch filter (spec: ../shared/specs/degradations.md, "Flat-region detector")."""

from __future__ import annotations

import cv2
import numpy as np

CELL = 64
GRADIENT_VARIANCE = 150.0


def gray_u8(image: np.ndarray) -> np.ndarray:
    """Grayscale on 0-255 intensities from uint8/uint16, gray/RGB/RGBA input."""
    img = image
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0)
    if img.ndim == 3:
        img = img[..., :3].astype(np.float32)
        img = img @ np.array([0.299, 0.587, 0.114], np.float32)
    return img.astype(np.float32)


def flat_ratio(patch: np.ndarray, cell: int = CELL, threshold: float = GRADIENT_VARIANCE) -> float:
    """Fraction of `cell`-sized cells whose Sobel gradient-magnitude variance is below `threshold`."""
    gray = gray_u8(patch)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    mag = cv2.magnitude(gx, gy)
    rows, cols = mag.shape[0] // cell, mag.shape[1] // cell
    if rows == 0 or cols == 0:
        raise ValueError(f"patch {mag.shape} is smaller than one {cell}-px cell")
    cells = mag[: rows * cell, : cols * cell].reshape(rows, cell, cols, cell).astype(np.float64)
    variance = cells.var(axis=(1, 3))
    return float((variance < threshold).mean())
