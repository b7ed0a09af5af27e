"""The consensus filter: one DuckDB query over the catalog keeps images that pass every given threshold.

A selection is written as selections/NAME/part-00000.parquet (image_id, selection) plus
selections/NAME/selection.json (thresholds, counts, run id, versions); the data is never copied.

Default thresholds (used only when no metric threshold is given at all): NIQE < 5.0 and
BRISQUE < 35, from scores we measured (benchmarks/bench_iqa.py --distribution) on the natural
photographs bundled with scikit-image and four degradations of each: clean photos scored NIQE
2.6-4.1 and BRISQUE -7 to 30; every degraded variant (Gaussian noise sigma 10/25, Gaussian blur
sigma 2, JPEG quality 10) scored NIQE >= 5.4, and BRISQUE 20-86 (blur/JPEG/sigma-25 noise >= 43).
NIQE < 5 therefore separates clean from degraded on its own; BRISQUE < 35 is a second, looser
check (pristine LIVE images sit around 10-30 on BRISQUE's DMOS-like 0-100 scale) that keeps
every clean photo measured. NIMA (mean of 10 bins) has no default: its weights are user-supplied
(5.0, the AVA mean, is the customary cut).

An existing selection is never replaced by accident: run_filter refuses a NAME that exists unless
`replace` is set. The new folder is always written complete under a temp name in the store root
(outside selections/, so no reader sees it half-written), then renamed into place; with `replace`
it is swapped with the old folder in one step (Linux renameat2 RENAME_EXCHANGE), so a crash leaves
either the old selection or the new one, whole.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import logging
import os
import re
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from million_ird.atomic import TMP_PREFIX
from million_ird.schema import SELECTIONS
from million_ird.store import (
    Store,
    StoreError,
    code_version,
    new_run_id,
    utc_now,
    write_json_atomic,
    write_parquet_atomic,
)

log = logging.getLogger(__name__)

DEFAULT_NIQE = 5.0
DEFAULT_BRISQUE = 35.0
NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
# metric -> (SQL comparison, what a pass means)
RULES = {"niqe": "<", "brisque": "<", "nima": ">"}


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds (None: metric not used), the minimum shorter side, the selection name, dry run, replace."""

    niqe: float | None = None
    brisque: float | None = None
    nima: float | None = None
    min_side: int = 1024
    name: str = "default"
    dry_run: bool = False
    replace: bool = False  # overwrite an existing selections/NAME/ (refused otherwise)

    def with_defaults(self) -> FilterConfig:
        """Fill NIQE < 5 and BRISQUE < 35 when no metric threshold was given."""
        if self.niqe is None and self.brisque is None and self.nima is None:
            return dataclasses.replace(self, niqe=DEFAULT_NIQE, brisque=DEFAULT_BRISQUE)
        return self

    def thresholds(self) -> dict[str, float]:
        """The metrics in use and their thresholds."""
        return {m: v for m, v in (("niqe", self.niqe), ("brisque", self.brisque), ("nima", self.nima)) if v is not None}


def build_sql(cfg: FilterConfig) -> tuple[str, list[float]]:
    """The one query: per ok image its source, a pass flag per rule (NULL score fails) and `kept`.

    It reads the catalog's columns it needs from `catalog_base` and `latest_scores` (the catalog's own
    sources), not the whole `catalog`: the same rows, without the catalog's other joins."""
    flags = ["coalesce(least(b.width, b.height) >= ?, false) AS pass_side"]
    params: list[float] = [cfg.min_side]
    for metric, value in cfg.thresholds().items():
        flags.append(f"coalesce(s.{metric} {RULES[metric]} ?, false) AS pass_{metric}")
        params.append(value)
    names = ["pass_side"] + [f"pass_{m}" for m in cfg.thresholds()]
    outer = ", ".join(["image_id", "source", *cfg.thresholds(), *names]) + f", ({' AND '.join(names)}) AS kept"
    columns = ", ".join(["b.image_id", "b.source", *(f"s.{m}" for m in cfg.thresholds()), *flags])
    sql = (f"SELECT {outer} FROM (SELECT {columns} FROM catalog_base b LEFT JOIN latest_scores s USING (image_id) "
           "WHERE b.status = 'ok') AS c ORDER BY image_id")
    return sql, params


def _check_scores(con: duckdb.DuckDBPyConnection, store: Store, cfg: FilterConfig, result: pa.Table) -> None:
    """Refuse a threshold on a metric no image has a score for (the catalog is asked only when no ok image has one)."""
    for metric in cfg.thresholds():
        if result.column(metric).null_count < result.num_rows:
            continue
        if con.sql(f"SELECT count({metric}) FROM catalog").fetchall()[0][0] == 0:
            how = "--metrics nima --nima-weights PATH" if metric == "nima" else f"--metrics {metric}"
            raise StoreError(f"filtering on {metric} (--{metric} {cfg.thresholds()[metric]}) but no image in "
                             f"{store.root} has a {metric} score; "
                             f"run `million-ird score --manifest {store.root} {how}` first")


