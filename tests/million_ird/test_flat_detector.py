"""Flat-region detector: sparse dots and ordered dither on a smooth gradient are flat, fine texture is not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from million_ird import flat
from million_ird.flat import flat_ratio

N = 512
PHOTOS = Path(__file__).resolve().parents[2] / "manifests" / "demo" / "photos"


def _ramp() -> np.ndarray:
    return np.tile(np.linspace(0, 255, N, dtype=np.float32), (N, 1))


def _starfield(seed: int = 0, density: float = 0.003) -> np.ndarray:
    """Smooth colour gradient with sparse 1-px and 2x2-px bright stars (a starfield wallpaper)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:N, 0:N].astype(np.float32) / N
    img = np.stack([20 + 60 * x, 10 + 40 * y, 60 + 90 * (1 - x) * y], -1)
    k = int(density * N * N)
    ys, xs = rng.integers(0, N, k), rng.integers(0, N, k)
    img[ys, xs] = rng.uniform(180, 255, (k, 1))
    big = rng.random(k) < 0.3
    for dy in (0, 1):
        for dx in (0, 1):
            img[np.minimum(ys[big] + dy, N - 1), np.minimum(xs[big] + dx, N - 1)] = 230
    return img.clip(0, 255).astype(np.uint8)


def _white_dots(seed: int = 0, frac: float = 0.002) -> np.ndarray:
    img = _ramp().astype(np.uint8)
    img[np.random.default_rng(seed).random(img.shape) < frac] = 255
    return img


def _bayer(k: int) -> np.ndarray:
    m = np.array([[0]])
    while m.shape[0] < k:
        m = np.block([[4 * m, 4 * m + 2], [4 * m + 3, 4 * m + 1]])
    return (m + 0.5) / m.size


