"""The splits stage: one `pairs` row per planned pair (see `million_ird.stages.split_plan` for the plans).

A pair is either real (clean + degraded files), generated once (a test set degraded here, written as PNG
under files/splits/<fingerprint>/ with its sha256 in `params`), or on the fly (clean + degradation + seed +
`params.args`; a trainer calls `degradations.get(degradation)(clean, degradations.rng_from_seed(seed),
**params["args"])`). The plan is written to `_work/splits-plan-<run_id>.parquet` for the run and read by
the driver's pending query, which keeps the pairs not yet written under the plan's fingerprint: the
same config and sources again is a no-op, a new seed, sigma list or patch size writes a new set. Every run
records its plan's pair set (`pair_sets`: set id, pair id, fingerprint; a set already recorded is not
written again) and names it in its run record; `latest_pairs` shows, per recipe, the set of the latest
finished run, so pairs of images that are no longer a source (dropped by dedup, past --limit, of
another patch size, whole images once patches exist) leave with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
from tqdm import tqdm

import degradations
from million_ird import driver, images
from million_ird.images import MEMBER_REF, ImageError, read_image, resolve, to_uint8
from million_ird.lock import store_lock
from million_ird.schema import PAIRS
from million_ird.stage import Stage
from million_ird.stages.split_plan import (
    PLAN,
    Planned,
    SplitError,
    SplitPlan,
    SplitsConfig,
    plan_table,
)
from million_ird.store import Store, new_run_id, plain, write_parquet_atomic

log = logging.getLogger(__name__)

FILES_DIR = "files/splits"  # generated PNGs: FILES_DIR/<fingerprint>/<pair_id>.png
WORK = "_work"
PLAN_PREFIX = "splits-plan-"


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file (or shard member) as uint8 RGB by million_ird.images' rules."""
    try:
        return to_uint8(read_image(path, rgb=True))
    except ImageError as exc:
        raise SplitError(f"{exc}; check the file exists and is a valid image") from exc


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG (through a temp name, then rename)."""
    try:
        images.write_png(path, image)
    except (ImageError, OSError) as exc:
        raise SplitError(f"cannot write {path}: {exc}; check the folder is writable") from exc


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(images.read_bytes(path)).hexdigest()


def pixels_sha256(image: np.ndarray) -> str:
    """sha256 of an image's shape and pixel bytes (independent of the PNG encoder)."""
    return hashlib.sha256(repr(image.shape).encode() + np.ascontiguousarray(image).tobytes()).hexdigest()


def derive(clean: np.ndarray, degradation: str, args: dict[str, Any], seed: int) -> tuple[np.ndarray, dict]:
    """Re-create a degraded image from its spec: degradation name, its arguments and the per-pair seed."""
    return degradations.get(degradation)(clean, degradations.rng_from_seed(seed), **args)


def rederive(store: Store, row: dict[str, Any]) -> np.ndarray:
    """The degraded image of a stored pair row, re-created from its clean file, spec and stored seed."""
    params = json.loads(row["params"] or "{}")
    return derive(read_rgb(resolve(store.root, row["clean"])), row["degradation"], params["args"], row["seed"])[0]


def _row(p: Planned, recipe: str, fingerprint: str, degraded: str | None, seed: int | None,
         params: dict[str, Any]) -> dict[str, Any]:
    return {"pair_id": p.pair_id, "recipe": recipe, "split": p.split, "task": p.task, "clean": p.clean,
            "degraded": degraded, "degradation": p.degradation, "params": json.dumps(params, sort_keys=True),
            "seed": seed, "sigma": p.sigma, "fingerprint": fingerprint}


