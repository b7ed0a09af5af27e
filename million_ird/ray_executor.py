"""The Ray Data executor under the driver: one Ray row per driver batch, one actor (one `setup()`) per worker.

- Rows: every driver batch travels as one Ray row holding the batch in Arrow IPC form, alone in its
  block, and `map_batches(batch_size=1)` hands exactly one such row to an actor. So `process()` sees
  exactly the batches the local executor gives it (the patches stage closes one set of shards per
  batch) however Ray bundles, splits or orders blocks, with or without GPUs (which need an integer
  batch size); and its output comes back as IPC bytes too, so Ray never converts the stage's Arrow
  schema (types, nulls, zero-row batches all kept).
- Workers: a fixed pool of `workers` actors, each declaring 1 CPU and `gpus_per_worker` GPUs (none
  when 0); each actor gets the pickled stage (stages pickle without their models) and calls `setup()`
  once, in its constructor. This process's MILLION_IRD_* variables (NIMA's weights folder) are set
  on every actor, since workers on other nodes do not inherit them.
- Memory: the pending rows (key and `needs` columns only, small) go to the object store up front;
  outputs stream back through `iter_batches` as they finish, Ray's backpressure bounding what is in
  flight. Order is whatever Ray finishes first; the driver never depends on it.
- Cluster: an initialised Ray is used as it is; else the cluster at `ray_address`, else RAY_ADDRESS,
  is joined; else a quiet local Ray of `workers` CPUs is started; what this run started or joined is
  shut down at the end. On a cluster the store root must be a path every node sees and million-ird
  must be installed on every node.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa

from million_ird.executors import ExecutorConfig, ExecutorError, MissingExtra
from million_ird.stage import Stage

log = logging.getLogger(__name__)
MISSING_RAY = "the ray executor needs the optional extra: pip install 'million-ird[ray]'"
COLUMN = "ipc"  # the one column of the Ray dataset: a driver batch (in) or the stage's rows (out), as IPC bytes


def require_ray() -> Any:
    """Import Ray and Ray Data, or raise MissingExtra naming the extra to install."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingExtra(f"{MISSING_RAY} ({exc})") from exc
    return ray


def to_ipc(batch: pa.RecordBatch) -> bytes:
    """One record batch as Arrow IPC stream bytes (schema included, zero rows allowed)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def from_ipc(blob: bytes) -> pa.RecordBatch:
    """The record batch `to_ipc` wrote, with its schema exactly as written."""
    table = pa.ipc.open_stream(blob).read_all()
    if table.num_rows == 0:
        return pa.RecordBatch.from_pylist([], schema=table.schema)
    return table.combine_chunks().to_batches()[0]


def _envelope(blobs: list[bytes]) -> pa.Table:
    return pa.table({COLUMN: pa.array(blobs, pa.large_binary())})


class StageActor:
    """A Ray Data callable class: the stage's `setup()` once per actor, then `process()` per driver batch."""

    def __init__(self, stage: Stage) -> None:
        stage.setup()
        self.stage = stage

    def __call__(self, rows: pa.Table) -> pa.Table:
        """Rows of IPC-encoded driver batches in (one, with batch_size=1), the stage's output batches out."""
        return _envelope([to_ipc(self.stage.process(from_ipc(b))) for b in rows.column(COLUMN).to_pylist()])


def _worker_env() -> dict[str, Any]:
    """Ray remote args carrying this process's MILLION_IRD_* variables (NIMA's weights folder) to every actor."""
    env = {k: v for k, v in os.environ.items() if k.startswith("MILLION_IRD_")}
    return {"runtime_env": {"env_vars": env}} if env else {}


def _address(cfg: ExecutorConfig) -> str | None:
    """The cluster to join: `ray_address`, else RAY_ADDRESS, else None (start a local Ray)."""
    return cfg.ray_address or os.environ.get("RAY_ADDRESS") or None


