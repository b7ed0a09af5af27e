"""Registry contract: every degradation keeps shape/dtype, is deterministic per generator, and errors are clear."""

from __future__ import annotations

import numpy as np
import pytest

import degradations
from degradations.registry import DegradationError, register

EXPECTED = {"gaussian_noise", "impulse_noise", "jpeg", "mask", "rain", "haze", "compose"}
EXAMPLE = {"compose": {"steps": [{"name": "haze", "params": {"beta": 0.1}},
                                 {"name": "gaussian_noise", "params": {"sigma": 10}}]}}


def test_names_cover_the_issue() -> None:
    assert set(degradations.names()) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_degradation_is_deterministic_and_changes_the_image(name: str, astronaut: np.ndarray) -> None:
    img = astronaut[:96, :128]
    params = EXAMPLE.get(name, {})
    a, used_a = degradations.get(name)(img, degradations.sample_rng(1, "img", name), **params)
    b, used_b = degradations.get(name)(img, degradations.sample_rng(1, "img", name), **params)
    c, _ = degradations.get(name)(img, degradations.sample_rng(1, "other", name), **params)
    assert a.dtype == np.uint8 and a.shape == img.shape
    assert np.array_equal(a, b) and used_a == used_b
    assert not np.array_equal(a, img)
    if name != "jpeg":  # jpeg draws nothing at a fixed quality
        assert not np.array_equal(a, c)


def test_used_params_are_concrete_draws_within_the_preset(astronaut: np.ndarray) -> None:
    from degradations.rain import PRESETS

    img = astronaut[:64, :64]
    for seed in range(5):
        _, used = degradations.apply("rain", img, degradations.sample_rng(seed, "x"), preset="medium")
        spec = PRESETS["medium"]
        assert used["preset"] == "medium" and isinstance(used["length"], int)
        assert spec["length"][0] <= used["length"] <= spec["length"][1]
        assert spec["angle"][0] <= used["angle"] <= spec["angle"][1]
        assert spec["width"][0] <= used["width"] <= spec["width"][1]


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(DegradationError, match="valid names: compose, gaussian_noise"):
        degradations.get("gausian_noise")


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register("jpeg")(lambda image, rng: (image, {}))


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32),
                                 np.zeros((8, 8, 4), np.uint8)])
def test_bad_image_is_rejected(bad: np.ndarray) -> None:
    with pytest.raises(DegradationError, match="uint8 HxWx3"):
        degradations.apply("jpeg", bad, degradations.sample_rng(0, "x"))


@pytest.mark.parametrize(("name", "params", "word"), [
    ("gaussian_noise", {"sigma": -1}, "sigma"), ("jpeg", {"quality": 0}, "quality"),
    ("mask", {"ratio": 1.5}, "ratio"), ("impulse_noise", {"p": (0.5, 0.1)}, "p="),
    ("rain", {"preset": "drizzle"}, "rain100l"), ("haze", {"nonsense": 1}, "nonsense"),
    ("gaussian_noise", {"rounding": "floor"}, "rounding"), ("compose", {"steps": [{"x": 1}]}, "step 0"),
])
def test_bad_params_name_the_parameter(name: str, params: dict, word: str) -> None:
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(DegradationError, match=word):
        degradations.apply(name, img, degradations.sample_rng(0, "x"), **params)


def test_rng_must_be_a_generator() -> None:
    with pytest.raises(DegradationError, match="numpy Generator"):
        degradations.apply("jpeg", np.zeros((8, 8, 3), np.uint8), np.random.RandomState(0))  # type: ignore[arg-type]


def test_global_rng_is_untouched(astronaut: np.ndarray) -> None:
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    for name in EXPECTED:
        degradations.apply(name, astronaut[:32, :32], degradations.sample_rng(0, name), **EXAMPLE.get(name, {}))
    assert np.array_equal(np.random.get_state()[1], state)
