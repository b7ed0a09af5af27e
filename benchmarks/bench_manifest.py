"""Scale benchmark: a synthetic 2,000,000-row images+downloads store; time `stats` and a selective query.

    python -m benchmarks.bench_manifest [--rows 2000000] [--dir /tmp/bench-manifest]

Targets on a 2-core machine: query <= 1.5 s, stats <= 3 s, peak RSS <= 3 GB (measured on the real CLI).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from million_ird.store import Store, utc_now

SOURCES = np.array(["laion-hr", "DIV2K", "Flickr2K", "LSDIR", "NTIRE"])
QUERY = ("SELECT image_id, path, width, height FROM catalog "
         "WHERE source = 'Flickr2K' AND status = 'ok' AND least(width, height) >= 2000 ORDER BY image_id LIMIT 1000")


def build(store: Store, rows: int, parts: int = 8) -> None:
    """Write `rows` images and one download outcome each (10% failed) in `parts` part files."""
    rng = np.random.default_rng(0)
    now = utc_now()
    for p in range(parts):
        n = rows // parts
        ids = np.char.add("id", (np.arange(n) + p * n).astype(str))
        width = rng.integers(800, 6000, n)
        height = rng.integers(600, 4000, n)
        store.append("images", pa.table({
            "image_id": ids, "source": SOURCES[rng.integers(0, len(SOURCES), n)],
            "url": np.char.add("https://img.example/", ids), "width": width, "height": height,
            "ingested_at": pa.array([now] * n, pa.timestamp("us", tz="UTC"))}))
        ok = rng.random(n) > 0.1
        store.append("downloads", pa.table({
            "image_id": ids, "status": np.where(ok, "ok", "failed"),
            "error": pa.array(np.where(ok, None, "download failed: HTTP Error 404").tolist()),
            "path": np.char.add("files/xx/", ids), "format": np.full(n, "jpeg"), "width": width, "height": height,
            "channels": np.full(n, 3, np.int16), "bit_depth": np.full(n, 8, np.int16),
            "bytes": rng.integers(500_000, 9_000_000, n), "sha256": ids, "attempt": np.ones(n, np.int32)}))


def timed_cli(*args: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one real `million-ird` invocation."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "million_ird.cli", *args], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"million-ird {args[0]} failed with status {status}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024**2


def main() -> None:
    """Build the store if needed, then print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="images (and download outcomes) to synthesise")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench-manifest"), help="where the store is built")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per command (best is reported)")
    args = parser.parse_args()
    store = Store(args.dir)
    if not store.parts("images"):
        t = time.perf_counter()
        build(store, args.rows)
        print(f"built {args.rows:,} rows in {time.perf_counter() - t:.1f} s at {store.root}")
    baseline, _ = timed_cli("--help")
    results = {"stats": [], "query": []}
    for _ in range(args.repeat):
        results["stats"].append(timed_cli("stats", "-m", str(store.root)))
        results["query"].append(timed_cli("query", "-m", str(store.root), QUERY))
    print(f"rows: {args.rows:,}; CLI start-up (--help): {baseline:.2f} s; cores: {os.cpu_count()}")
    for name, target in (("stats", 3.0), ("query", 1.5)):
        wall = min(r[0] for r in results[name])
        rss = max(r[1] for r in results[name])
        print(f"{name:6s} wall {wall:.2f} s (target <= {target} s, includes start-up)  peak RSS {rss:.2f} GB "
              f"(target <= 3 GB)  {'OK' if wall <= target and rss <= 3 else 'MISSED'}")


if __name__ == "__main__":
    main()
