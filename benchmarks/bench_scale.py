"""Scale benchmark: time the store's hot paths on a synthetic store and print each figure against its target.

    python -m benchmarks.make_synthetic_store --out DIR --images 2000000
    python -m benchmarks.bench_scale --store DIR [--images 2000000] [--work SCRATCH] [--json OUT]

Each step runs in its own Python process (its peak RSS, from wait4, is the step's; the timed span
excludes imports): ingest of the store's LAION metadata file into a fresh store (the real
`million_ird.sources.ingest.ingest`), `store_stats`, `million-ird stats` through the real CLI
(start-up included), a selective `query`, a dry-run consensus filter (NIQE < 5, BRISQUE < 40), the
driver's pending anti-join for `score` with every image done and with ~10% not done, a full
streamed scan of `catalog`, parts per table, `compact` of a copy of `scores` with 500 small parts
added (part count and a content hash before and after), and the parts a score run of every image
leaves (the driver's own part buffer and compaction, into a scratch store). The store's derived
files (million_ird.derived) are removed first, so the first call of a step that reads a view they
serve shows the cold cost (building them); the best of --repeat calls is the warm one. Targets are
for a 2-core machine; a miss prints MISS, never fails. Scratch stores go under --work (default:
DIR-bench beside DIR). The load average is printed before and after: other work on the machine
slows every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from million_ird.derived import DERIVED_DIR
from million_ird.schema import SCHEMAS
from million_ird.store import Store

ROOT = Path(__file__).resolve().parents[1]
LAION_FILE = "inputs/laion-hr-meta.parquet"  # as benchmarks.make_synthetic_store writes it
QUERY = ("SELECT image_id, path, width, height FROM catalog WHERE source = 'Flickr2K' AND status = 'ok' "
         "AND least(width, height) >= 1200 ORDER BY image_id LIMIT 1000")
HASH_SQL = "SELECT count(*) AS n, sum(hash(t))::VARCHAR AS h FROM {table} t"  # order-free, duplicate-safe
UNDONE = "hash(image_id) % 10 = 0"  # the ~10% of images whose scores the pending-10% copy lacks
SMALL_PARTS, SMALL_ROWS = 500, 200
RSS_TARGET_GB = 3.0
TARGETS = {  # figure -> (target, unit); None: reported only
    "ingest_s": (30.0, "s"), "stats_s": (1.5, "s"), "cli_stats_s": (3.0, "s"), "query_s": (1.5, "s"),
    "filter_s": (1.5, "s"), "pending_done_s": (2.0, "s"), "pending_10pct_s": (2.0, "s"),
    "catalog_scan_s": (None, "s"), "compact_s": (None, "s"),
}


def _timed(name: str, fn: Callable[[], Any], repeat: int) -> tuple[dict[str, float], Any]:
    """Figures `name`_s (best wall of `repeat` calls), _first_s and _cpu_s (process CPU of the best), and the last result."""
    runs, result = [], None
    for _ in range(max(1, repeat)):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    best = min(runs)
    return {f"{name}_s": best[0], f"{name}_first_s": runs[0][0], f"{name}_cpu_s": best[1]}, result


def step_ingest(store: Store, work: Path, repeat: int) -> dict:
    """Ingest the LAION metadata file into a fresh store under `work`."""
    from million_ird.lock import store_lock
    from million_ird.sources.common import IngestConfig
    from million_ird.sources.ingest import IngestInputs, ingest

    fresh = work / "ingest-store"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(parents=True)
    with store_lock(fresh):
        figures, stats = _timed("ingest", lambda: ingest(Store(fresh), IngestInputs(parquet=(store.root / LAION_FILE,)),
                                                         IngestConfig(source="laion-hr")), 1)
    return {**figures, "ingest_new": stats["new"], "ingest_rejected": stats["rejected"]}


def step_stats(store: Store, work: Path, repeat: int) -> dict:
    """`million_ird.stats.store_stats` on the store."""
    from million_ird.stats import store_stats

    figures, result = _timed("stats", lambda: store_stats(store), repeat)
    return {**figures, "stats_images": result["total"]["images"]}


def step_query(store: Store, work: Path, repeat: int) -> dict:
    """A selective query over `catalog`."""
    figures, result = _timed("query", lambda: store.query(QUERY), repeat)
    return {**figures, "query_rows": result.num_rows}


def step_filter(store: Store, work: Path, repeat: int) -> dict:
    """A dry-run consensus filter: NIQE < 5 and BRISQUE < 40 (side >= 1024)."""
    from million_ird.filter import FilterConfig, run_filter

    cfg = FilterConfig(niqe=5.0, brisque=40.0, name="bench-scale", dry_run=True)
    figures, result = _timed("filter", lambda: run_filter(store, cfg), repeat)
    return {**figures, "filter_kept": result["kept"], "filter_total": result["total"]}


def _pending(store: Store, repeat: int, name: str) -> dict:
    from million_ird.driver import pending
    from million_ird.stages.score import ScoreConfig, ScoreStage

    stage = ScoreStage(store.root, ScoreConfig())
    figures, result = _timed(name, lambda: pending(store, stage), repeat)
    return {**figures, f"{name}_rows": result.num_rows}


def step_pending_done(store: Store, work: Path, repeat: int) -> dict:
    """The driver's pending anti-join for `score` (niqe, brisque) when every ok image is scored."""
    return _pending(store, repeat, "pending_done")


