"""The gallery notebook runs end to end (as a plain percent-format script) and writes its figures."""

from __future__ import annotations

import runpy
from pathlib import Path

import cv2
import jupytext
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "degradations_gallery.py"


def test_notebook_is_valid_jupytext() -> None:
    nb = jupytext.read(NOTEBOOK)
    kinds = [c.cell_type for c in nb.cells]
    assert kinds.count("markdown") >= 3 and kinds.count("code") >= 3


def test_notebook_executes_and_writes_the_gallery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GALLERY_OUT", str(tmp_path))
    ns = runpy.run_path(str(NOTEBOOK), run_name="__main__")
    grid = cv2.imread(str(tmp_path / "degradations_gallery.png"))
    assert grid is not None and grid.shape == (6 * 256, 4 * 256, 3)
    # every strength is stronger than the previous one (lower input PSNR), for every degradation
    for name, values in ns["table"].items():
        assert values[0] > values[1] > values[2], (name, values)
    assert cv2.imread(str(tmp_path / "pretrain_sample.png")).shape == (128, 3 * 128, 3)
