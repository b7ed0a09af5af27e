"""Helpers for the IQA tests: calibration images and small natural images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

DATA = Path(__file__).parent / "data"


def calib(name: str) -> np.ndarray:
    """A TID2013 calibration image as RGB uint8."""
    img = cv2.imread(str(DATA / f"{name}.bmp"), cv2.IMREAD_COLOR)
    assert img is not None, name
    return np.ascontiguousarray(img[:, :, ::-1])


def natural(name: str = "astronaut") -> np.ndarray:
    """A natural photograph shipped with scikit-image (RGB uint8)."""
    import skimage.data

    return np.ascontiguousarray(getattr(skimage.data, name)())


def add_noise(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Additive Gaussian noise, clipped to uint8."""
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).round().astype(np.uint8)