def execute(root: Path, p: Planned, cfg: SplitsConfig, fingerprint: str) -> dict[str, Any]:
    """Turn a planned pair into a `pairs` row, generating and hashing the degraded image when needed."""
    if p.degradation is None:
        return _row(p, cfg.recipe, fingerprint, p.degraded, None, dict(p.meta))
    seed = degradations.sample_seed(cfg.seed, p.pair_id, p.degradation)
    params: dict[str, Any] = {"args": p.args, "global_seed": cfg.seed, **p.meta}
    if not (p.materialize or p.digest):
        return _row(p, cfg.recipe, fingerprint, None, seed, params)
    out, used = derive(read_rgb(resolve(root, p.clean)), p.degradation, p.args, seed)
    params.update(used=used, pixels_sha256=pixels_sha256(out))
    degraded = None
    if p.materialize:
        rel = Path(FILES_DIR) / fingerprint / f"{p.pair_id}.png"
        write_png(root / rel, out)
        params["sha256"] = file_sha256(root / rel)
        degraded = rel.as_posix()
    return _row(p, cfg.recipe, fingerprint, degraded, seed, params)


class SplitStage(Stage):
    """Planned pairs (read from the run's plan file) -> one `pairs` row each, generated files written first."""

    name = "splits"
    table = "pairs"
    key = "pair_id"
    needs = tuple(PLAN.names[1:])
    batch_size = 256

    def __init__(self, root: Path, cfg: SplitsConfig, fingerprint: str, plan_file: Path) -> None:
        self.root, self.cfg, self.plan_file, self._fp = root, cfg, plan_file, fingerprint

    def candidates_sql(self) -> tuple[str, list[Any]]:
        """Every planned pair, read from the plan file."""
        return "SELECT * FROM read_parquet(?)", [str(self.plan_file)]

    def fingerprints(self) -> dict[str, str]:
        """One unit: the split's config and what its pairs are made from."""
        return {"": self._fp}

    def setup(self) -> None:
        """One OpenCV thread per worker process."""
        cv2.setNumThreads(1)

    def summary_sql(self) -> str:
        """Pairs the run wrote per split/task and how many files it generated."""
        return ("SELECT coalesce(string_agg(split || '/' || task || ':' || n, ', ' ORDER BY split, task), '') "
                "AS written, coalesce(sum(files), 0)::BIGINT AS generated FROM (SELECT split, task, count(*) AS n, "
                "count(degraded) FILTER (WHERE degradation IS NOT NULL) AS files FROM pairs WHERE run_id = ? "
                "GROUP BY ALL)")

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Execute every planned pair of the batch (each row on its own: real, generated or on the fly)."""
        rows = [execute(self.root, Planned.from_row(r), self.cfg, self._fp) for r in batch.to_pylist()]
        return pa.RecordBatch.from_pylist(rows, schema=PAIRS)


def pair_set_id(fingerprint: str, pair_ids: list[str]) -> str:
    """Content address of a pair set: a hash of its fingerprint and its sorted pair ids."""
    digest = hashlib.sha256(fingerprint.encode())
    for pair_id in sorted(pair_ids):
        digest.update(b"\n" + pair_id.encode())
    return digest.hexdigest()[:16]


def record_pair_set(store: Store, plan: SplitPlan, run_id: str) -> str:
    """Write the plan's pair set to `pair_sets` unless a run already recorded it; returns its id."""
    ids = [p.pair_id for p in plan.pairs]
    set_id = pair_set_id(plan.fingerprint, ids)
    if not store.query("SELECT count(*) FROM pair_sets WHERE set_id = ?", [set_id]).column(0)[0].as_py():
        n = len(ids)
        store.append("pair_sets", pa.table({"set_id": [set_id] * n, "pair_id": ids,
                                            "fingerprint": [plan.fingerprint] * n, "run_id": [run_id] * n}), run_id)
    return set_id