def step_pending_10pct(store: Store, work: Path, repeat: int) -> dict:
    """The same on a copy whose scores lack ~10% of the images (the copy is made first, untimed)."""
    copy = linked_copy(store, work / "pending-store", skip=("scores",))
    out = copy.root / "scores"
    out.mkdir()
    import duckdb

    with duckdb.connect() as con:
        for part in store.parts("scores"):
            con.execute(f"COPY (SELECT * FROM read_parquet('{part}') WHERE NOT ({UNDONE})) TO "
                        f"'{out / part.name}' (FORMAT parquet, COMPRESSION zstd)")
    expected = store.query(f"SELECT count(*) AS n FROM catalog WHERE status = 'ok' AND {UNDONE}")["n"][0].as_py()
    return {**_pending(copy, repeat, "pending_10pct"), "pending_10pct_expected": expected}


def step_catalog(store: Store, work: Path, repeat: int) -> dict:
    """Every row and column of `catalog`, streamed in record batches."""
    def scan() -> int:
        with store.connect() as con:
            reader = con.sql("SELECT * FROM catalog").to_arrow_reader(100_000)
            return sum(batch.num_rows for batch in reader)

    figures, rows = _timed("catalog_scan", scan, repeat)
    return {**figures, "catalog_rows": rows}


