"""The one driver under every per-image stage: pending anti-join, batches, executor, buffered parts, run record.

`run(store, stage, cfg)`:
1. holds the store lock, cleans temp files and finishes or undoes a killed compaction;
2. pending = the stage's candidates anti-joined with its table's final rows on (key, fingerprint),
   one `due` list of units per key: the same config again is a no-op, a new config computes again;
   a row with an error counts as final unless it is `retryable` (or `--retry-errors`);
3. cuts pending into batches, runs them through the executor (local process pool or Ray Data);
4. buffers output rows into part files of up to `rows_per_part` rows or `bytes_per_part` bytes,
   flushing at least every `flush_seconds` so a killed run loses little; at the end merges the
   run's own small parts (never one part per batch);
5. records the run (config, fingerprints, counts, versions) under runs/.
The driver knows no concrete stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from million_ird import compact
from million_ird.executors import ExecutorConfig, execute
from million_ird.lock import store_lock
from million_ird.schema import SCHEMAS
from million_ird.stage import Stage
from million_ird.store import Store, StoreError, conform, new_run_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriverConfig:
    """How a stage runs: executor, retries, how much, how output is buffered, progress."""

    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    retry_errors: bool = False
    limit: int | None = None
    rows_per_part: int = compact.ROWS_PER_PART
    bytes_per_part: int = compact.BYTES_PER_PART
    flush_seconds: float = 300.0
    progress: bool = True


def final_rows_sql(stage: Stage, retry_errors: bool) -> str:
    """SELECT of the (key, fingerprint) pairs in the stage's table that count as done."""
    schema = SCHEMAS[stage.table]
    where = "true"
    if "error" in schema.names:
        where = "error IS NULL" if retry_errors else "error IS NULL OR NOT coalesce(retryable, false)"
    return f"SELECT {stage.key} AS k, fingerprint FROM {stage.table} WHERE {where}"  # ANTI JOIN needs no DISTINCT


def pending(store: Store, stage: Stage, retry_errors: bool = False, limit: int | None = None) -> pa.Table:
    """The stage's candidate rows with at least one unit not done, plus `due` (those units, in unit order)."""
    sql, params = stage.candidates_sql()
    units = stage.fingerprints()
    values = ", ".join("(?, ?, ?)" for _ in units)
    unit_params: list[object] = [v for i, (u, fp) in enumerate(units.items()) for v in (u, fp, i)]
    key = stage.key
    query = f"""
        WITH c AS ({sql}),
             u(unit, fp, ord) AS (VALUES {values}),
             done AS ({final_rows_sql(stage, retry_errors)}),
             todo AS (SELECT c.{key} AS k, u.unit, u.ord FROM c CROSS JOIN u
                      ANTI JOIN done d ON d.k = c.{key} AND d.fingerprint = u.fp),
             due AS (SELECT k, list(unit ORDER BY ord) AS due FROM todo GROUP BY k)
        SELECT c.*, due.due FROM c JOIN due ON due.k = c.{key}
        ORDER BY c.{key}"""
    if limit is not None:
        query += f" LIMIT {int(limit)}"
    table = store.query(query, params + unit_params)
    missing = [c for c in (key, *stage.needs) if c not in table.column_names]
    if missing:
        raise StoreError(f"stage {stage.name!r}: its candidates lack the columns it needs: {missing}")
    return table


def _batches(table: pa.Table, stage: Stage) -> Iterator[pa.RecordBatch]:
    """Runs of at most `stage.batch_size` rows, each cut short once its `batch_cost` column reaches `batch_budget`."""
    costs = table.column(stage.batch_cost).to_numpy(zero_copy_only=False) if stage.batch_cost else None
    start = 0
    while start < table.num_rows:
        end = min(start + max(1, stage.batch_size), table.num_rows)
        if costs is not None:
            full = np.flatnonzero(np.cumsum(costs[start:end]) >= stage.batch_budget)
            end = start + int(full[0]) + 1 if full.size else end
        yield from table.slice(start, end - start).combine_chunks().to_batches()
        start = end


