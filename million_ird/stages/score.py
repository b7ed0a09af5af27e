"""The score stage: every registered metric asked for, on every ok image, one `scores` row per (image, metric).

Images are read by `million_ird.images` (its rules: RGB or gray, 8/16-bit, alpha dropped). Metrics that
accept gray (NIQE, BRISQUE) get the image converted once by LIVE's rgb2gray (2-D input used as it is);
the others get RGB (gray replicated). A metric's unit of work is its own: a value, or an error for
that metric alone (one metric failing never drops another's value). Device errors (CUDA out of
memory) are `retryable`: the next run tries them again; other errors (too small, undecodable, not
finite) are final unless `--retry-errors`. The stage knows no metric by name: the registry says
whether a metric is batched on a device and whether it can run here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from million_ird import driver, iqa
from million_ird.images import ImageError, read_image, resolve
from million_ird.iqa import nss
from million_ird.schema import SCORES
from million_ird.stage import Stage, fingerprint_of
from million_ird.store import Store, utc_now

log = logging.getLogger(__name__)
METRIC_ERRORS = (ValueError, OSError, cv2.error, np.linalg.LinAlgError, RuntimeError)
RETRYABLE_MARKERS = ("out of memory", "CUDA error", "CUBLAS_STATUS_ALLOC_FAILED")


@dataclass(frozen=True)
class ScoreConfig:
    """What `million-ird score` computes: metrics, device and parameter files (how it runs: DriverConfig)."""

    metrics: tuple[str, ...] = ("niqe", "brisque")
    device: str = "cpu"
    batch_size: int = 16  # images per device batch for batched metrics
    niqe_params: str | None = None
    nima_weights: str | None = None
    images_per_task: int = 32  # images per driver batch


def error_text(exc: BaseException) -> str:
    """The `error` column's text for an exception: its type and message."""
    return f"{type(exc).__name__}: {exc}"


def is_retryable(exc: BaseException) -> bool:
    """True for device errors a later run may not meet again (CUDA out of memory, a lost device)."""
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in RETRYABLE_MARKERS)


def build_metrics(cfg: ScoreConfig) -> list[iqa.Metric]:
    """The metric objects `cfg` names (unknown names raise KeyError listing the valid ones)."""
    opts = iqa.MetricOptions(niqe_params=cfg.niqe_params, nima_weights=cfg.nima_weights, device=cfg.device,
                             batch_size=cfg.batch_size)
    return [iqa.get(m, opts) for m in cfg.metrics]


def usable_metrics(cfg: ScoreConfig) -> tuple[tuple[str, ...], dict[str, str]]:
    """The metrics that can run here and, for those that cannot (NIMA without weights), the reason."""
    keep, skipped = [], {}
    for m in build_metrics(cfg):
        reason = m.unavailable()
        if reason:
            skipped[m.name] = reason
        else:
            keep.append(m.name)
    return tuple(keep), skipped


def metric_fingerprint(metric: iqa.Metric) -> str:
    """What makes a metric's value: its name, implementation version and parameter-file hash."""
    return fingerprint_of(metric.name, metric.full_version, metric.params_sha256)