def _dither(k: int, levels: int = 8, radial: bool = False) -> np.ndarray:
    """A ramp quantised to `levels` grey levels with a k x k ordered (Bayer) dither."""
    yy, xx = np.mgrid[0:N, 0:N].astype(np.float32)
    r = np.hypot(yy, xx) / (N * np.sqrt(2)) * 255 if radial else _ramp()
    q = np.floor(r / 255 * (levels - 1) + np.tile(_bayer(k), (N // k, N // k)))
    return (q.clip(0, levels - 1) * 255 / (levels - 1)).astype(np.uint8)


def _noisy_ramp(sigma: float, seed: int = 0) -> np.ndarray:
    return (_ramp() + np.random.default_rng(seed).normal(0, sigma, (N, N))).clip(0, 255).astype(np.uint8)


def _norm(f: np.ndarray, std: float = 20.0) -> np.ndarray:
    return (128 + std * (f - f.mean()) / f.std()).clip(0, 255).astype(np.uint8)


def _filtered_noise(seed: int, gain) -> np.ndarray:  # noqa: ANN001 - gain(fy, fx) -> spectrum weights
    w = np.random.default_rng(seed).normal(size=(N, N))
    fy, fx = np.meshgrid(np.fft.fftfreq(N), np.fft.fftfreq(N), indexing="ij")
    return np.real(np.fft.ifft2(np.fft.fft2(w) * gain(fy, fx)))


def _bandpass(period: float, seed: int = 0) -> np.ndarray:
    f0 = 1 / period
    return _norm(_filtered_noise(seed, lambda fy, fx: np.exp(-((np.hypot(fy, fx) - f0) ** 2) / (2 * (f0 / 4) ** 2))))


def _grass(period: float, seed: int = 0) -> np.ndarray:
    """Blade-like: narrow across x, long along y."""
    f0 = 1 / period
    return _norm(_filtered_noise(seed, lambda fy, fx: np.exp(-((np.abs(fx) - f0) ** 2) / (2 * (f0 / 3) ** 2))
                                 * np.exp(-(fy**2) / (2 * (f0 / 12) ** 2))))


def _fabric(period: float, seed: int = 0) -> np.ndarray:
    """Basket weave: alternating bands of vertical and horizontal threads, plus a little noise."""
    y, x = np.mgrid[0:N, 0:N].astype(np.float32)
    band = np.sin(2 * np.pi * y / (2 * period)) > 0
    weave = np.where(band, np.sin(2 * np.pi * x / period), np.sin(2 * np.pi * y / period))
    return _norm(weave + 0.2 * np.random.default_rng(seed).normal(size=(N, N)))


def _stripes(period: float, angle: float = 30.0) -> np.ndarray:
    y, x = np.mgrid[0:N, 0:N].astype(np.float32)
    t = np.deg2rad(angle)
    return _norm(np.sin(2 * np.pi * (x * np.cos(t) + y * np.sin(t)) / period))


def _foliage(beta: float, seed: int = 0) -> np.ndarray:
    """Random-phase 1/f^beta texture."""
    return _norm(_filtered_noise(seed, lambda fy, fx: 1 / np.maximum(np.hypot(fy, fx), 1 / N) ** beta), 25.0)


FLAT = {
    "starfield gradient": _starfield,
    "0.2% white dots on a ramp": _white_dots,
    "8-level 8x8 Bayer dither of a ramp": lambda: _dither(8),
    "8-level 4x4 Bayer dither of a ramp": lambda: _dither(4),
    "8-level 2x2 Bayer dither of a ramp": lambda: _dither(2),
    "8-level 8x8 Bayer dither of a radial ramp": lambda: _dither(8, radial=True),
    **{f"noise sigma {s} on a ramp": (lambda s=s: _noisy_ramp(s)) for s in (1, 2, 3, 4, 5)},
}

TEXTURED = {
    **{f"band-passed noise, period {p}": (lambda p=p: _bandpass(p)) for p in (3, 4, 6, 10)},
    **{f"grass-like, period {p}": (lambda p=p: _grass(p)) for p in (3, 4, 8)},
    **{f"fabric-like weave, period {p}": (lambda p=p: _fabric(p)) for p in (4, 6, 10)},
    **{f"oriented stripes, period {p}": (lambda p=p: _stripes(p)) for p in (3, 4, 8, 16)},
    **{f"foliage-like 1/f^{b}": (lambda b=b: _foliage(b)) for b in (0.8, 1.0)},
}

# The pre-fix detector (variance of the raw Sobel magnitude) fails every non-noise FLAT case (ratios 0.0-0.22).

@pytest.mark.parametrize("name", list(FLAT))
def test_sparse_points_dither_and_faint_noise_on_a_gradient_are_flat(name: str) -> None:
    img = FLAT[name]()
    assert flat_ratio(img) > 0.5, name
    if img.ndim == 3:  # patches.py passes an RGB view of a BGR array
        assert flat_ratio(np.ascontiguousarray(img[..., ::-1])[..., ::-1]) == flat_ratio(img)


@pytest.mark.parametrize("name", list(TEXTURED))
def test_fine_texture_is_not_flat(name: str) -> None:
    assert flat_ratio(TEXTURED[name]()) <= 0.5, name


@pytest.mark.parametrize("photo", ["grass", "gravel", "brick"])
@pytest.mark.parametrize("std", [None, 8.0])
def test_photographed_texture_is_not_flat_down_to_std_8(photo: str, std: float | None) -> None:
    """scikit-image's texture photos, as shot (std 26-39) and with their contrast cut to std 8 (README: the floor)."""
    import skimage.data

    img = getattr(skimage.data, photo)()[:N, :N].astype(np.float64)
    assert flat_ratio(img.astype(np.uint8) if std is None else _norm(img, std)) <= 0.5


@pytest.mark.parametrize("photo", ["astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg",
                                   "rocket.jpg"])
def test_demo_photo_crops_are_not_flat(photo: str) -> None:
    rgb = np.asarray(Image.open(PHOTOS / photo).convert("RGB"))
    h, w = min(N, rgb.shape[0] // 64 * 64), min(N, rgb.shape[1] // 64 * 64)  # 512^2, or the largest 64-multiple
    y0, x0 = (rgb.shape[0] - h) // 2, (rgb.shape[1] - w) // 2
    crop = rgb[y0:y0 + h, x0:x0 + w]
    assert flat_ratio(crop) <= 0.5
    assert flat_ratio(np.ascontiguousarray(crop[..., ::-1])[..., ::-1]) == flat_ratio(crop)  # BGR-view path


def test_input_is_not_modified_and_dtypes_agree() -> None:
    dots = _white_dots()
    before = dots.copy()
    flat_ratio(dots)
    assert np.array_equal(dots, before)
    assert flat_ratio(dots.astype(np.uint16) * 257) == flat_ratio(dots)
    assert flat_ratio(np.dstack([dots] * 4)) == flat_ratio(dots)  # RGBA: alpha ignored


@pytest.mark.parametrize("dtype,channels", [(np.uint8, 3), (np.uint16, 3), (np.uint8, 4), (np.uint8, 0)])
def test_gray_once_per_image_gives_each_patch_its_own_ratio(dtype: type, channels: int) -> None:
    """The patches stage converts an image to gray once and slices it; each patch must get the ratio it gets alone."""
    rng = np.random.default_rng(7)
    top = np.iinfo(dtype).max
    yy, xx = np.mgrid[0:384, 0:640]
    smooth = (xx / 640 * top * 0.6).astype(np.float64)  # a ramp (flat) on the left, texture on the right
    texture = rng.normal(0, top * 0.15, (384, 640)) * (xx > 320)
    base = np.clip(smooth + texture, 0, top)
    img = (base if channels == 0 else np.repeat(base[..., None], channels, axis=2) * rng.uniform(0.8, 1.0, channels))
    img = img.astype(dtype)
    luma = flat.gray(img)
    ratios = []
    for y in (0, 128):
        for x in (0, 128, 384):
            alone = flat.flat_ratio(img[y:y + 256, x:x + 256])
            assert flat.flat_ratio(luma[y:y + 256, x:x + 256]) == alone
            # the very values the gradient is measured on, not only the (robust) verdict
            assert np.array_equal(flat.cleaned_gray(luma[y:y + 256, x:x + 256]), flat.cleaned_gray(img[y:y + 256, x:x + 256]))
            ratios.append(alone)
    assert min(ratios) < 0.5 < max(ratios)  # both flat and textured patches were compared


@pytest.mark.parametrize("shape", [(512, 512), (200, 330)])
def test_each_cell_verdict_is_its_gradient_variance_against_the_threshold(shape: tuple[int, int]) -> None:
    """Every cell's verdict equals np.var of its own Sobel magnitudes vs the threshold (ragged sizes: remainders ignored)."""
    import cv2

    rng = np.random.default_rng(3)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    amplitude = (xx // 64 + yy // 64) % 4 * 6.0  # cells from flat to strongly textured, differing per cell
    img = np.clip(90 + xx * 0.2 + rng.normal(0, 1, shape) * amplitude, 0, 255).astype(np.uint8)
    g = flat.cleaned_gray(img)
    mag = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)).astype(np.float64)
    rows, cols = h // 64, w // 64
    variances = np.array([[mag[r * 64:(r + 1) * 64, c * 64:(c + 1) * 64].var() for c in range(cols)] for r in range(rows)])
    threshold = float(np.median(variances))  # half the cells on each side, so a swapped or misplaced cell shows
    cells = flat.flat_cells(img, threshold=threshold)
    assert cells.shape == (rows, cols)
    assert np.array_equal(cells, variances < threshold)
    assert 0 < cells.sum() < cells.size
