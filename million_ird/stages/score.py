"""The score stage: NIQE / BRISQUE / NIMA for every ok image of the store, appended to `scores/`.

Input handling (documented for users): files are decoded with OpenCV (Pillow as fallback for
formats OpenCV lacks); BGR(A) becomes RGB and an alpha channel is dropped (colour values used as
stored, not composited); 16-bit images are reduced to 8 bits by round(v / 257); grayscale images
go to NIQE/BRISQUE as they are (MATLAB's rgb2gray is skipped for 2-D input, as in LIVE's code)
and to NIMA replicated to three channels. Anything else (float TIFF/EXR, undecodable files,
images under 96 px for NIQE) gives an error row with the reason.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from million_ird import iqa
from million_ird.iqa import nss
from million_ird.iqa.nima import NimaUnavailable, resolve_weights
from million_ird.runner import run_stage
from million_ird.schema import SCORES
from million_ird.stages.base import Stage
from million_ird.store import Store, new_run_id, utc_now

log = logging.getLogger(__name__)
SCORE_ERRORS = (ValueError, OSError, cv2.error, np.linalg.LinAlgError, RuntimeError)


@dataclass(frozen=True)
class ScoreConfig:
    """What `million-ird score` runs: metrics, parallelism, device and parameter files."""

    metrics: tuple[str, ...] = ("niqe", "brisque")
    workers: int = 1
    device: str = "cpu"
    batch_size: int = 16
    niqe_params: str | None = None
    nima_weights: str | None = None
    images_per_task: int = 32
    rows_per_part: int = 1024
    retry_errors: bool = False
    limit: int | None = None


def load_image(path: Path) -> np.ndarray:
    """Decode an image file to RGB (HxWx3) or gray (HxW), uint8 or uint16; raises ValueError with the reason."""
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        img = _load_with_pillow(path)
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: unsupported sample type {img.dtype} (need 8- or 16-bit integer images)")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3:
        if img.shape[2] not in (3, 4):
            raise ValueError(f"{path}: {img.shape[2]} channels; expected gray, RGB or RGBA")
        img = np.ascontiguousarray(img[:, :, 2::-1])  # BGR(A) -> RGB, alpha dropped
    return img


def _load_with_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.seek(0)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.asarray(im, dtype=np.uint16) if im.mode != "I" else np.asarray(im).astype(np.uint16)
            rgb = im.convert("L" if im.mode in ("L", "1", "LA") else "RGB")
            arr = np.asarray(rgb)
            return arr[:, :, ::-1].copy() if arr.ndim == 3 else arr  # BGR like OpenCV
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode {path}: {exc}") from exc


class ScoreStage(Stage):
    """Scores a batch of (image_id, path) rows; one output row per input row, errors recorded in the row."""

    name = "score"
    needs = ("image_id", "path")
    output_schema = SCORES

    def __init__(self, cfg: ScoreConfig, run_id: str) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.metrics: list[iqa.Metric] = []

    def build(self) -> None:
        """Create the metric objects (nothing loaded yet)."""
        if not self.metrics:
            opts = iqa.MetricOptions(niqe_params=self.cfg.niqe_params, nima_weights=self.cfg.nima_weights,
                                     device=self.cfg.device, batch_size=self.cfg.batch_size)
            self.metrics = [iqa.get(m, opts) for m in self.cfg.metrics]

    def setup(self) -> None:
        """Build and load the metrics once per worker."""
        if self.cfg.workers > 1:
            cv2.setNumThreads(1)
        self.build()
        for m in self.metrics:
            m.setup()

    def describe(self) -> tuple[str, str, str]:
        """(metrics, scorer_version, params_sha256) stored with every row: per-metric lists `pending` reads back."""
        names = ",".join(m.name for m in self.metrics)
        version = ",".join(m.full_version for m in self.metrics)
        sha = ",".join(f"{m.name}:{m.params_sha256}" for m in self.metrics)
        return names, version, sha

    def _score_one(self, img: np.ndarray) -> dict[str, float]:
        gray = nss.to_gray(img) if any(m.accepts_gray for m in self.metrics) else None
        out = {}
        for m in self.metrics:
            if m.name == "nima":
                continue
            value = m.score(gray if m.accepts_gray else img)
            if not np.isfinite(value):
                raise ValueError(f"{m.name} is not finite ({value}): flat or constant image")
            out[m.name] = float(value)
        return out

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Score every row of `batch` (image_id, path)."""
        ids, paths = batch.column("image_id").to_pylist(), batch.column("path").to_pylist()
        rows: list[dict] = []
        loaded: list[tuple[int, np.ndarray]] = []
        for i, (image_id, path) in enumerate(zip(ids, paths, strict=True)):
            t0 = time.perf_counter()
            row: dict = {"image_id": image_id, "error": None}
            try:
                img = load_image(Path(path))
                row.update(self._score_one(img))
                loaded.append((i, img))
            except SCORE_ERRORS as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
        self._score_nima(rows, loaded)
        names, version, sha = self.describe()
        now = utc_now()
        for row in rows:
            row.update(metrics=names, scorer_version=version, params_sha256=sha, run_id=self.run_id, scored_at=now)
            if row["error"]:
                for m in ("niqe", "brisque", "nima"):
                    row.pop(m, None)
        table = pa.Table.from_pylist(rows, schema=SCORES)
        return table.to_batches()[0] if table.num_rows else pa.RecordBatch.from_pylist([], schema=SCORES)

    def _score_nima(self, rows: list[dict], loaded: list[tuple[int, np.ndarray]]) -> None:
        nima = [m for m in self.metrics if m.name == "nima"]
        todo = [(i, img) for i, img in loaded if not rows[i]["error"]]
        if not nima or not todo:
            return
        t0 = time.perf_counter()
        try:
            values = nima[0].score_batch([img for _, img in todo])
        except SCORE_ERRORS as exc:
            for i, _ in todo:
                rows[i]["error"] = f"nima: {type(exc).__name__}: {exc}"
            return
        share = (time.perf_counter() - t0) / len(todo)
        for (i, _), v in zip(todo, values, strict=True):
            rows[i]["nima"] = float(v)
            rows[i]["seconds"] += share