def step_compact(store: Store, work: Path, repeat: int) -> dict:
    """Add 500 small parts to a linked copy of `scores`, compact it, compare part counts and content hash."""
    from million_ird.compact import compact
    from million_ird.lock import store_lock

    copy = linked_copy(store, work / "compact-store", only=("scores",))
    sample = pa.concat_tables(pq.read_table(p) for p in store.parts("scores")[:2]).slice(0, SMALL_PARTS * SMALL_ROWS)
    per = max(1, min(SMALL_ROWS, sample.num_rows // SMALL_PARTS))  # a tiny store still gets 500 parts
    sample = sample.set_column(sample.schema.get_field_index("run_id"), "run_id",
                               pa.array(["bench-compact"] * sample.num_rows, pa.string()))
    for i in range(SMALL_PARTS):
        copy.append("scores", sample.slice(i * per, per), run_id=f"zz-bench-compact-{i:04d}")
    original = len(store.parts("scores"))
    before = copy.query(HASH_SQL.format(table="scores")).to_pylist()[0]
    with store_lock(copy.root):
        figures, result = _timed("compact", lambda: compact(copy, "scores"), 1)
    after = copy.query(HASH_SQL.format(table="scores")).to_pylist()[0]
    return {**figures, "compact_parts_before": result["parts_before"],
            "compact_parts_after": result["parts_after"], "compact_parts_original": original,
            "compact_hash_same": before == after, "compact_rows": after["n"]}


def step_score_parts(store: Store, work: Path, repeat: int) -> dict:
    """Parts per table after a score run of every image of the store (niqe, brisque) into a scratch store:
    the driver's own buffering (`PartBuffer`, DriverConfig defaults) and end-of-run compaction."""
    import numpy as np

    from million_ird.compact import compact
    from million_ird.driver import DriverConfig, PartBuffer
    from million_ird.lock import store_lock
    from million_ird.stages.score import ScoreConfig, ScoreStage

    scratch = Store(work / "score-parts-store")
    shutil.rmtree(scratch.root, ignore_errors=True)
    scratch.root.mkdir(parents=True)
    stage = ScoreStage(scratch.root, ScoreConfig())
    images = sum(pq.ParquetFile(p).metadata.num_rows for p in store.parts("images"))
    units = stage.fingerprints()
    per_batch = 4096  # images per output batch (a stage yields smaller ones; the buffer sees the same rows)
    started = time.perf_counter()
    with store_lock(scratch.root):
        buffer = PartBuffer(scratch, stage, "bench-score-parts", DriverConfig(progress=False))
        for first in range(0, images, per_batch):
            n = min(per_batch, images - first)
            ids = pa.array([f"{i:020x}" for i in range(first, first + n)] * len(units), pa.string())
            k = len(ids)
            buffer.add(pa.RecordBatch.from_pydict({
                "image_id": ids, "metric": pa.array([u for u in units for _ in range(n)], pa.string()),
                "value": pa.array(np.random.default_rng(first).normal(20, 10, k)),
                "fingerprint": pa.array([fp for fp in units.values() for _ in range(n)], pa.string()),
                "seconds": pa.array(np.full(k, 0.5))}))
        buffer.flush()
        compact(scratch, "scores", only="bench-score-parts")
    return {"score_run_images": images, "score_run_rows": buffer.written, "score_run_s": time.perf_counter() - started,
            "score_run_parts": len(scratch.parts("scores"))}


def linked_copy(store: Store, dest: Path, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None) -> Store:
    """A scratch store whose part files (and runs/, selections/) are symlinks to `store`'s."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for table in SCHEMAS:
        if table in skip or (only is not None and table not in only):
            continue
        (dest / table).mkdir()
        for part in store.parts(table):
            (dest / table / part.name).symlink_to(part)
    for folder in ("runs", "selections"):
        if only is None and (store.root / folder).exists():
            (dest / folder).symlink_to(store.root / folder)
    return Store(dest)


STEPS: dict[str, Callable[[Store, Path, int], dict]] = {
    "ingest": step_ingest, "stats": step_stats, "query": step_query, "filter": step_filter,
    "pending_done": step_pending_done, "pending_10pct": step_pending_10pct, "catalog": step_catalog,
    "compact": step_compact, "score_parts": step_score_parts,
}


def run_child(argv: list[str], result: Path | None = None) -> tuple[float, float, dict]:
    """Run one Python process; its wall seconds, peak RSS (GB, from wait4) and the JSON it left in `result`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(argv)} failed (wait status {status})")
    data = json.loads(result.read_text()) if result is not None else {}
    return wall, usage.ru_maxrss / 1024**2, data


def measure(store: Store, work: Path, steps: list[str], repeat: int) -> tuple[dict, dict[str, float]]:
    """Every step in its own process; the figures they report and the peak RSS of each."""
    figures: dict[str, Any] = {}
    rss: dict[str, float] = {}
    result = work / "step-result.json"
    for step in steps:
        _, rss[step], data = run_child(["-m", "benchmarks.bench_scale", "--store", str(store.root), "--work",
                                        str(work), "--repeat", str(repeat), "--step", step, "--result", str(result)],
                                       result)
        figures.update(data)
    cli = [run_child(["-m", "million_ird.cli", "stats", "--manifest", str(store.root)]) for _ in range(max(1, repeat))]
    figures["cli_stats_s"] = min(c[0] for c in cli)
    rss["cli_stats"] = max(c[1] for c in cli)
    return figures, rss


def _load(avg: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.1f}" for x in avg)


def verdict(ok: bool) -> str:
    """PASS or MISS."""
    return "PASS" if ok else "MISS"


def report_rows(figures: dict, rss: dict[str, float], parts: dict[str, int], images: int | None) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, verdict) rows of the printed table."""
    rows = []
    for name, (target, unit) in TARGETS.items():
        if name not in figures:
            continue
        first, cpu = figures.get(name[:-2] + "_first_s"), figures.get(name[:-2] + "_cpu_s")
        extra = [f"first {first:.2f}"] if first is not None and first != figures[name] else []
        extra += [f"cpu {cpu:.2f}"] if cpu is not None else []
        value = f"{figures[name]:.2f} {unit}" + (f" ({', '.join(extra)})" if extra else "")
        rows.append((name, value, "-" if target is None else f"<= {target} {unit}",
                     "-" if target is None else verdict(figures[name] <= target)))
    checks = {
        "ingest rows (new + rejected)": (figures["ingest_new"] + figures["ingest_rejected"] if "ingest_new" in figures
                                         else None, figures.get("laion_rows")),
        "pending rows, all done": (figures.get("pending_done_rows"), 0),
        "pending rows, ~10% not done": (figures.get("pending_10pct_rows"), figures.get("pending_10pct_expected")),
        "store images": (figures.get("store_images"), images),
        "stats images": (figures.get("stats_images"), images),
        "catalog rows": (figures.get("catalog_rows"), images),
    }
    for name, (got, want) in checks.items():
        if got is not None:
            rows.append((name, f"{got:,}", "-" if want is None else f"= {want:,}", "-" if want is None else verdict(got == want)))
    if "filter_kept" in figures:
        rows.append(("filter kept / ok", f"{figures['filter_kept']:,} / {figures['filter_total']:,}", "-", "-"))
    if "compact_parts_after" in figures:
        f = figures
        rows.append(("compact parts (original + 500 small)", f"{f['compact_parts_before']} -> {f['compact_parts_after']}",
                     f"<= {f['compact_parts_original'] + 1}", verdict(f["compact_parts_after"] <= f["compact_parts_original"] + 1)))
        rows.append(("compact content hash unchanged", str(f["compact_hash_same"]), "True", verdict(f["compact_hash_same"])))
    for step, gb in rss.items():
        rows.append((f"peak RSS {step}", f"{gb:.2f} GB", f"<= {RSS_TARGET_GB} GB", verdict(gb <= RSS_TARGET_GB)))
    for table, n in parts.items():
        rows.append((f"parts {table}", str(n), "<= 50", verdict(n <= 50)))
    if "score_run_parts" in figures:
        f = figures
        rows.append((f"parts scores after a {f['score_run_images']:,}-image score run",
                     f"{f['score_run_parts']} ({f['score_run_rows']:,} rows, {f['score_run_s']:.0f} s)", "<= 50",
                     verdict(f["score_run_parts"] <= 50)))
    return rows


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    """The rows as an aligned text table."""
    widths = [max(len(r[i]) for r in rows + [("figure", "value", "target", "")]) for i in range(4)]
    for row in [("figure", "value", "target", ""), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def main(argv: list[str] | None = None) -> None:
    """Run the steps (or, with --step, one of them in this process) and print the figures against targets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="a store built by benchmarks.make_synthetic_store")
    parser.add_argument("--images", type=int, default=None, help="images the store should hold (checked)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder [default: STORE-bench beside it]")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per step (best and first are reported)")
    parser.add_argument("--only", nargs="*", choices=sorted(STEPS), default=None, help="run only these steps")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    parser.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    store = Store(args.store)
    work = (args.work or store.root.with_name(store.root.name + "-bench")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.step:  # child mode: one step, its figures to --result
        args.result.write_text(json.dumps(STEPS[args.step](store, work, args.repeat)))
        return
    if not store.parts("images"):
        raise SystemExit(f"{store.root} holds no store; build one with `python -m benchmarks.make_synthetic_store`")
    shutil.rmtree(store.root / DERIVED_DIR, ignore_errors=True)  # first calls: cold
    load_before = os.getloadavg()
    figures, rss = measure(store, work, args.only or list(STEPS), args.repeat)
    figures["laion_rows"] = pq.ParquetFile(store.root / LAION_FILE).metadata.num_rows
    parts = {t: len(store.parts(t)) for t in SCHEMAS if store.parts(t)}
    figures["store_images"] = sum(pq.ParquetFile(p).metadata.num_rows for p in store.parts("images"))
    print(f"store {store.root}: {figures['store_images']:,} images; {os.cpu_count()} cores; "
          f"best of {args.repeat} calls per step (first call and "
          f"process CPU seconds in brackets), each step in its own process; load average (1, 5, 15 min) "
          f"{_load(load_before)} before, {_load(os.getloadavg())} after")
    print_table(report_rows(figures, rss, parts, args.images))
    if args.json:
        args.json.write_text(json.dumps({"figures": figures, "peak_rss_gb": rss, "parts": parts}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
