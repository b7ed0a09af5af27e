"""Ingest: LAION-style Parquet, URL lists, local folders; stable ids, dedup, rejection, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from curation_helpers import cli, encode

from million_ird.sources.common import IngestConfig, IngestError
from million_ird.sources.ingest import IngestInputs, ingest
from million_ird.store import Store

LAION = {
    "URL": ["https://a.example/1.jpg", "https://a.example/2.png", "http://b.example/3.jpg",
            "file:///etc/passwd", "ftp://c.example/4.jpg", "data:image/png;base64,AAAA", "images/rel.jpg",
            "https:///nohost.jpg", "https://a.example/1.jpg", "https://d.example/small.jpg",
            "https://d.example/marked.jpg"],
    "TEXT": [f"caption {i}" for i in range(11)],
    "WIDTH": [2048, 1024, 4000, 2000, 2000, 2000, 2000, 2000, 2048, 800, 3000],
    "HEIGHT": [1536, 1024, 3000, 2000, 2000, 2000, 2000, 2000, 1536, 600, 2000],
    "similarity": [0.3] * 11,
    "hash": list(range(11)),
    "pwatermark": [0.1, 0.2, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.95],
    "punsafe": [0.01] * 11,
}


def _laion(tmp_path: Path, data: dict | None = None) -> Path:
    path = tmp_path / "laion.parquet"
    pq.write_table(pa.table(data or LAION), path)
    return path


def _snapshot(store: Store) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in store.root.rglob("*.parquet")}


def test_laion_parquet_rows_filters_and_rejections(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    stats = ingest(store, IngestInputs(parquet=(_laion(tmp_path),)),
                   IngestConfig(source="laion-hr", min_side=1024, max_watermark=0.5))
    urls = store.query("SELECT url FROM images ORDER BY url").column(0).to_pylist()
    assert urls == ["http://b.example/3.jpg", "https://a.example/1.jpg", "https://a.example/2.png"]
    assert stats["duplicates_in_input"] == 1 and stats["new"] == 3
    reasons = {r["url"]: r["reason"] for r in store.query("SELECT url, reason FROM rejected").to_pylist()}
    assert "not http(s)" in reasons["file:///etc/passwd"] and "not http(s)" in reasons["ftp://c.example/4.jpg"]
    assert "not http(s)" in reasons["data:image/png;base64,AAAA"] and "relative" in reasons["images/rel.jpg"]
    assert "no host" in reasons["https:///nohost.jpg"]
    assert "--min-side 1024" in reasons["https://d.example/small.jpg"]
    assert "--max-watermark" in reasons["https://d.example/marked.jpg"]
    by_kind = stats["rejected_by_reason"]  # grouped by kind, so the summary stays short on big inputs
    assert by_kind["below --min-side 1024"] == 1 and by_kind["above --max-watermark 0.5"] == 1
    assert sum(by_kind.values()) == 7
    row = store.query("SELECT * FROM images WHERE url = 'https://a.example/1.jpg'").to_pylist()[0]
    assert (row["width"], row["height"], row["caption"], row["source"]) == (2048, 1536, "caption 0", "laion-hr")
    assert json.loads(row["extra"]) == {"similarity": 0.3, "hash": 0, "pwatermark": 0.1, "punsafe": 0.01}


def test_ids_are_stable_and_reingest_is_a_noop(tmp_path: Path) -> None:
    one, two = Store(tmp_path / "one"), Store(tmp_path / "two")
    laion = _laion(tmp_path)
    for store in (one, two):
        ingest(store, IngestInputs(parquet=(laion,)), IngestConfig(source="laion-hr"))
    ids = "SELECT image_id, url FROM images ORDER BY image_id"
    assert one.query(ids).to_pylist() == two.query(ids).to_pylist()
    again = ingest(one, IngestInputs(parquet=(laion,)), IngestConfig(source="laion-hr"))
    assert again["new"] == 0 and again["already_in_store"] == 5
    assert one.query("SELECT count(*) AS n, count(DISTINCT image_id) AS d FROM images").to_pylist() == [{"n": 5, "d": 5}]


def test_url_list_and_csv(tmp_path: Path) -> None:
    txt = tmp_path / "urls.txt"
    txt.write_text("# comment\nhttps://x.example/a.jpg\n\nfile:///tmp/secret.png\nhttps://x.example/a.jpg\n")
    csv = tmp_path / "list.csv"
    csv.write_text("link,w,h\nhttps://y.example/b.png,1200,900\nhttps://y.example/c.png,abc,900\n")
    store = Store(tmp_path / "s")
    stats = ingest(store, IngestInputs(urls=txt), IngestConfig(source="urls"))
    assert (stats["new"], stats["rejected"], stats["duplicates_in_input"]) == (1, 1, 1)
    with pytest.raises(IngestError, match=r"list.csv:line 3: column 'w' holds 'abc'"):
        ingest(store, IngestInputs(urls=csv), IngestConfig(source="csv", url_col="link", width_col="w", height_col="h"))


def test_folder_rows_keep_absolute_paths(tmp_path: Path) -> None:
    folder = tmp_path / "DIV2K_train_HR"
    (folder / "sub").mkdir(parents=True)
    (folder / "0001.png").write_bytes(encode("PNG", 64, 48))
    (folder / "sub" / "0002.jpg").write_bytes(encode("JPEG", 80, 60))
    (folder / "notes.txt").write_text("ignored")
    store = Store(tmp_path / "s")
    ingest(store, IngestInputs(folder=folder), IngestConfig(source="DIV2K"))
    rows = store.query("SELECT path, url, width, height FROM images ORDER BY path").to_pylist()
    assert rows == [{"path": str(folder / "0001.png"), "url": None, "width": 64, "height": 48},
                    {"path": str(folder / "sub" / "0002.jpg"), "url": None, "width": 80, "height": 60}]


@pytest.mark.parametrize("args,message", [
    (["--parquet", "missing.parquet"], "missing.parquet: no such file"),
    (["--parquet", "laion.parquet", "--url-col", "LINK"], "no column 'LINK'"),
    (["--parquet", "bad_types.parquet"], "bad_types.parquet:row 1: column 'WIDTH' holds 'wide'"),
    (["--urls", "laion.parquet"], "not UTF-8 text"),
    (["--folder", "nowhere"], "nowhere: no such folder"),
])
def test_bad_input_is_one_line_and_changes_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    _laion(tmp_path)
    pq.write_table(pa.table({"URL": ["https://a.example/x.jpg", "https://a.example/y.jpg"],
                             "WIDTH": ["1", "wide"], "HEIGHT": ["1", "2"]}), tmp_path / "bad_types.parquet")
    store = Store(tmp_path / "store")
    cli("ingest", "-m", str(store.root), "--urls", str(_write_urls(tmp_path)), cwd=tmp_path)
    before = _snapshot(store)
    proc = cli("ingest", "-m", str(store.root), *args, check=False, cwd=tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert _snapshot(store) == before


def _write_urls(tmp_path: Path) -> Path:
    path = tmp_path / "seed.txt"
    path.write_text("https://seed.example/1.jpg\n")
    return path


def test_run_record_names_each_input_file_by_absolute_path_and_sha256(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    laion = _laion(tmp_path)
    monkeypatch.chdir(tmp_path)
    store = Store(tmp_path / "store")
    ingest(store, IngestInputs(parquet=(Path("laion.parquet"),)), IngestConfig(source="laion-hr"))  # typed relative
    record = json.loads(next((store.root / "runs").glob("*-ingest-*.json")).read_text())
    inputs = record["config"]["inputs"]
    assert inputs["parquet"] == [str(laion)] and inputs["urls"] is None and inputs["folder"] is None
    assert inputs["files"] == [{"path": str(laion), "bytes": laion.stat().st_size,
                                "sha256": hashlib.sha256(laion.read_bytes()).hexdigest()}]