def usable_metrics(cfg: ScoreConfig) -> tuple[tuple[str, ...], dict[str, str]]:
    """The metrics that can run and, for those that cannot (NIMA without weights), the reason."""
    skipped: dict[str, str] = {}
    keep = []
    for name in cfg.metrics:
        iqa.get(name)  # unknown names fail here with the list of valid ones
        if name not in SCORES.names:
            raise ValueError(f"metric {name!r} has no column in the scores table (niqe, brisque, nima); use it "
                             "from Python (million_ird.iqa.get) or benchmarks/bench_iqa.py")
        if name == "nima":
            try:
                resolve_weights(cfg.nima_weights)
            except NimaUnavailable as exc:
                skipped[name] = str(exc)
                continue
        keep.append(name)
    return tuple(keep), skipped


# Per-metric fingerprints (see `pending`): `metrics` is the comma list of the metrics a row carries,
# `scorer_version` the comma list of their full versions in the same order, `params_sha256` the comma
# list of `<metric>:<sha256>` entries. A row written by any version of this stage has that shape.
_SPLIT = """string_split(metrics, ',') AS names, string_split(scorer_version, ',') AS versions,
            string_split(params_sha256, ',') AS shas"""


def fingerprints(metrics: list[iqa.Metric]) -> dict[str, tuple[str, str]]:
    """Metric name -> (full version, parameter sha256): what a row must carry for that metric to count as done."""
    return {m.name: (m.full_version, m.params_sha256) for m in metrics}


def pending(store: Store, fingerprint: dict[str, tuple[str, str]], retry_errors: bool) -> pa.Table:
    """Ok images (image_id, absolute path, due) with at least one metric still to score; `due` lists those metrics.

    A metric is done for an image when a successful row carries a value for it with the same
    version (the entry at the metric's place in `scorer_version`) and the same parameter file
    (`<metric>:<sha256>` in `params_sha256`); a row with another version or parameter file, or without
    fingerprint columns, does not count. A metric whose earlier attempt at the same version ended in
    an error row is not retried (errors such as "too small" or "undecodable" are deterministic)
    unless `retry_errors`. Metric order follows `fingerprint`.
    """
    names = [m for m in fingerprint if m in SCORES.names]
    if not names:
        raise ValueError(f"no metric of {list(fingerprint)} has a column in the scores table")
    state, due, params = [], [], []
    for m in names:  # names are scores columns (validated above), safe to interpolate
        version, sha = fingerprint[m]
        at = f"versions[list_position(names, '{m}')]"
        state.append(f"bool_or(ok AND {m} IS NOT NULL AND {at} = ? AND list_contains(shas, ?)) AS done_{m}")
        state.append(f"bool_or(NOT ok AND {at} = ?) AS failed_{m}")
        params += [version, f"{m}:{sha}", version]
        blocked = "false" if retry_errors else f"coalesce(failed_{m}, false)"
        due.append(f"CASE WHEN NOT coalesce(done_{m}, false) AND NOT {blocked} THEN '{m}' END")
    sql = f"""
        WITH s AS (SELECT image_id, error IS NULL AS ok, {", ".join(names)}, {_SPLIT} FROM scores),
             state AS (SELECT image_id, {", ".join(state)} FROM s GROUP BY image_id)
        SELECT image_id, path, due FROM (
            SELECT c.image_id, c.path, concat_ws(',', {", ".join(due)}) AS due
            FROM catalog c LEFT JOIN state USING (image_id)
            WHERE c.status = 'ok' AND c.path IS NOT NULL)
        WHERE due <> ''
        ORDER BY image_id"""
    table = store.query(sql, params)
    paths = [p if Path(p).is_absolute() else str(store.root / p) for p in table.column("path").to_pylist()]
    return pa.table({"image_id": table.column("image_id"), "path": pa.array(paths, pa.string()),
                     "due": table.column("due")})


