"""Executors under the driver: run a Stage over record batches here, in a local process pool, or on Ray Data.

Every executor calls `setup()` once per worker and `process()` once per batch, so all give the same
rows; only their order may differ (the driver never depends on it).
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

import pyarrow as pa

from million_ird.stage import Stage

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
_WORKER_STAGE: Stage | None = None


class ExecutorError(RuntimeError):
    """The executor cannot run here: its extra is missing, its cluster is unreachable, its resources are absent."""


class MissingExtra(ExecutorError, ImportError):
    """An executor's optional extra is not installed (the message names the `pip install` to run)."""


@dataclass(frozen=True)
class ExecutorConfig:
    """Where batches run: `local` (this process, or a pool of `workers` processes) or `ray` (Ray Data)."""

    executor: str = "local"
    workers: int = 1
    ray_address: str | None = None  # None: an initialised Ray, else RAY_ADDRESS, else a local one started here
    gpus_per_worker: float = 0.0  # Ray: GPUs each worker declares (NIMA on GPUs, NIQE/BRISQUE on CPUs)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor {self.executor!r}: choose one of {', '.join(EXECUTORS)}")
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker must be >= 0, got {self.gpus_per_worker}")
        if self.executor != "ray" and (self.gpus_per_worker or self.ray_address):
            raise ValueError("--ray-address and --gpus-per-worker are for --executor ray")


def _init_worker(stage: Stage) -> None:
    global _WORKER_STAGE
    stage.setup()
    _WORKER_STAGE = stage


def _process_in_worker(batch: pa.RecordBatch) -> pa.RecordBatch:
    assert _WORKER_STAGE is not None, "worker was not initialised"
    return _WORKER_STAGE.process(batch)


def run_local(stage: Stage, batches: Iterable[pa.RecordBatch], workers: int = 1) -> Iterator[pa.RecordBatch]:
    """Yield `stage.process(b)` for every batch; with workers > 1 results come in completion order."""
    if workers <= 1:
        stage.setup()
        for batch in batches:
            yield stage.process(batch)
        return
    # spawn, not fork: a forked child of a process holding OpenMP/torch or tqdm threads can deadlock
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(stage,)) as pool:
        pending: set[Future[pa.RecordBatch]] = set()
        for batch in batches:
            pending.add(pool.submit(_process_in_worker, batch))
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        for fut in list(pending):
            yield fut.result()


def check_executor(cfg: ExecutorConfig) -> None:
    """Before any work: raise MissingExtra when the executor's extra is missing, ExecutorError when its cluster is unreachable."""
    if cfg.executor == "ray":
        from million_ird.ray_executor import check_ray

        check_ray(cfg)


def execute(stage: Stage, batches: Iterable[pa.RecordBatch], cfg: ExecutorConfig) -> Iterator[pa.RecordBatch]:
    """Run `stage` over `batches` with the executor `cfg` names."""
    if cfg.executor == "ray":
        from million_ird.ray_executor import run_ray  # optional extra, imported only when asked for

        return run_ray(stage, batches, cfg)
    return run_local(stage, batches, cfg.workers)
