"""Download stage: img2dataset fetches the bytes, we verify every file and append `downloads` outcomes.

Shards are harvested as soon as img2dataset finishes them, so a killed run loses at most the shards
in flight; a re-run harvests finished shards a killed run left behind, then fetches only rows that
have no `ok` outcome and fewer than `retries` attempts. That image-level resume also covers shards
img2dataset's distributors give up on (Ray's never retries a failed shard): their rows get no outcome,
so the next run fetches them. What the engine may connect to and read is netguard.py's business.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from million_ird.lock import assert_held, store_lock
from million_ird.netguard import DEFAULT_MAX_BYTES
from million_ird.schema import DOWNLOADS
from million_ird.stages.verify import DEFAULT_MAX_PIXELS, Verified, verify_file
from million_ird.store import Store, StoreError, new_run_id, utc_now

log = logging.getLogger(__name__)

WORK = "_work"
PENDING_SQL = """
SELECT i.image_id, i.url, i.path, coalesce(a.n, 0) AS attempts
FROM images i
LEFT JOIN (SELECT image_id, count(*) AS n, bool_or(status = 'ok') AS ok FROM downloads GROUP BY image_id) a
  USING (image_id)
WHERE NOT coalesce(a.ok, false) AND coalesce(a.n, 0) < ?
ORDER BY i.image_id
"""
# name -> (module it needs, how to install it)
DISTRIBUTORS = {"multiprocessing": (None, ""), "ray": ("ray", "pip install 'million-ird[ray]'"),
                "pyspark": ("pyspark", "pip install pyspark")}


@dataclass(frozen=True)
class DownloadConfig:
    """Engine and verification settings of one `download` run."""

    processes: int = 1
    threads: int = 16
    timeout: int = 10
    retries: int = 3
    shard_size: int = 500
    max_pixels: int = DEFAULT_MAX_PIXELS
    verify_workers: int = max(1, os.cpu_count() or 1)
    http_proxy: str | None = None  # http:// URLs of this run go through this proxy (the demo's local server)
    max_bytes: int = DEFAULT_MAX_BYTES  # fail files over this (0: no limit): Content-Length, body read, size on disk
    allow_private: bool = False  # also fetch from loopback, private, link-local, ... addresses (netguard.py)
    distributor: str = "multiprocessing"  # img2dataset's distributor: one of DISTRIBUTORS


def check_config(cfg: DownloadConfig) -> None:
    """Refuse a config that cannot run, in one line: unknown distributor, its package missing, bad limits."""
    if cfg.distributor not in DISTRIBUTORS:
        raise StoreError(f"unknown distributor {cfg.distributor!r}; valid: {', '.join(DISTRIBUTORS)}")
    module, install = DISTRIBUTORS[cfg.distributor]
    if module and importlib.util.find_spec(module) is None:  # img2dataset would silently download nothing
        raise StoreError(f"distributor {cfg.distributor!r} needs the {module} package: {install}")
    if cfg.max_bytes < 0:
        raise StoreError(f"max-bytes must be >= 0 (0: no limit), got {cfg.max_bytes}")


def outcome_row(image_id: str, attempt: int, run_id: str, v: Verified, path: str | None) -> dict:
    """One `downloads` row from a verification result."""
    return {"image_id": image_id, "status": "failed" if v.error else "ok", "error": v.error,
            "path": None if v.error else path, "format": v.format, "width": v.width, "height": v.height,
            "channels": v.channels, "bit_depth": v.bit_depth, "bytes": v.bytes, "sha256": v.sha256,
            "attempt": attempt, "run_id": run_id, "finished_at": utc_now()}


def _append(store: Store, rows: list[dict], run_id: str) -> None:
    store.append("downloads", pa.Table.from_pylist(rows, schema=DOWNLOADS), run_id)


def _keep_file(store: Store, src: Path, image_id: str, v: Verified) -> str:
    """Move a verified file to files/<id[:2]>/<id>.<ext>; returns its store-relative path."""
    rel = f"files/{image_id[:2]}/{image_id}.{v.extension}"
    dest = store.root / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)
    return rel


def _verify_and_keep(store: Store, src: Path, image_id: str, attempt: int, run_id: str,
                     cfg: DownloadConfig) -> dict:
    """Verify one fetched file; keep it under files/ when good, delete it when not."""
    v = verify_file(src, cfg.max_pixels, cfg.max_bytes)
    if v.error:
        src.unlink(missing_ok=True)
        return outcome_row(image_id, attempt, run_id, v, None)
    return outcome_row(image_id, attempt, run_id, v, _keep_file(store, src, image_id, v))


def _harvest_row(store: Store, shard_dir: Path, meta: dict, run_id: str, cfg: DownloadConfig) -> dict:
    image_id, attempt = meta["image_id"], int(meta["attempt"])
    if meta["status"] != "success":
        return outcome_row(image_id, attempt, run_id, Verified(f"download failed: {meta['error_message']}"), None)
    src = shard_dir / f"{meta['key']}.jpg"  # img2dataset's fixed extension; real format comes from the bytes
    if not src.exists():  # a killed run verified and moved it already, then died before recording the row
        kept = sorted((store.files_dir / image_id[:2]).glob(f"{image_id}.*"))
        if kept:
            v = verify_file(kept[0], cfg.max_pixels, cfg.max_bytes)
            return outcome_row(image_id, attempt, run_id, v, None if v.error else kept[0].relative_to(store.root).as_posix())
    return _verify_and_keep(store, src, image_id, attempt, run_id, cfg)


def harvest_shard(store: Store, out: Path, stats_file: Path, run_id: str, cfg: DownloadConfig,
                  pool: ThreadPoolExecutor, skip: set[str], early: dict[str, Future] | None = None) -> list[dict]:
    """Verify a finished img2dataset shard, move good files in, append its outcomes, delete the shard.

    `early` holds verifications already started while the shard was still downloading (by key).
    """
    shard = stats_file.name.split("_")[0]
    table = pq.read_table(out / f"{shard}.parquet", columns=["image_id", "attempt", "key", "status", "error_message"])
    metas = [m for m in table.to_pylist() if m["image_id"] not in skip]
    early = early or {}
    futures = [early.pop(m["key"]) if m["key"] in early and m["status"] == "success"
               else pool.submit(_harvest_row, store, out / shard, m, run_id, cfg) for m in metas]
    rows = [f.result() for f in futures]
    _append(store, rows, run_id)
    shutil.rmtree(out / shard, ignore_errors=True)
    for leftover in (out / f"{shard}.parquet", stats_file):
        leftover.unlink(missing_ok=True)
    return rows


def start_early_verifications(store: Store, out: Path, run_id: str, cfg: DownloadConfig, pool: ThreadPoolExecutor,
                              early: dict[str, Future]) -> None:
    """Start verifying files img2dataset has finished writing (its per-sample .json comes after the image)."""
    for shard_dir in out.iterdir():
        if not shard_dir.is_dir():
            continue
        for entry in os.scandir(shard_dir):
            key, ext = os.path.splitext(entry.name)
            if ext != ".json" or key in early:
                continue
            try:
                meta = json.loads(Path(entry.path).read_text())
            except (OSError, ValueError):
                continue  # still being written; picked up on the next scan or at shard end
            early[key] = pool.submit(_verify_and_keep, store, shard_dir / f"{key}.jpg", meta["image_id"],
                                     int(meta["attempt"]), run_id, cfg)


def recover_killed_runs(store: Store, cfg: DownloadConfig, pool: ThreadPoolExecutor) -> int:
    """Harvest finished shards of killed runs (rows not yet ok), then delete their work folders.

    Only under the store lock: then no other download is alive, so every work folder is a dead run's.
    """
    assert_held(store.root, "download's killed-run recovery")
    recovered = 0
    work = store.root / WORK
    for run_dir in sorted(p for p in work.glob("*") if p.is_dir()):
        done = set(store.query("SELECT image_id FROM downloads WHERE run_id = ?", [run_dir.name])
                   .column(0).to_pylist())
        out = run_dir / "out"
        for stats_file in sorted(out.glob("*_stats.json")):
            if (out / f"{stats_file.name.split('_')[0]}.parquet").is_file():
                recovered += len(harvest_shard(store, out, stats_file, run_dir.name, cfg, pool, done))
        shutil.rmtree(run_dir, ignore_errors=True)
        log.info("cleaned work folder of killed run %s (%d outcomes recovered)", run_dir.name, recovered)
    return recovered


def _start_engine(run_dir: Path, cfg: DownloadConfig) -> subprocess.Popen:
    config = {"input": str(run_dir / "input.parquet"), "output": str(run_dir / "out"), "processes": cfg.processes,
              "threads": cfg.threads, "timeout": cfg.timeout, "shard_size": cfg.shard_size,
              "parent_pid": os.getpid(), "allow_private": cfg.allow_private, "max_bytes": cfg.max_bytes,
              "distributor": cfg.distributor}
    (run_dir / "engine.json").write_text(json.dumps(config))
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    if cfg.http_proxy:  # img2dataset fetches with urllib, which reads these; no_proxy must not bypass it
        env.update(http_proxy=cfg.http_proxy, HTTP_PROXY=cfg.http_proxy, no_proxy="", NO_PROXY="")
    with open(run_dir / "engine.log", "ab") as logfile:
        return subprocess.Popen([sys.executable, "-m", "million_ird.stages.engine", str(run_dir / "engine.json")],
                                stdout=logfile, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop_engine(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def fetch_urls(store: Store, todo: pa.Table, run_id: str, cfg: DownloadConfig, pool: ThreadPoolExecutor,
               bar: tqdm) -> list[dict]:
    """Run img2dataset over the `todo` URL rows, harvesting shards while it works."""
    run_dir = store.root / WORK / run_id
    out = run_dir / "out"
    out.mkdir(parents=True)
    pq.write_table(todo.select(["url", "image_id", "attempt"]), run_dir / "input.parquet")
    proc = _start_engine(run_dir, cfg)
    rows: list[dict] = []
    early: dict[str, Future] = {}
    try:
        while True:
            finished = proc.poll() is not None
            start_early_verifications(store, out, run_id, cfg, pool, early)
            for stats_file in sorted(out.glob("*_stats.json")):
                got = harvest_shard(store, out, stats_file, run_id, cfg, pool, set(), early)
                rows.extend(got)
                bar.update(len(got))
            if finished:
                break
            time.sleep(0.05)
    finally:
        _stop_engine(proc)
    if proc.returncode != 0:
        tail = (run_dir / "engine.log").read_text(errors="replace")[-800:]
        raise StoreError(f"img2dataset exited with code {proc.returncode}; its log ends with:\n{tail}\n"
                         f"Outcomes so far are saved; re-run `million-ird download` to resume.")
    shutil.rmtree(run_dir, ignore_errors=True)
    return rows


def verify_local(store: Store, todo: pa.Table, run_id: str, cfg: DownloadConfig, pool: ThreadPoolExecutor,
                 bar: tqdm, chunk: int = 256) -> list[dict]:
    """Verify local-folder rows in place (their absolute path is kept), appending outcomes per chunk."""
    rows: list[dict] = []
    items = todo.select(["image_id", "path", "attempt"]).to_pylist()
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        results = pool.map(lambda r: outcome_row(r["image_id"], r["attempt"], run_id,
                                                 verify_file(Path(r["path"]), cfg.max_pixels, cfg.max_bytes),
                                                 r["path"]), part)
        got = list(results)
        _append(store, got, run_id)
        rows.extend(got)
        bar.update(len(got))
    return rows


def download(store: Store, cfg: DownloadConfig) -> dict:
    """Fetch and verify every image without an ok outcome; returns the run's counts (holds the store lock)."""
    check_config(cfg)
    with store_lock(store.root):  # re-entrant: a no-op under the CLI's lock, the guard for library callers
        return _download(store, cfg)