def _summary(results: list[pa.Table]) -> dict:
    if not results:
        return {"scored": 0, "errors": 0}
    t = pa.concat_tables(results)
    err = t.column("error").to_pylist()
    stats: dict = {"scored": sum(e is None for e in err), "errors": sum(e is not None for e in err)}
    secs = np.array(t.column("seconds").to_pylist(), dtype=float)
    stats["mean_seconds"] = float(secs.mean()) if secs.size else None
    for m in ("niqe", "brisque", "nima"):
        vals = np.array([v for v in t.column(m).to_pylist() if v is not None], dtype=float)
        if vals.size:
            stats[f"{m}_median"] = float(np.median(vals))
    reasons: dict[str, int] = {}
    for e in err:
        if e is not None:
            reasons[e[:120]] = reasons.get(e[:120], 0) + 1
    stats["error_reasons"] = reasons
    return stats


def run_score(store: Store, cfg: ScoreConfig, run_id: str | None = None, progress: bool = True) -> dict:
    """Score every pending ok image of `store`, appending part files to scores/; returns run statistics."""
    run_id = run_id or new_run_id("score")
    metrics, skipped = usable_metrics(cfg)
    stats: dict = {"run_id": run_id, "skipped_metrics": skipped, "metrics": list(metrics)}
    if not metrics:
        stats.update(scored=0, errors=0, pending=0)
        store.save_run("score", run_id, cfg, stats)
        return stats
    workers = cfg.workers
    if "nima" in metrics and cfg.device.startswith("cuda") and workers > 1:
        log.warning("NIMA on %s: using one worker (a CUDA model is not shared across processes)", cfg.device)
        workers = 1
    run_cfg = replace(cfg, metrics=metrics, workers=workers)
    probe = ScoreStage(run_cfg, run_id)
    probe.build()
    todo = pending(store, fingerprints(probe.metrics), cfg.retry_errors)
    if cfg.limit is not None:
        todo = todo.slice(0, cfg.limit)
    stats["pending"] = todo.num_rows
    due = [set(d.split(",")) for d in todo.column("due").to_pylist()]
    stats["due"] = ",".join(f"{m}:{sum(m in d for d in due)}" for m in metrics)
    stats.update(_summary(_score_groups(store, run_cfg, run_id, todo, progress)))
    store.save_run("score", run_id, run_cfg, stats)
    return stats


def _score_groups(store: Store, cfg: ScoreConfig, run_id: str, todo: pa.Table, progress: bool) -> list[pa.Table]:
    """Score `todo` with one stage per set of due metrics (only those are computed); returns the tables written."""
    results: list[pa.Table] = []
    buffer: list[pa.RecordBatch] = []
    with tqdm(total=todo.num_rows, desc="score", unit="img", disable=not progress) as bar:
        for group in dict.fromkeys(todo.column("due").to_pylist()):  # first-seen order: deterministic
            rows = todo.filter(pc.equal(todo.column("due"), group)).select(["image_id", "path"])
            stage = ScoreStage(replace(cfg, metrics=tuple(group.split(","))), run_id)
            for out in run_stage(stage, rows.to_batches(max_chunksize=max(1, cfg.images_per_task)), cfg.workers):
                buffer.append(out)
                bar.update(out.num_rows)
                if sum(b.num_rows for b in buffer) >= cfg.rows_per_part:
                    results.append(_flush(store, buffer, run_id))
                    buffer = []
        if buffer:
            results.append(_flush(store, buffer, run_id))
    return results


def _flush(store: Store, buffer: list[pa.RecordBatch], run_id: str) -> pa.Table:
    table = pa.Table.from_batches(buffer, schema=SCORES)
    store.append("scores", table, run_id=run_id)
    return table
