"""Every notebook is a valid jupytext percent-format file; explore_manifest runs end to end on a demo store.

(The degradations gallery is executed by tests/degradations/test_gallery_notebook.py.)
"""

from __future__ import annotations

import runpy
from pathlib import Path

import cv2
import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.py"))
EXPLORE = ROOT / "notebooks" / "explore_manifest.py"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_percent_format(notebook: Path) -> None:
    nb = jupytext.read(notebook)
    assert nb.metadata["jupytext"]["text_representation"]["format_name"] == "percent"
    kinds = [c.cell_type for c in nb.cells]
    assert kinds[0] == "markdown" and kinds.count("markdown") >= 3 and kinds.count("code") >= 3
    compile(jupytext.writes(nb, fmt="py:percent"), str(notebook), "exec")  # round-trips to valid Python


@pytest.fixture(scope="module")
def demo_store(demo_build: tuple[Path, str]) -> Path:
    """The session's store built by `million-ird demo` (the bundled sample, served from 127.0.0.1)."""
    return demo_build[0]


def test_explore_manifest_runs_on_the_demo_store(demo_store: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILLION_IRD_STORE", str(demo_store))
    monkeypatch.setenv("EXPLORE_OUT", str(tmp_path))
    ns = runpy.run_path(str(EXPLORE), run_name="__main__")
    counts = ns["counts"]
    assert counts["images"] == 10 and counts["latest_patches"] > 0  # the demo: 10 ingested, patches cut
    assert {"niqe", "brisque"} <= {name.split("_")[0] for name in ns["score_charts"]}
    for path in [*ns["score_charts"].values(), ns["resolution_chart"]]:
        text = path.read_text()
        assert text.startswith("<svg xmlns=") and text.count("<rect") >= 2  # the frame and bars or a legend
    sheet = cv2.imread(str(ns["sheet_path"]))
    assert sheet is not None and len(ns["picked"]) == min(4, counts["latest_patches"])
    assert sheet.shape[0] == 192 and sheet.shape[1] == sum(t.shape[1] + 4 for t in ns["tiles"])
    assert sheet.std() > 10  # real pictures, not blank tiles
