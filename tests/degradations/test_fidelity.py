"""Fidelity against the measured statistics in shared/specs/degradations.md."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import degradations
from degradations.haze import estimate_transmission, haze_float, transmission
from degradations.rng import sample_rng


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB for 0..255 data."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def y_channel(img: np.ndarray) -> np.ndarray:
    """BT.601 luma as MATLAB's rgb2ycbcr computes it (16..235)."""
    f = img.astype(np.float64) / 255.0
    return 16 + 65.481 * f[..., 0] + 128.553 * f[..., 1] + 24.966 * f[..., 2]


@pytest.mark.parametrize(("sigma", "measured"), [(15, 25.1), (25, 20.9), (50, 15.4)])
def test_noisy_input_psnr_matches_the_measured_band(natural_images: dict, sigma: int, measured: float) -> None:
    values = [psnr(degradations.apply("gaussian_noise", img, sample_rng(0, name, sigma), sigma=sigma)[0], img)
              for name, img in natural_images.items()]
    assert abs(np.mean(values) - measured) <= 0.6, values


def test_noise_without_clipping_follows_sigma_and_truncation_shifts_the_mean() -> None:
    grey = np.full((256, 256, 3), 128, np.uint8)
    rounded, _ = degradations.apply("gaussian_noise", grey, sample_rng(0, "g"), sigma=10, rounding="round")
    truncated, _ = degradations.apply("gaussian_noise", grey, sample_rng(0, "g"), sigma=10)
    assert abs(psnr(rounded, grey) - 20 * np.log10(255 / 10)) < 0.1
    assert abs((rounded.astype(float) - grey).mean()) < 0.05
    assert abs((truncated.astype(float) - grey).mean() + 0.5) < 0.05


def test_gray_noise_is_shared_by_the_channels() -> None:
    grey = np.full((64, 64, 3), 128, np.uint8)
    out, used = degradations.apply("gaussian_noise", grey, sample_rng(0, "g"), sigma=20, gray=True)
    assert used["gray"] and np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_impulse_noise_replaces_the_requested_fraction(astronaut: np.ndarray) -> None:
    out, _ = degradations.apply("impulse_noise", astronaut, sample_rng(0, "i"), p=0.2)
    changed = (out != astronaut).any(axis=-1).mean()
    assert abs(changed - 0.2) < 0.01


@pytest.mark.parametrize("quality", [10, 50, 95])
def test_jpeg_matches_opencv_at_the_same_quality(astronaut: np.ndarray, quality: int) -> None:
    out, used = degradations.apply("jpeg", astronaut, sample_rng(0, "j"), quality=quality)
    ok, buf = cv2.imencode(".jpg", astronaut[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    ref = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    assert ok and used["quality"] == quality and np.array_equal(out, ref)
    assert degradations.jpeg.encode_jpeg(astronaut, quality) == buf.tobytes()


@pytest.mark.parametrize("shape", [(256, 256), (321, 481)])
@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.7])
def test_mask_covers_the_requested_fraction(shape: tuple[int, int], ratio: float) -> None:
    img = np.zeros((*shape, 3), np.uint8)
    out, used = degradations.apply("mask", img, sample_rng(0, str(shape), ratio), ratio=ratio, block=16, fill=1.0)
    covered = (out == 255).all(axis=-1).mean()
    assert abs(covered - ratio) <= 0.02 and abs(used["covered"] - covered) < 1e-9


def streak_angle(clean: np.ndarray, rainy: np.ndarray) -> float:
    """Dominant streak direction, degrees from vertical (positive = top leans right), by the structure tensor."""
    diff = (rainy.astype(np.float64) - clean).mean(axis=-1)
    gx = cv2.Sobel(diff, cv2.CV_64F, 1, 0)
    gy = cv2.Sobel(diff, cv2.CV_64F, 0, 1)
    jxx, jyy, jxy = (gx * gx).sum(), (gy * gy).sum(), (gx * gy).sum()
    grad_dir = 0.5 * np.arctan2(2 * jxy, jxx - jyy)  # dominant gradient direction, radians from +x
    vx, vy = -np.sin(grad_dir), np.cos(grad_dir)  # streaks run perpendicular to it
    ang = np.degrees(np.arctan2(vx, -vy))
    return float((ang + 90) % 180 - 90)


# the rain100l preset's Y-PSNR and brightened fraction against real Rain100L: tests/degradations/test_rain_stats.py


def test_rain_streak_angles_stay_within_the_preset(astronaut: np.ndarray) -> None:
    dark = (astronaut // 3).astype(np.uint8)  # no clipping, so the difference is the streak layer
    for s in range(6):
        out, used = degradations.apply("rain", dark, sample_rng(s, "angle", "rain"))
        assert 4 <= abs(used["angle"]) <= 9  # rain100l: a 4-9 degree tilt, either way
        assert abs(streak_angle(dark, out) - used["angle"]) < 2.5, used
    out, _ = degradations.apply("rain", dark, sample_rng(0, "tilt"), angle=30.0, length=30)
    assert abs(streak_angle(dark, out) - 30.0) < 2.5


def test_haze_float_inverts_to_the_transmission_exactly(astronaut: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    clean = astronaut[:32, 200:240] / 255.0
    depth = rng.uniform(2.3, 3.9, (32, 40))
    t = transmission(depth, 0.12)
    hazy = haze_float(clean, 0.9, t)
    assert np.abs(estimate_transmission(clean, hazy, 0.9) - t).max() < 1e-9


@pytest.mark.parametrize("depth_mode", ["gradient", "constant"])
def test_haze_uint8_inverts_to_the_transmission_within_1e3(depth_mode: str) -> None:
    # a textured clean image, so the uint8 rounding errors average out along a row
    astronaut = np.random.default_rng(1).integers(0, 256, (256, 384, 3), dtype=np.uint8)
    a, beta = 0.95, 0.16
    out, used = degradations.apply("haze", astronaut, sample_rng(0, "h"), A=a, beta=beta,
                                   depth_mode=depth_mode, depth_noise=0.0)
    rows = estimate_transmission(astronaut / 255.0, out / 255.0, a, axis=1)  # one depth per row
    hi, lo = used["depth_max"], used["depth_min"]
    expected = np.exp(-beta * (np.linspace(hi, lo, astronaut.shape[0]) if depth_mode == "gradient" else hi))
    assert used["A"] == a and used["beta"] == beta and 2.3 <= lo <= hi <= 3.9
    assert np.abs(rows - expected).max() < 1e-3


def test_haze_accepts_a_depth_map_and_draws_from_the_ots_grid() -> None:
    from degradations.haze import OTS_A, OTS_BETA

    astronaut = np.random.default_rng(2).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    depth = np.tile(np.linspace(1.0, 5.0, 512), (512, 1))
    out, used = degradations.apply("haze", astronaut, sample_rng(0, "d"), depth=depth)
    assert used["A"] in OTS_A and used["beta"] in OTS_BETA and used["depth_mode"] == "given-map"
    cols = estimate_transmission(astronaut / 255.0, out / 255.0, used["A"], axis=0)
    assert np.abs(cols - np.exp(-used["beta"] * depth[0])).max() < 1e-3
    with pytest.raises(degradations.DegradationError, match="depth map shape"):
        degradations.apply("haze", astronaut, sample_rng(0, "d"), depth=depth[:10])