def _unreachable(address: str, timeout: float = 5.0) -> str | None:
    """Why nothing answers at a `[ray://]host:port` address (ray.init would retry for minutes), or None."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return None  # `auto`, or a form ray.init judges itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        return f"nothing answers at {host}:{port} ({exc.strerror or exc})"
    return None


def _unreachable_error(cfg: ExecutorConfig, address: str, cause: str) -> ExecutorError:
    origin = "--ray-address" if cfg.ray_address else "RAY_ADDRESS"
    return ExecutorError(f"could not join the Ray cluster at {address} ({origin}): {cause}; check the address "
                         "(e.g. ray://head:10001 or head:6379) and that the cluster is up")


def check_ray(cfg: ExecutorConfig) -> None:
    """Before any work: Ray importable (else MissingExtra) and the cluster to join answering (else ExecutorError)."""
    ray = require_ray()
    address = _address(cfg)
    if address and not ray.is_initialized():
        cause = _unreachable(address)
        if cause:
            raise _unreachable_error(cfg, address, cause)


def _start(ray: Any, cfg: ExecutorConfig) -> bool:
    """Join or start Ray unless it is already up; True when this call did (and must shut it down)."""
    address = _address(cfg)
    if ray.is_initialized():
        if cfg.ray_address:
            log.warning("Ray is already initialised in this process; --ray-address %s is not used", cfg.ray_address)
        return False
    quiet: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if not address:
            ray.init(num_cpus=cfg.workers, **quiet)
            return True
        cause = _unreachable(address)
        if cause is None:
            ray.init(address=address, **quiet)
            return True
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if not address:
            raise ExecutorError(f"could not start a local Ray: {cause}") from exc
    raise _unreachable_error(cfg, address, cause)


def _check_gpus(ray: Any, cfg: ExecutorConfig, started_locally: bool) -> None:
    """Refuse (on a local Ray) or warn (on a cluster, which may scale up) when the GPUs the pool needs are not there."""
    need = cfg.workers * cfg.gpus_per_worker
    have = ray.cluster_resources().get("GPU", 0.0)
    if have >= need:
        return
    msg = f"{cfg.workers} workers of --gpus-per-worker {cfg.gpus_per_worker:g} need {need:g} GPUs; Ray has {have:g}"
    if started_locally:
        raise ExecutorError(f"{msg}: lower --workers or --gpus-per-worker, or join a cluster with GPUs")
    log.warning("%s; the run waits until the cluster provides them", msg)


def run_ray(stage: Stage, batches: Iterable[pa.RecordBatch], cfg: ExecutorConfig) -> Iterator[pa.RecordBatch]:
    """Yield `stage.process(b)` for every batch, run by a pool of `cfg.workers` Ray actors (any order)."""
    ray = require_ray()  # raised here, before any batch is cut, not when the generator first runs
    return _run(ray, stage, batches, cfg)


def _run(ray: Any, stage: Stage, batches: Iterable[pa.RecordBatch], cfg: ExecutorConfig) -> Iterator[pa.RecordBatch]:
    blocks = [_envelope([to_ipc(b)]) for b in batches]
    if not blocks:
        return
    started = _start(ray, cfg)
    context = ray.data.DataContext.get_current()
    bars, data_log = context.enable_progress_bars, logging.getLogger("ray.data")
    level = data_log.level
    context.enable_progress_bars = False  # the driver shows its own progress
    data_log.setLevel(logging.ERROR)  # Ray Data's per-run INFO lines and its "progress bars disabled" warning
    try:
        _check_gpus(ray, cfg, started and not _address(cfg))
        ds = ray.data.from_arrow(blocks).map_batches(
            StageActor, fn_constructor_args=(stage,), batch_size=1, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=cfg.workers), num_cpus=1, num_gpus=cfg.gpus_per_worker or None,
            **_worker_env())
        for rows in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
            for blob in rows.column(COLUMN).to_pylist():
                yield from_ipc(blob)
    finally:
        context.enable_progress_bars = bars
        data_log.setLevel(level)
        if started:
            ray.shutdown()
