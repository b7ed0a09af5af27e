"""Natural-scene-statistics primitives shared by NIQE and BRISQUE, matching LIVE's MATLAB releases.

MATLAB behaviours reproduced here: `rgb2gray` of a uint8 image rounded back to uint8, the 7x7
Gaussian window (sigma 7/6), `imresize(img, 0.5)` (bicubic a=-0.5 with antialiasing, symmetric
borders), and the GGD/AGGD shape estimate as the first argmin over the grid 0.2:0.001:10.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy.special import gamma as gamma_fn

# MATLAB rgb2gray coefficients (first row of inv([1 .956 .621; 1 -.272 -.647; 1 -1.106 1.703])).
RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)
_FIX_BITS = 22
_FIX = tuple(int(round(c * 2**_FIX_BITS)) for c in RGB2GRAY)
GRID = 0.2 + 0.001 * np.arange(9801)  # MATLAB 0.2:0.001:10
_G1, _G2, _G3 = gamma_fn(1.0 / GRID), gamma_fn(2.0 / GRID), gamma_fn(3.0 / GRID)
R_GGD = _G1 * _G3 / _G2**2  # decreasing in the shape
R_AGGD = _G2**2 / (_G1 * _G3)  # increasing in the shape


def _gaussian_1d(size: int = 7, sigma: float = 7.0 / 6.0) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


GAUSS7 = _gaussian_1d()


def _half_cubic_weights() -> np.ndarray:
    """The 8 taps MATLAB imresize uses at scale 0.5 (bicubic, antialiased), normalised."""
    d = np.array([3.5, 2.5, 1.5, 0.5, -0.5, -1.5, -2.5, -3.5]) * 0.5
    a = np.abs(d)
    w = np.where(a <= 1, 1.5 * a**3 - 2.5 * a**2 + 1, np.where(a <= 2, -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2, 0.0))
    w = 0.5 * w
    return w / w.sum()


HALF_TAPS = _half_cubic_weights()


def to_gray(img: np.ndarray) -> np.ndarray:
    """Gray float image in [0, 255]: MATLAB rgb2gray (rounded to uint8) for RGB; 2-D input kept (float) or cast."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.dtype == np.uint16:
        img = np.floor(img.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    if img.ndim == 2:
        return img if img.dtype in (np.float32, np.float64) else img.astype(np.float64)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"expected an HxW or HxWx3 RGB image, got shape {img.shape}")
    rgb = img[:, :, :3]
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.floor(rgb.astype(np.float64) + 0.5), 0, 255).astype(np.uint8)
    # Fixed point with 22 fractional bits: verified equal to round(double) on all 2^24 RGB triples.
    r, g, b = (rgb[:, :, i].astype(np.int32) for i in range(3))
    y = r * _FIX[0]
    y += g * _FIX[1]
    y += b * _FIX[2]
    y += 1 << (_FIX_BITS - 1)
    y >>= _FIX_BITS
    return y.astype(np.float64)


def imresize_half(img: np.ndarray) -> np.ndarray:
    """MATLAB `imresize(img, 0.5)` for a 2-D float image: antialiased bicubic, symmetric borders."""
    k = HALF_TAPS.astype(img.dtype)
    full = cv2.sepFilter2D(img, -1, k, k, anchor=(3, 3), borderType=cv2.BORDER_REFLECT)
    return np.ascontiguousarray(full[::2, ::2])


def mscn(img: np.ndarray, border: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean-subtracted contrast-normalised coefficients and the local sigma (7x7 Gaussian, given border)."""
    k = GAUSS7.astype(img.dtype)
    mu = cv2.sepFilter2D(img, -1, k, k, borderType=border)
    var = cv2.sepFilter2D(img * img, -1, k, k, borderType=border)
    var -= mu * mu
    sigma = np.sqrt(np.abs(var, out=var), out=var)
    return (img - mu) / (sigma + 1.0), sigma


def aggd_stats(v: np.ndarray) -> np.ndarray:
    """Per-row sums for the AGGD fit of a 2-D array: columns n_left, sum_left^2, n_right, sum_right^2, sum|v|."""
    vn = np.minimum(v, 0)
    vp = np.maximum(v, 0)
    out = np.empty((v.shape[0], 5), dtype=np.float64)
    out[:, 0] = np.count_nonzero(vn, axis=1)
    out[:, 1] = np.einsum("ij,ij->i", vn, vn)
    out[:, 2] = np.count_nonzero(vp, axis=1)
    out[:, 3] = np.einsum("ij,ij->i", vp, vp)
    out[:, 4] = vp.sum(axis=1, dtype=np.float64) - vn.sum(axis=1, dtype=np.float64)
    return out


def _first_argmin_sorted(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index of the first minimum of (table - x)^2 for an increasing table; NaN x gives 0 like MATLAB min."""
    x = np.asarray(x, dtype=np.float64)
    hi = np.clip(np.searchsorted(table, x), 1, table.size - 1)
    lo = hi - 1
    d_lo = (table[lo] - x) ** 2
    d_hi = (table[hi] - x) ** 2
    idx = np.where(d_hi < d_lo, hi, lo)
    return np.where(np.isnan(x), 0, idx)


def aggd_fit(stats: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AGGD shape alpha, left std and right std from `aggd_stats` rows over `n` samples each."""
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.sqrt(stats[:, 1] / stats[:, 0])
        right = np.sqrt(stats[:, 3] / stats[:, 2])
        ghat = left / right
        mean_sq = (stats[:, 1] + stats[:, 3]) / n
        rhat = (stats[:, 4] / n) ** 2 / mean_sq
        rnorm = rhat * (ghat**3 + 1) * (ghat + 1) / (ghat**2 + 1) ** 2
    alpha = GRID[_first_argmin_sorted(R_AGGD, rnorm)]
    return alpha, left, right


def ggd_fit(v: np.ndarray) -> tuple[float, float]:
    """GGD shape and std of a flat array (BRISQUE's estimateggdparam)."""
    flat = v.ravel()
    sigma_sq = float(np.dot(flat, flat)) / flat.size
    e = float(np.abs(flat).sum(dtype=np.float64)) / flat.size
    rho = sigma_sq / (e * e) if e > 0 else math.nan
    if math.isnan(rho):
        return float(GRID[0]), math.sqrt(sigma_sq)
    return float(GRID[int(np.argmin(np.abs(rho - R_GGD)))]), math.sqrt(sigma_sq)
