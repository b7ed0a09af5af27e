"""Benchmark layouts (million_ird.sources.benchmarks) on tiny fake folder trees, and the pair exports."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from million_ird import pair_exports
from million_ird.sources import benchmarks
from million_ird.sources.benchmarks import LayoutError


def touch_png(path: Path, value: int = 0) -> Path:
    """Write a tiny real PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 12, 3), value, np.uint8))
    return path


def make_rain(root: Path, split: str, n: int, names: tuple[str, str] = ("rainy", "gt")) -> None:
    """Rain100L-style pairs rain-N.png / norain-N.png."""
    for i in range(1, n + 1):
        touch_png(root / split / names[0] / f"rain-{i}.png", 200)
        touch_png(root / split / names[1] / f"norain-{i}.png", 100)


def test_rain_pairs_accept_both_naming_variants_and_skip_orphans(tmp_path: Path) -> None:
    make_rain(tmp_path, "train", 3)
    make_rain(tmp_path, "test", 2, ("input", "target"))
    touch_png(tmp_path / "train" / "rainy" / "rain-9.png")  # no norain-9: not a pair
    train = benchmarks.find_rain_pairs(tmp_path, "train")
    test = benchmarks.find_rain_pairs(tmp_path, "test")
    assert [f.meta["index"] for f in train] == [1, 2, 3] and len(test) == 2
    assert train[0].clean.name == "norain-1.png" and train[0].degraded.name == "rain-1.png"


def test_misnamed_folder_gives_one_line_error_with_the_layout(tmp_path: Path) -> None:
    make_rain(tmp_path, "train", 1, ("rain_images", "gt"))
    with pytest.raises(LayoutError) as err:
        benchmarks.find_rain_pairs(tmp_path, "train")
    msg = str(err.value)
    assert "\n" not in msg and "'rainy' or 'input'" in msg and "PATH/train/{rainy|input}/rain-N.png" in msg
    with pytest.raises(LayoutError, match="is not a folder; expected --sots PATH"):
        benchmarks.find_sots(tmp_path / "nope")


def test_ots_and_sots_names_carry_a_and_beta(tmp_path: Path) -> None:
    touch_png(tmp_path / "ots" / "synthetic" / "part1" / "0001_0.8_0.2.jpg")
    touch_png(tmp_path / "ots" / "synthetic" / "part2" / "0001_1_0.04.jpg")
    touch_png(tmp_path / "ots" / "synthetic" / "part2" / "0002_1_0.04.jpg")  # no original: skipped
    touch_png(tmp_path / "ots" / "original" / "0001.jpg")
    found = benchmarks.find_ots(tmp_path / "ots")
    assert [(f.meta["A"], f.meta["beta"]) for f in found] == [(0.8, 0.2), (1.0, 0.04)]
    assert found[0].name == "ots/part1/0001_0.8_0.2.jpg"
    touch_png(tmp_path / "sots" / "hazy" / "0001_0.8_0.2.jpg")
    touch_png(tmp_path / "sots" / "gt" / "0001.png")
    assert benchmarks.find_sots(tmp_path / "sots")[0].clean.name == "0001.png"


def test_urban100_keeps_only_img_nnn_and_reports_counts(tmp_path: Path) -> None:
    for name in ("img_001.png", "img_002.png", "readme.png"):
        touch_png(tmp_path / name)
    assert len(benchmarks.find_clean_set(tmp_path, "urban100")) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match="img_001.png"):
        benchmarks.find_clean_set(tmp_path / "empty", "urban100")
    rows = benchmarks.found_vs_expected({"urban100": 2, "sots": 492, "bsd68": 68})
    assert [r["status"] for r in rows] == ["INCOMPLETE", "ok", "ok"] and rows[0]["expected"] == 100


def _rows(tmp_path: Path) -> list[dict]:
    c = touch_png(tmp_path / "src" / "c.png", 50)
    d = touch_png(tmp_path / "src" / "d.png", 60)
    h = touch_png(tmp_path / "src" / "0003_0.9_0.1.jpg", 70)
    base = {"degradation": None, "seed": None, "sigma": None, "params": "{}"}
    return [
        {**base, "pair_id": "r/train/denoise/s15/c", "split": "train", "task": "denoise", "clean": str(c),
         "degraded": None, "degradation": "gaussian_noise", "seed": 1, "sigma": 15.0},
        {**base, "pair_id": "r/train/denoise/s25/c", "split": "train", "task": "denoise", "clean": str(c),
         "degraded": None, "degradation": "gaussian_noise", "seed": 2, "sigma": 25.0},
        {**base, "pair_id": "r/train/derain/1", "split": "train", "task": "derain", "clean": str(c), "degraded": str(d)},
        {**base, "pair_id": "r/train/dehaze/3", "split": "train", "task": "dehaze", "clean": str(c), "degraded": str(h)},
        {**base, "pair_id": "r/test/denoise/bsd68/s15/c", "split": "test", "task": "denoise", "clean": str(c),
         "degraded": str(d), "params": json.dumps({"source": "bsd68"})},
        {**base, "pair_id": "r/test/derain/1", "split": "test", "task": "derain", "clean": str(c), "degraded": str(d)},
    ]


def test_exports_write_the_three_layouts(tmp_path: Path) -> None:
    rows = _rows(tmp_path)
    counts = pair_exports.export_promptir(rows, Path, tmp_path / "p")
    assert counts == {"train/denoise": 1, "train/derain": 1, "train/dehaze": 1, "test/denoise": 1, "test/derain": 1}
    p = tmp_path / "p"
    assert (p / "data_dir/rainy/rainTrain.txt").read_text() == "rainy/rain-1.png\n"
    assert (p / "data_dir/hazy/hazy_outside.txt").read_text() == "synthetic/0003_0.9_0.1.jpg\n"
    assert (p / "Train/Dehaze/original/0003.png").resolve() == (tmp_path / "src/c.png").resolve()
    assert (p / "test/derain/Rain100L/input/rain-1.png").exists() and (p / "test/denoise/bsd68/c.png").exists()
    dsrir = pair_exports.export_dsrir(rows, Path, tmp_path / "d")
    lines = (tmp_path / "d/train_all_in_one.csv").read_text().splitlines()
    assert dsrir["train_rain.csv"] == 5000 and dsrir["train_noise.csv"] == 1 and dsrir["train_haze.csv"] == 1
    assert lines[0] == "target,degraded" and len(lines) == 1 + 5002 and lines[1] == f"{rows[0]['clean']},{rows[0]['clean']}"
    mioir = pair_exports.export_mioir(rows, Path, tmp_path / "m")
    tasks = [line.split(",")[0] for line in (tmp_path / "m/train.csv").read_text().splitlines()[1:]]
    assert mioir == {"train.csv": 4, "test.csv": 2} and tasks == ["denoise", "denoise", "derain", "dehaze"]