def run_splits(store: Store, cfg: SplitsConfig, plan: SplitPlan,
               run: driver.DriverConfig | None = None) -> dict[str, Any]:
    """Write the plan's pairs not yet written under its fingerprint, through the driver; the run record names
    the plan's pair set (recorded first), which `latest_pairs` then shows for the recipe."""
    with store_lock(store.root):  # re-entrant: a no-op under the CLI's lock
        work = store.root / WORK
        for stale in work.glob(f"{PLAN_PREFIX}*.parquet"):  # a killed run's (no other writer is alive)
            stale.unlink()
        run_id = new_run_id("splits")
        plan_file = write_parquet_atomic(plan_table(plan.pairs), work / f"{PLAN_PREFIX}{run_id}.parquet")
        config = {**plain(cfg), **plan.record(), "pair_set": record_pair_set(store, plan, run_id)}
        try:
            stats = driver.run(store, SplitStage(store.root, cfg, plan.fingerprint, plan_file),
                               run or driver.DriverConfig(), run_id=run_id, config=config)
        finally:
            plan_file.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # left when another stage (download) works there too
                work.rmdir()
    stats["planned"] = len(plan.pairs)
    return stats


def verify(store: Store, recipe: str | None = None) -> tuple[int, list[tuple[str, str]]]:
    """Re-check every pair in force: files exist, stored sha256 match, and specs re-derive the same pixels."""
    sql = "SELECT * FROM latest_pairs" + (" WHERE recipe = ?" if recipe else "") + " ORDER BY pair_id"
    table = store.query(sql, [recipe] if recipe else [])
    problems: list[tuple[str, str]] = []
    for row in tqdm(table.to_pylist(), desc="verify", unit="pair", disable=table.num_rows == 0):
        problems += [(row["pair_id"], why) for why in _check_row(store, row)]
    return table.num_rows, problems


def _stored(path: Path) -> bool:
    """True when a stored file, or the shard of a patch-shard member (`SHARD.tar#OFFSET+NBYTES`), exists."""
    ref = MEMBER_REF.match(str(path))
    return Path(ref["shard"]).is_file() if ref else path.is_file()


def _check_row(store: Store, row: dict[str, Any]) -> Iterator[str]:
    params = json.loads(row["params"] or "{}")
    clean = resolve(store.root, row["clean"])
    if not _stored(clean):
        yield f"clean file missing: {clean}"
        return
    if row["degraded"]:
        path = resolve(store.root, row["degraded"])
        if not path.is_file():
            yield f"degraded file missing: {path}"
            return
        if "sha256" in params and file_sha256(path) != params["sha256"]:
            yield f"sha256 of {path} differs from the stored one"
    if row["degradation"] is None:
        return
    if "global_seed" in params and row["seed"] != degradations.sample_seed(params["global_seed"], row["pair_id"],
                                                                            row["degradation"]):
        yield "seed is not the one derived from (global_seed, pair_id, degradation)"
    if "pixels_sha256" in params:
        out, _ = derive(read_rgb(clean), row["degradation"], params["args"], row["seed"])
        if pixels_sha256(out) != params["pixels_sha256"]:
            yield "re-derived pixels differ from the stored digest"
        elif row["degraded"] and not np.array_equal(read_rgb(resolve(store.root, row["degraded"])), out):
            yield "degraded file pixels differ from the re-derived image"


def summary_rows(store: Store, stats: dict[str, Any]) -> list[dict[str, object]]:
    """Rows of (split, task, pairs) the run wrote, then the planned pairs it skipped as already written."""
    written = store.query("SELECT split, task, count(*) AS pairs FROM pairs WHERE run_id = ? GROUP BY ALL "
                          "ORDER BY ALL", [stats["run_id"]]).to_pylist()
    return [*written, {"split": "skipped", "task": "already written", "pairs": stats["planned"] - stats["pending"]}]


def iter_rows(store: Store, recipe: str) -> list[dict[str, Any]]:
    """The pair rows in force of a recipe (`latest_pairs`), ordered by task then pair_id."""
    return store.query("SELECT * FROM latest_pairs WHERE recipe = ? ORDER BY task, pair_id", [recipe]).to_pylist()
