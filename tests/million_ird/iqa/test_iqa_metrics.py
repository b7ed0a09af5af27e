"""Metric behaviour: format invariance, noise monotonicity, input kinds, edge cases, registry."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from iqa_helpers import add_noise, natural

from million_ird import iqa
from million_ird.images import read_image as load_image
from million_ird.iqa import brisque, niqe
from million_ird.iqa.registry import Metric, register


@pytest.mark.parametrize("metric", ["niqe", "brisque"])
def test_lossless_format_change_keeps_the_score(tmp_path: Path, metric: str) -> None:
    img = natural("coffee")
    m = iqa.get(metric)
    scores = []
    for ext in (".bmp", ".png", ".tiff"):
        p = tmp_path / f"x{ext}"
        cv2.imwrite(str(p), img[:, :, ::-1])
        scores.append(m.score(load_image(p)))
    assert scores[0] == scores[1] == scores[2]


@pytest.mark.parametrize("metric", ["niqe", "brisque"])
@pytest.mark.parametrize("name", ["astronaut", "chelsea"])
def test_more_noise_scores_worse(metric: str, name: str) -> None:
    img = natural(name)
    m = iqa.get(metric)
    s = [m.score(img if sigma == 0 else add_noise(img, sigma)) for sigma in (0, 10, 25)]
    assert s[0] < s[1] < s[2], s


def test_gray_rgba_and_16bit_inputs(tmp_path: Path) -> None:
    rgb = natural("chelsea")
    gray = niqe.nss.to_gray(rgb).astype(np.uint8)
    m = iqa.get("niqe")
    # a 2-D image is the gray image MATLAB would have made from the RGB one
    assert m.score(gray) == pytest.approx(m.score(rgb), abs=0)
    # alpha is dropped
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), rgba[:, :, [2, 1, 0, 3]])
    assert m.score(load_image(tmp_path / "a.png")) == m.score(rgb)
    # 16 bit: v * 257 reduces back to the same 8-bit image
    cv2.imwrite(str(tmp_path / "b.png"), (rgb[:, :, ::-1].astype(np.uint16) * 257))
    loaded = load_image(tmp_path / "b.png")
    assert loaded.dtype == np.uint16
    assert m.score(loaded) == m.score(rgb)
    assert brisque.brisque(loaded) == brisque.brisque(rgb)


def test_too_small_and_flat_images() -> None:
    with pytest.raises(ValueError, match="96x96"):
        niqe.niqe(np.zeros((95, 300, 3), np.uint8))
    with pytest.raises(ValueError, match="16 px"):
        brisque.brisque(np.zeros((10, 300), np.uint8))
    assert not np.isfinite(brisque.brisque(np.full((64, 64), 128, np.uint8)))


def test_unreadable_file_is_a_value_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.png"
    bad.write_bytes(b"<html>not an image</html>")
    with pytest.raises(ValueError, match="cannot decode"):
        load_image(bad)


def test_registry_refuses_duplicates_and_lists_names() -> None:
    with pytest.raises(ValueError, match="already registered"):
        @register("niqe")
        class Again(Metric):
            def score(self, img: np.ndarray) -> float:
                return 0.0
    with pytest.raises(KeyError, match="brisque, nima, niqe"):
        iqa.get("nique")


def test_pyiqa_is_optional() -> None:
    m = iqa.get("pyiqa:niqe")
    try:
        import pyiqa  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"million-ird\[pyiqa\]"):
            m.setup()


def test_svm_scale_maps_range_ends_to_bounds() -> None:
    model = brisque.load_brisque_model()
    x = brisque.svm_scale(model.fmin.copy(), model)
    assert np.all(x == -1.0)
    mid = brisque.svm_scale((model.fmin + model.fmax) / 2, model)
    assert np.allclose(mid, 0.0, atol=1e-5)