def _count(mask: pa.Array | pa.ChunkedArray) -> int:
    """How many rows of a boolean column are true."""
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def summarise(result: pa.Table, cfg: FilterConfig) -> tuple[list[dict], dict[str, int]]:
    """Kept/total per source, and how many images each rule rejected (a rule counted independently)."""
    groups = result.group_by("source", use_threads=False).aggregate([("kept", "count"), ("kept", "sum")])
    per_source = [{"source": g["source"], "kept": int(g["kept_sum"] or 0), "total": int(g["kept_count"])}
                  for g in groups.sort_by("source").to_pylist()]
    rejected = {"min_side": _count(pc.invert(result.column("pass_side")))}
    for metric in cfg.thresholds():
        scored = pc.is_valid(result.column(metric))
        rejected[metric] = _count(pc.and_(pc.invert(result.column(f"pass_{metric}")), scored))
        rejected[f"{metric}_unscored"] = result.num_rows - _count(scored)
    return per_source, rejected


def run_filter(store: Store, cfg: FilterConfig) -> dict:
    """Apply the consensus predicate, write selections/NAME/ (unless dry run) and return the counts."""
    if not NAME_RE.match(cfg.name):
        raise StoreError(f"--name {cfg.name!r}: use letters, digits, '.', '_' or '-' only")
    exists = selection_path(store, cfg.name).exists()
    if exists and not cfg.dry_run and not cfg.replace:
        raise StoreError(_exists_message(cfg.name, selection_path(store, cfg.name)))
    cfg = cfg.with_defaults()
    sql, params = build_sql(cfg)
    with store.connect(derive=("catalog_base", "latest_scores")) as con:
        result = con.sql(sql, params=params).to_arrow_table()
        _check_scores(con, store, cfg, result)
    per_source, rejected = summarise(result, cfg)
    kept_ids = result.filter(result.column("kept")).column("image_id")
    run_id = new_run_id("filter")
    record = {"name": cfg.name, "run_id": run_id, "created_at": utc_now().isoformat(), "config": asdict(cfg),
              "thresholds": {m: f"{RULES[m]} {v}" for m, v in cfg.thresholds().items()},
              "min_side": cfg.min_side, "kept": len(kept_ids), "total": result.num_rows,
              "per_source": per_source, "rejected_by": rejected, "sql": sql, "versions": code_version(),
              "replaced": exists and not cfg.dry_run}
    if not cfg.dry_run:
        table = pa.table({"image_id": kept_ids.cast(pa.string()),
                          "selection": pa.repeat(pa.scalar(cfg.name, pa.string()), len(kept_ids))}, schema=SELECTIONS)
        write_selection(store, cfg.name, table, record, cfg.replace)
        store.save_run("filter", run_id, cfg, {k: record[k] for k in ("kept", "total", "per_source", "rejected_by")})
    return record


def selection_path(store: Store, name: str) -> Path:
    """Where selection `name` lives."""
    return store.root / "selections" / name


def _exists_message(name: str, folder: Path) -> str:
    return (f"selection {name!r} already exists ({folder}); choose another --name, "
            "or pass --replace to overwrite it")


def write_selection(store: Store, name: str, table: pa.Table, record: dict, replace_existing: bool) -> Path:
    """Write selections/NAME/ whole: build it under a temp name, then rename it in (or swap it with the old one)."""
    folder = selection_path(store, name)
    tmp = store.root / f"{TMP_PREFIX}{uuid.uuid4().hex}-selection-{name}"  # outside selections/: never read
    try:
        write_parquet_atomic(table, tmp / "part-00000.parquet")
        write_json_atomic(record, tmp / "selection.json")
        _fsync(tmp / "selection.json", tmp)
        folder.parent.mkdir(parents=True, exist_ok=True)
        if folder.exists():
            if not replace_existing:
                raise StoreError(_exists_message(name, folder))
            exchange_dirs(tmp, folder)  # tmp now holds the old selection, removed below
        else:
            os.rename(tmp, folder)
        _fsync(folder.parent)
    except OSError as exc:
        raise StoreError(f"cannot write selection {name!r} to {folder}: {exc}; the previous state is kept") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _fsync(*paths: Path) -> None:
    """Flush files and folders to disk before a rename makes them visible (best effort: not every OS can)."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def exchange_dirs(a: Path, b: Path) -> None:
    """Swap two directories in one step (Linux renameat2); elsewhere rename `b` aside, `a` in, the old one to `a`."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):
        renameat2 = None
    if renameat2 is not None:
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # not "this filesystem cannot exchange"
            raise OSError(err, os.strerror(err), str(b))
    log.warning("%s: no atomic directory exchange here; replacing in two renames", b)
    aside = a.with_name(a.name + ".old")
    os.rename(b, aside)
    try:
        os.rename(a, b)
    except OSError:
        os.rename(aside, b)
        raise
    os.rename(aside, a)
