"""Pre-training corruption: block counts, where the degradation lands, configurability, determinism."""

from __future__ import annotations

import numpy as np
import pytest

import degradations
from degradations.recipes import CLEAN, DEGRADED, MASKED, PretrainConfig, pretrain, pretrain_detailed


def test_default_block_split_and_regions(astronaut: np.ndarray) -> None:
    cfg = PretrainConfig()
    inp, target, labels, info = pretrain_detailed(astronaut, degradations.sample_rng(0, "p0", "pretrain"), cfg)
    assert inp.shape == target.shape == (128, 128, 3) and labels.shape == (128, 128)
    blocks = labels[::16, ::16]
    assert (blocks == MASKED).sum() == 19 and (blocks == DEGRADED).sum() == 32 and (blocks == CLEAN).sum() == 13
    assert (inp[labels == MASKED] == 255).all()
    assert np.array_equal(inp[labels == CLEAN], target[labels == CLEAN])
    assert not np.array_equal(inp[labels == DEGRADED], target[labels == DEGRADED])
    assert info["degradation"] in ("jpeg", "gaussian_noise", "impulse_noise")
    # the target is a real crop of the patch
    hits = [(y, x) for y in range(0, 385) for x in range(0, 385)
            if np.array_equal(astronaut[y, x:x + 128], target[0]) and np.array_equal(astronaut[y + 127, x:x + 128], target[127])]
    assert len(hits) >= 1


def test_degraded_blocks_come_from_a_fully_degraded_copy(astronaut: np.ndarray) -> None:
    cfg = PretrainConfig(kinds=("jpeg",), kind_weights=(1.0,), jpeg_quality=(20, 20), n_masked=0, n_degraded=64)
    inp, target, labels, info = pretrain_detailed(astronaut, degradations.sample_rng(0, "j"), cfg)
    full, _ = degradations.apply("jpeg", target, degradations.sample_rng(0, "unused"), quality=20)
    assert (labels == DEGRADED).all() and info["params"]["quality"] == 20 and np.array_equal(inp, full)


def test_kind_frequencies_follow_the_weights(astronaut: np.ndarray) -> None:
    cfg = PretrainConfig(kind_weights=(1.0, 0.0, 3.0))
    kinds = [pretrain_detailed(astronaut, degradations.sample_rng(0, i), cfg)[3]["degradation"] for i in range(200)]
    assert "gaussian_noise" not in kinds and 0.15 < kinds.count("jpeg") / 200 < 0.35


def test_parameters_stay_in_their_ranges(astronaut: np.ndarray) -> None:
    cfg = PretrainConfig()
    grays = []
    for i in range(150):
        _, _, _, info = pretrain_detailed(astronaut, degradations.sample_rng(1, i), cfg)
        p = info["params"]
        if info["degradation"] == "jpeg":
            assert 30 <= p["quality"] <= 95
        elif info["degradation"] == "gaussian_noise":
            assert 5 <= p["sigma"] <= 50
            grays.append(p["gray"])
        else:
            assert 0.05 <= p["p"] <= 0.3
    assert 0.2 < np.mean(grays) < 0.6


def test_same_rng_same_sample_and_default_config(astronaut: np.ndarray) -> None:
    a = pretrain(astronaut, degradations.sample_rng(3, "s"))
    b = pretrain(astronaut, degradations.sample_rng(3, "s"))
    c = pretrain(astronaut, degradations.sample_rng(3, "t"))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_configurable_crop_block_fill(astronaut: np.ndarray) -> None:
    cfg = PretrainConfig(crop=64, block=8, n_masked=10, n_degraded=20, mask_fill=0.0)
    inp, _, labels = pretrain(astronaut, degradations.sample_rng(0, "c"), cfg)
    assert inp.shape == (64, 64, 3) and (labels[::8, ::8] == MASKED).sum() == 10
    assert (inp[labels == MASKED] == 0).all()


@pytest.mark.parametrize(("kwargs", "word"), [({"crop": 100}, "multiple of block"), ({"n_masked": 60}, "within"),
                                              ({"kinds": ("blur",), "kind_weights": (1.0,)}, "unsupported")])
def test_bad_config_is_rejected(kwargs: dict, word: str) -> None:
    with pytest.raises(degradations.DegradationError, match=word):
        PretrainConfig(**kwargs)


def test_from_dict_and_small_patch_errors(astronaut: np.ndarray) -> None:
    assert PretrainConfig.from_dict({"sigma": [10, 20]}).sigma == (10, 20)
    with pytest.raises(degradations.DegradationError, match="valid keys"):
        PretrainConfig.from_dict({"sigmas": [10, 20]})
    with pytest.raises(degradations.DegradationError, match="smaller than the 128 crop"):
        pretrain(astronaut[:100], degradations.sample_rng(0, "x"))


def test_shipped_yaml_recipe_matches_the_defaults() -> None:
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[2] / "manifests" / "recipes" / "pretrain.yaml"
    assert PretrainConfig.from_dict(yaml.safe_load(path.read_text())) == PretrainConfig()
