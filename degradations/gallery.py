"""A gallery grid: each degradation at three strengths on one image (used by the notebook and the demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from degradations.registry import get
from degradations.rng import sample_rng

STRENGTHS: dict[str, list[dict[str, Any]]] = {
    "gaussian_noise": [{"sigma": 15}, {"sigma": 25}, {"sigma": 50}],
    "impulse_noise": [{"p": 0.05}, {"p": 0.15}, {"p": 0.3}],
    "jpeg": [{"quality": 70}, {"quality": 40}, {"quality": 10}],
    "mask": [{"ratio": 0.1}, {"ratio": 0.3}, {"ratio": 0.5}],
    "rain": [{"preset": "rain100l"}, {"preset": "medium"}, {"preset": "heavy"}],  # rain100l is the lightest
    "haze": [{"A": 0.9, "beta": 0.06}, {"A": 0.9, "beta": 0.12}, {"A": 1.0, "beta": 0.2}],
}


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 18), (0, 0, 0), thickness=-1)
    cv2.putText(out, text, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def gallery_tiles(image: np.ndarray, seed: int = 0,
                  strengths: dict[str, list[dict[str, Any]]] | None = None) -> list[list[np.ndarray]]:
    """Rows of labelled tiles: the clean image, then one tile per strength, for every degradation."""
    rows = []
    for name, settings in (strengths or STRENGTHS).items():
        row = [_label(image, "clean")]
        for i, params in enumerate(settings):
            out, _ = get(name)(image, sample_rng(seed, "gallery", f"{name}/{i}"), **params)
            row.append(_label(out, f"{name} " + ",".join(f"{k}={v}" for k, v in params.items())))
        rows.append(row)
    return rows


def make_gallery(image: np.ndarray, seed: int = 0, tile: int = 256) -> np.ndarray:
    """One uint8 RGB grid image (rows = degradations, columns = clean + three strengths)."""
    h, w = image.shape[:2]
    scale = tile / max(h, w)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    rows = gallery_tiles(small, seed)
    return np.vstack([np.hstack(r) for r in rows])


def save_gallery(image: np.ndarray, path: str | Path, seed: int = 0, tile: int = 256) -> Path:
    """Write the gallery grid of `image` as a PNG and return its path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(make_gallery(image, seed, tile), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write the gallery PNG to {out}; check the folder is writable")
    return out
