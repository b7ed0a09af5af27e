"""`million-ird compact`: fewer parts, every view's rows unchanged; a killed compaction is finished or undone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from million_ird.cli import app
from million_ird.compact import recover
from million_ird.lock import store_lock
from million_ird.store import JOURNAL, Store

skdata = pytest.importorskip("skimage.data")
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")


def run(*args: str) -> str:
    """The real `million-ird` app in process; asserts exit 0."""
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, f"{args}: exit {res.exit_code}\n{res.output}\n{res.exception!r}"
    return res.output


@pytest.fixture(scope="module")
def fragmented(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A store whose tables are spread over many small parts: three ingests, score/patches runs of 2 images."""
    root = tmp_path_factory.mktemp("compact")
    store = Store(root / "store")
    for k, name in enumerate(PHOTOS):
        img = cv2.resize(getattr(skdata, name)(), (288, 192), interpolation=cv2.INTER_AREA)
        folder = root / f"src{k % 3}"
        folder.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / f"{name}.png"), img[..., ::-1] if img.ndim == 3 else img)
    for k in range(3):
        run("ingest", "-m", str(store.root), "--folder", str(root / f"src{k}"), "--source", f"src{k}")
    run("download", "-m", str(store.root))
    for _ in range(3):
        run("score", "-m", str(store.root), "--metrics", "brisque", "--limit", "2")
        run("patches", "-m", str(store.root), "--size", "96", "--limit", "2", "--images-per-batch", "1")
    run("dedup", "-m", str(store.root))
    run("splits", "-m", str(store.root), "--recipe", "synthetic")
    return store


def snapshot(store: Store) -> dict[str, list[str]]:
    """Every view's rows, each row as text, sorted: equal snapshots mean equal query results."""
    with store.connect() as con:
        views = [r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
        return {v: sorted(map(repr, con.sql(f"SELECT * FROM {v}").fetchall())) for v in views}


def test_compact_merges_parts_and_changes_no_view(fragmented: Store, tmp_path: Path) -> None:
    store = Store(shutil.copytree(fragmented.root, tmp_path / "store"))
    before = snapshot(store)
    parts = {t: len(store.parts(t)) for t in ("images", "scores", "patches")}
    assert all(n >= 3 for n in parts.values()), parts  # the fixture really is fragmented
    assert before["catalog"] and before["latest_patches"] and before["latest_pairs"]
    run("compact", "-m", str(store.root))
    assert {t: len(store.parts(t)) for t in parts} == {t: 1 for t in parts}
    assert snapshot(store) == before
    # the merged parts still count as done: the driver's resume reads them like the parts they replace
    assert "nothing to do" in run("score", "-m", str(store.root), "--metrics", "brisque")
    assert "nothing to do" in run("patches", "-m", str(store.root), "--size", "96")
    assert snapshot(store) == before


def _killed_compaction(store: Store, table: str, write_merged: bool) -> tuple[list[str], Path]:
    """Leave what a compaction killed mid-way leaves: the journal, the merged part or not, old parts intact."""
    folder = store.root / table
    old = [p.name for p in store.parts(table)]
    merged = folder / "part-compact-killed.parquet"
    if write_merged:
        pq.write_table(pq.ParquetDataset([folder / n for n in old]).read(), merged)
    (folder / JOURNAL).write_text(json.dumps({"merged": [merged.name], "replaced": old}))
    return old, merged


@pytest.mark.parametrize("write_merged", [True, False], ids=["merged-written", "merged-missing"])
def test_a_killed_compaction_never_shows_both_sides_and_is_recovered(fragmented: Store, tmp_path: Path,
                                                                     write_merged: bool) -> None:
    store = Store(shutil.copytree(fragmented.root, tmp_path / "store"))
    before = snapshot(store)
    old, merged = _killed_compaction(store, "scores", write_merged)
    assert snapshot(store) == before  # readers see the old parts or the merged one, never both
    with store_lock(store.root):
        assert recover(store) == 1
    names = {p.name for p in store.parts("scores")}
    assert names == ({merged.name} if write_merged else set(old))
    assert not (store.root / "scores" / JOURNAL).exists() and merged.exists() == write_merged
    assert snapshot(store) == before