class PartBuffer:
    """Output rows held until a part is big enough (or old enough), then appended as one part file."""

    def __init__(self, store: Store, stage: Stage, run_id: str, cfg: DriverConfig) -> None:
        self.store, self.stage, self.run_id, self.cfg = store, stage, run_id, cfg
        self.schema = SCHEMAS[stage.table]
        units = stage.fingerprints()
        self.only_fp = next(iter(units.values())) if len(units) == 1 else None
        self.tables: list[pa.Table] = []
        self.rows = self.bytes = self.written = 0
        self.last_flush = time.monotonic()

    def add(self, batch: pa.RecordBatch) -> pa.Table:
        """Check one output batch against the schema, fill run_id (and a lone fingerprint), buffer it."""
        table = pa.Table.from_batches([batch]) if batch.num_rows else self.schema.empty_table()
        table = self._fill(table, "run_id", self.run_id)
        if self.only_fp is not None:
            table = self._fill(table, "fingerprint", self.only_fp)
        table = conform(table, self.schema, self.stage.table)
        self.tables.append(table)
        self.rows += table.num_rows
        self.bytes += table.nbytes
        if (self.rows >= self.cfg.rows_per_part or self.bytes >= self.cfg.bytes_per_part
                or time.monotonic() - self.last_flush >= self.cfg.flush_seconds):
            self.flush()
        return table

    @staticmethod
    def _fill(table: pa.Table, name: str, value: str) -> pa.Table:
        if name not in table.column_names:
            return table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
        col = table.column(name)
        if col.null_count == 0:
            return table
        filled = pc.fill_null(col.cast(pa.string()), value)
        return table.set_column(table.column_names.index(name), name, filled)

    def flush(self) -> None:
        """Append the buffered rows as one part file."""
        if self.rows:
            self.store.append(self.stage.table, pa.concat_tables(self.tables), run_id=self.run_id)
            self.written += self.rows
        self.tables, self.rows, self.bytes = [], 0, 0
        self.last_flush = time.monotonic()


def run(store: Store, stage: Stage, cfg: DriverConfig, run_id: str | None = None,
        config: object = None) -> dict:
    """Run `stage` over its pending rows under the store lock; returns the run's counts (also saved under runs/)."""
    with store_lock(store.root):  # re-entrant: a no-op under the CLI's lock, the guard for library callers
        store.clean_temp()
        compact.recover(store)
        return _run(store, stage, cfg, run_id or new_run_id(stage.name), config)


def _run(store: Store, stage: Stage, cfg: DriverConfig, run_id: str, config: object) -> dict:
    started = time.time()
    todo = pending(store, stage, cfg.retry_errors, cfg.limit)
    stats: dict = {"run_id": run_id, "pending": todo.num_rows}
    buffer = PartBuffer(store, stage, run_id, cfg)
    with tqdm(total=todo.num_rows, desc=stage.name, unit="img", disable=not cfg.progress) as bar:
        for out in execute(stage, _batches(todo, stage), cfg.executor):
            buffer.add(out)
            bar.update(len(pc.unique(out.column(stage.key))) if out.num_rows else 0)
    buffer.flush()
    if buffer.written:
        compact.compact(store, stage.table, only=run_id, rows_per_part=cfg.rows_per_part,
                        bytes_per_part=cfg.bytes_per_part)
    stats.update(run_summary(store, stage, run_id))
    stats["seconds"] = round(time.time() - started, 2)
    stats["parts"] = len(store.parts(stage.table))
    store.save_run(stage.name, run_id, {"stage": config, "driver": cfg, "fingerprints": stage.fingerprints()},
                   stats)
    return stats


def run_summary(store: Store, stage: Stage, run_id: str) -> dict:
    """Rows the run wrote, its errors and their most common reasons, plus the stage's own `summary_sql`."""
    has_error = "error" in SCHEMAS[stage.table].names
    err = "count(error)" if has_error else "0"
    rows, errors = store.query(f"SELECT count(*), {err} FROM {stage.table} WHERE run_id = ?", [run_id]).to_pylist()[0].values()
    stats: dict = {"rows": rows, "errors": errors}
    if has_error and errors:
        top = store.query(f"SELECT left(error, 120) AS e, count(*) AS n FROM {stage.table} WHERE run_id = ? "
                          "AND error IS NOT NULL GROUP BY e ORDER BY n DESC, e LIMIT 5", [run_id])
        stats["error_reasons"] = {r["e"]: r["n"] for r in top.to_pylist()}
    extra = stage.summary_sql()
    if extra:
        stats.update(store.query(extra, [run_id]).to_pylist()[0])
    return stats