class ScoreStage(Stage):
    """(image_id, path, due) rows -> one scores row per due metric, values or per-metric errors."""

    name = "score"
    table = "scores"
    needs = ("path",)

    def __init__(self, store_root: Path, cfg: ScoreConfig) -> None:
        self.root, self.cfg = store_root, cfg
        self.batch_size = cfg.images_per_task
        self.metrics = {m.name: m for m in build_metrics(cfg)}
        self._fingerprints = {name: metric_fingerprint(m) for name, m in self.metrics.items()}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for worker processes without loaded models (each worker's setup loads them)."""
        return {"root": self.root, "cfg": self.cfg, "batch_size": self.batch_size,
                "_fingerprints": self._fingerprints}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.metrics = {m.name: m for m in build_metrics(self.cfg)}

    def candidates_sql(self) -> tuple[str, list[Any]]:
        """Every image with an ok download outcome and a file."""
        return "SELECT image_id, path FROM catalog_base WHERE status = 'ok' AND path IS NOT NULL", []

    def fingerprints(self) -> dict[str, str]:
        """One unit per metric."""
        return self._fingerprints

    def setup(self) -> None:
        """Load every metric's parameters or weights once per worker."""
        cv2.setNumThreads(1)
        for m in self.metrics.values():
            m.setup()

    def summary_sql(self) -> str:
        """Rows per metric and the median value of each, for the run's summary."""
        return ("SELECT string_agg(metric || ':' || n || ' median ' || coalesce(round(med, 3)::VARCHAR, '-'), ', ' "
                "ORDER BY metric) AS per_metric FROM (SELECT metric, count(*) AS n, median(value) AS med "
                "FROM scores WHERE run_id = ? GROUP BY metric)")

    def _row(self, image_id: str, metric: str, value: float | None, seconds: float,
             exc: BaseException | None = None) -> dict[str, Any]:
        m = self.metrics[metric]
        return {"image_id": image_id, "metric": metric, "value": value, "version": m.full_version,
                "params_sha256": m.params_sha256, "fingerprint": self._fingerprints[metric], "seconds": seconds,
                "error": None if exc is None else error_text(exc),
                "retryable": None if exc is None else is_retryable(exc), "scored_at": utc_now()}

    def _score_single(self, image_id: str, img: np.ndarray, due: list[str], rows: list[dict]) -> None:
        gray = nss.to_gray(img) if any(self.metrics[d].accepts_gray for d in due) else None
        for name in due:
            m = self.metrics[name]
            if m.batched:
                continue
            t0 = time.perf_counter()
            try:
                value = float(m.score(gray if m.accepts_gray else _rgb(img)))
                if not np.isfinite(value):
                    raise ValueError(f"{name} is not finite ({value}): flat or constant image")
                rows.append(self._row(image_id, name, value, time.perf_counter() - t0))
            except METRIC_ERRORS as exc:
                rows.append(self._row(image_id, name, None, time.perf_counter() - t0, exc))

    def _score_batched(self, name: str, todo: list[tuple[str, np.ndarray]], rows: list[dict]) -> None:
        t0 = time.perf_counter()
        try:
            values = self.metrics[name].score_batch([_rgb(img) for _, img in todo])
        except METRIC_ERRORS as exc:  # the whole device batch failed: each image gets this metric's error
            share = (time.perf_counter() - t0) / len(todo)
            rows.extend(self._row(i, name, None, share, exc) for i, _ in todo)
            return
        share = (time.perf_counter() - t0) / len(todo)
        rows.extend(self._row(i, name, float(v), share) for (i, _), v in zip(todo, values, strict=True))

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Score every due metric of every row; an unreadable image gets an error row per due metric."""
        rows: list[dict] = []
        batched: dict[str, list[tuple[str, np.ndarray]]] = {}
        cols = batch.to_pydict()
        for image_id, path, due in zip(cols["image_id"], cols["path"], cols["due"], strict=True):
            t0 = time.perf_counter()
            try:
                img = read_image(resolve(self.root, path))
            except ImageError as exc:
                rows.extend(self._row(image_id, d, None, time.perf_counter() - t0, exc) for d in due)
                continue
            self._score_single(image_id, img, due, rows)
            for d in due:
                if self.metrics[d].batched:
                    batched.setdefault(d, []).append((image_id, img))
        for name, todo in batched.items():
            self._score_batched(name, todo, rows)
        return pa.RecordBatch.from_pylist(rows, schema=SCORES)


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


def run_score(store: Store, cfg: ScoreConfig, run: driver.DriverConfig | None = None) -> dict:
    """Score every pending (image, metric) of `store` through the driver; returns the run's counts."""
    run = run or driver.DriverConfig()
    metrics, skipped = usable_metrics(cfg)
    if not metrics:
        return {"pending": 0, "rows": 0, "errors": 0, "skipped_metrics": skipped}
    cfg = ScoreConfig(**{**cfg.__dict__, "metrics": metrics})
    stats = driver.run(store, ScoreStage(store.root, cfg), run, config=cfg)
    stats["skipped_metrics"] = skipped
    return stats
