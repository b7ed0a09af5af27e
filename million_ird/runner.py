"""Run a Stage over record batches, in this process or in a local process pool."""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

import pyarrow as pa

from million_ird.stages.base import Stage

log = logging.getLogger(__name__)

_WORKER_STAGE: Stage | None = None


def _init_worker(stage: Stage) -> None:
    global _WORKER_STAGE
    stage.setup()
    _WORKER_STAGE = stage


def _process_in_worker(batch: pa.RecordBatch) -> pa.RecordBatch:
    assert _WORKER_STAGE is not None, "worker was not initialised"
    return _WORKER_STAGE.process(batch)


def run_stage(stage: Stage, batches: Iterable[pa.RecordBatch], workers: int = 1) -> Iterator[pa.RecordBatch]:
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
