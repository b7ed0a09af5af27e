"""Download + verify against a real HTTP server: byte identity, fault reasons, resume, SIGKILL safety."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from curation_helpers import GOOD, cli, encode

from million_ird.httpserver import LocalServer, Response
from million_ird.store import Store

FAULT_REASONS = {
    "/bad/404": "HTTP Error 404", "/bad/500": "HTTP Error 500", "/bad/429": "HTTP Error 429",
    "/bad/truncated.jpg": "truncated", "/bad/page.html": "HTML", "/bad/random.bin": "unknown file signature",
    "/bad/slow.png": "timed out", "/bad/noai.png": "X-Robots-Tag", "/bad/empty.png": "empty file",
}


def _ingest_urls(store: Store, urls: list[str], tmp_path: Path) -> None:
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    cli("ingest", "-m", str(store.root), "--urls", str(listing), "--source", "web")


def test_download_keeps_bytes_and_explains_faults(image_server: LocalServer, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    secret = tmp_path / "secret.png"
    secret.write_bytes(encode("PNG", 8, 8))
    paths = list(GOOD) + list(FAULT_REASONS)
    _ingest_urls(store, [image_server.url(p) for p in paths] + [secret.as_uri()], tmp_path)
    atime = secret.stat().st_atime_ns
    cli("download", "-m", str(store.root), "--allow-private", "--timeout", "2", "--threads", "8")
    rows = {r["url"]: r for r in store.query("SELECT * FROM catalog").to_pylist()}
    for path, (fmt, width, height) in GOOD.items():
        row = rows[image_server.url(path)]
        served = image_server.routes[path].body
        assert row["status"] == "ok", row
        stored = (store.root / row["path"]).read_bytes()
        assert stored == served and row["sha256"] == hashlib.sha256(served).hexdigest()
        assert row["format"] == {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}[fmt]
        assert Path(row["path"]).suffix == {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}[fmt]
        assert Path(row["path"]).name == f"{row['image_id']}{Path(row['path']).suffix}"
        assert (row["width"], row["height"], row["bytes"]) == (width, height, len(served))
    for path, reason in FAULT_REASONS.items():
        row = rows[image_server.url(path)]
        assert row["status"] == "failed" and reason in row["error"], (path, row["error"])
    assert secret.as_uri() not in rows and secret.stat().st_atime_ns == atime
    assert store.query("SELECT count(*) FROM rejected WHERE url = ?", [secret.as_uri()]).column(0)[0].as_py() == 1
    files = sorted(p.name for p in (store.root / "files").rglob("*") if p.is_file())
    assert len(files) == len(GOOD)


def test_rerun_fetches_only_missing_rows_up_to_retries(image_server: LocalServer, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    _ingest_urls(store, [image_server.url(p) for p in ("/img/a.png", "/img/c.jpg", "/bad/500")], tmp_path)
    for _ in range(3):
        cli("download", "-m", str(store.root), "--allow-private", "--retries", "2")
    assert image_server.hits["/img/a.png"] == 1 and image_server.hits["/img/c.jpg"] == 1
    assert image_server.hits["/bad/500"] == 2
    attempts = store.query("SELECT attempt FROM downloads d JOIN images USING (image_id) "
                           "WHERE url LIKE '%/bad/500' ORDER BY attempt").column(0).to_pylist()
    assert attempts == [1, 2]
    out = cli("stats", "-m", str(store.root), "--json").stdout
    assert '"ok": 2' in out and '"failed": 1' in out


def test_local_folder_rows_are_verified_in_place(tmp_path: Path) -> None:
    folder = tmp_path / "DIV2K"
    folder.mkdir()
    (folder / "good.png").write_bytes(encode("PNG", 64, 64))
    (folder / "broken.jpg").write_bytes(encode("JPEG", 300, 200)[:900])
    store = Store(tmp_path / "store")
    cli("ingest", "-m", str(store.root), "--folder", str(folder))
    cli("download", "-m", str(store.root))
    rows = {Path(r["path"]).name: r for r in store.query("SELECT * FROM catalog").to_pylist()}
    assert rows["good.png"]["status"] == "ok" and rows["good.png"]["path"] == str(folder / "good.png")
    assert rows["broken.jpg"]["status"] == "failed" and "truncated" in rows["broken.jpg"]["error"]
    assert not (store.root / "files").exists()


def test_sigkill_then_rerun_fetches_only_what_was_missing(tmp_path: Path) -> None:
    routes = {f"/slow/{i}.png": Response(encode("PNG", 64, 48, seed=i), content_type="image/png", delay=0.25)
              for i in range(40)}
    with LocalServer(routes) as server:
        store = Store(tmp_path / "store")
        _ingest_urls(store, [server.url(p) for p in routes], tmp_path)
        env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
        proc = subprocess.Popen([sys.executable, "-m", "million_ird.cli", "download", "-m", str(store.root),
                                 "--allow-private", "--threads", "2", "--shard-size", "4"], env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and len(store.parts("downloads")) < 2:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        time.sleep(1.0)  # the engine's watchdog notices its parent is gone and kills its own group
        done_before = store.query("SELECT count(*) FROM downloads WHERE status = 'ok'").column(0)[0].as_py()
        assert 8 <= done_before < 40
        for part in store.parts("downloads"):
            pq.read_table(part)  # every committed part is a complete Parquet file
        hits_before = sum(server.hits.values())
        cli("download", "-m", str(store.root), "--allow-private", "--threads", "8", "--shard-size", "8")
        ok = store.query("SELECT count(DISTINCT image_id) FROM downloads WHERE status = 'ok'").column(0)[0].as_py()
        assert ok == 40
        assert sum(server.hits.values()) - hits_before <= 40 - done_before
        assert max(server.hits.values()) <= 2
        assert store.query("SELECT count(*) FROM downloads").column(0)[0].as_py() == 40
        assert not any((store.root / "_work").iterdir())
        assert not list(store.root.rglob(".tmp-*"))


def test_finished_shards_of_a_killed_run_are_harvested_not_refetched(image_server: LocalServer, tmp_path: Path) -> None:
    """A run killed after img2dataset finished a shard but before we recorded it: the files are kept."""
    store = Store(tmp_path / "store")
    paths = ["/img/a.png", "/img/c.jpg", "/bad/404"]
    _ingest_urls(store, [image_server.url(p) for p in paths], tmp_path)
    run_dir = store.root / "_work" / "20260101T000000Z-download-dead00"
    (run_dir / "out").mkdir(parents=True)
    ids = store.query("SELECT url, image_id FROM images ORDER BY url").to_pylist()
    pq.write_table(pa.table({"url": [r["url"] for r in ids], "image_id": [r["image_id"] for r in ids],
                             "attempt": pa.array([1] * len(ids), pa.int32())}), run_dir / "input.parquet")
    config = {"input": str(run_dir / "input.parquet"), "output": str(run_dir / "out"), "processes": 1,
              "threads": 4, "timeout": 5, "shard_size": 10, "parent_pid": os.getpid(),
              "allow_private": True}
    (run_dir / "engine.json").write_text(json.dumps(config))
    subprocess.run([sys.executable, "-m", "million_ird.stages.engine", str(run_dir / "engine.json")], check=True,
                   capture_output=True, env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"), timeout=120)
    (run_dir / "out" / "_partial_shard.parquet").write_bytes(b"")  # debris of a kill mid-write
    shard = pq.read_table(run_dir / "out" / "00000.parquet").to_pylist()
    moved = next(m for m in shard if m["url"].endswith("/img/a.png"))  # verified + moved before the kill
    kept = store.root / "files" / moved["image_id"][:2] / f"{moved['image_id']}.png"
    kept.parent.mkdir(parents=True)
    os.replace(run_dir / "out" / "00000" / f"{moved['key']}.jpg", kept)
    hits = sum(image_server.hits.values())
    assert hits == 3
    cli("download", "-m", str(store.root), "--allow-private", "--retries", "1")  # the recovered 404 has used its one attempt
    record = json.loads(max((store.root / "runs").glob("*-download-*.json")).read_text())
    assert record["stats"]["recovered_from_killed_runs"] == 3 and record["stats"]["attempted"] == 0
    assert sum(image_server.hits.values()) == hits  # nothing fetched twice
    rows = {r["url"]: r for r in store.query("SELECT * FROM catalog").to_pylist()}
    assert rows[image_server.url("/img/a.png")]["status"] == "ok"
    assert (store.root / rows[image_server.url("/img/a.png")]["path"]).read_bytes() == image_server.routes["/img/a.png"].body
    assert rows[image_server.url("/bad/404")]["status"] == "failed"
    assert not run_dir.exists()
