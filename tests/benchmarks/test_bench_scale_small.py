"""The scale benchmark's two scripts at a tiny size: the store they build and the figures they print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from million_ird.store import Store

ROOT = Path(__file__).resolve().parents[2]
IMAGES = 2_000


def _run(*args: str) -> str:
    """Run a benchmark module from the repository root; its stdout (fails with its stderr)."""
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow  # about 15 s: every benchmark step runs in its own Python process
def test_synthetic_store_and_scale_figures(tmp_path: Path) -> None:
    """make_synthetic_store builds a consistent store; bench_scale prints every figure with PASS/MISS."""
    out = tmp_path / "store"
    _run("benchmarks.make_synthetic_store", "--out", str(out), "--images", str(IMAGES), "--seed", "1")
    store = Store(out)
    counts = store.query("""
        SELECT (SELECT count(*) FROM images) AS images, (SELECT count(DISTINCT image_id) FROM images) AS ids,
               (SELECT count(DISTINCT image_id) FROM downloads) AS tried,
               (SELECT count(*) FROM catalog WHERE status = 'ok') AS ok,
               (SELECT count(DISTINCT image_id) FROM scores WHERE metric = 'niqe') AS niqe,
               (SELECT count(DISTINCT image_id) FROM scores WHERE metric = 'brisque') AS brisque,
               (SELECT count(*) FROM patches) AS patches,
               (SELECT count(*) FROM selections) AS selected""").to_pylist()[0]
    assert counts["images"] == counts["ids"] == counts["tried"] == IMAGES
    assert 0.6 * IMAGES < counts["ok"] < 0.8 * IMAGES
    assert counts["niqe"] == counts["brisque"] == counts["ok"]
    assert counts["selected"] > 0 and counts["patches"] > counts["selected"]
    assert pq.ParquetFile(out / "inputs/laion-hr-meta.parquet").metadata.num_rows == IMAGES
    sources = {r["source"]: r["n"] for r in store.query("SELECT source, count(*) AS n FROM images GROUP BY source")
               .to_pylist()}
    assert set(sources) == {"laion-hr", "LSDIR", "Flickr2K", "DIV2K", "NTIRE"} and sources["laion-hr"] > 0.9 * IMAGES

    figures = tmp_path / "figures.json"
    text = _run("benchmarks.bench_scale", "--store", str(out), "--images", str(IMAGES), "--repeat", "1",
                "--work", str(tmp_path / "work"), "--json", str(figures))
    for name in ("ingest_s", "stats_s", "cli_stats_s", "query_s", "filter_s", "pending_done_s", "pending_10pct_s",
                 "catalog_scan_s", "compact_s", "peak RSS ingest", "parts patches", "parts scores after a 2,000-image"):
        assert name in text, text
    assert "PASS" in text
    result = json.loads(figures.read_text())["figures"]
    assert result["ingest_new"] + result["ingest_rejected"] == IMAGES
    assert result["pending_done_rows"] == 0
    assert result["pending_10pct_rows"] == result["pending_10pct_expected"] > 0
    assert result["catalog_rows"] == result["stats_images"] == IMAGES
    assert result["compact_hash_same"] and result["compact_parts_before"] >= 500
    assert result["compact_parts_after"] <= result["compact_parts_original"] + 1
    assert result["score_run_rows"] == 2 * IMAGES and result["score_run_parts"] == 1  # one run, merged at its end
    assert not (tmp_path / "work").exists()  # scratch stores are removed