def _download(store: Store, cfg: DownloadConfig) -> dict:
    store.clean_temp()
    run_id = new_run_id("download")
    started = time.time()
    with ThreadPoolExecutor(cfg.verify_workers) as pool:
        recovered = recover_killed_runs(store, cfg, pool)
        todo = store.query(PENDING_SQL, [cfg.retries])
        todo = todo.append_column("attempt", pc.add(todo.column("attempts"), 1).cast(pa.int32()))
        remote = todo.filter(pc.is_valid(todo.column("url")))
        local = todo.filter(pc.is_null(todo.column("url")))
        with tqdm(total=todo.num_rows, desc="download+verify", unit="img") as bar:
            rows = verify_local(store, local, run_id, cfg, pool, bar) if local.num_rows else []
            if remote.num_rows:
                rows += fetch_urls(store, remote, run_id, cfg, pool, bar)
    ok = [r for r in rows if r["status"] == "ok"]
    seconds = time.time() - started
    stats = {"attempted": len(rows), "ok": len(ok), "failed": len(rows) - len(ok),
             "recovered_from_killed_runs": recovered, "bytes": sum(r["bytes"] for r in ok),
             "seconds": round(seconds, 3), "images_per_s": round(len(rows) / seconds, 2) if seconds else None,
             "errors": dict(Counter(r["error"] for r in rows if r["error"]).most_common(20))}
    store.save_run("download", run_id, cfg, stats)
    return stats
