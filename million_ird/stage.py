"""The stage contract the driver runs: candidates in SQL, a config fingerprint per unit of work, a pure process().

A stage declares
- `name` (the command and run-record name), `table` (the table its rows are appended to, a key of
  `million_ird.schema.SCHEMAS`), `key` (the id column shared by its input and its output rows);
- `candidates_sql()`: one SELECT over the store's views giving the key and every column in `needs`
  for each row the stage should cover (whether done or not);
- `fingerprints()`: unit -> fingerprint. A unit is a piece of work done per key (one per metric for
  `score`, a single `""` unit elsewhere); its fingerprint hashes everything that changes the values
  written (parameters, parameter-file hashes, seeds, sizes, thresholds, the implementation version).
  A key is done for a unit when its table holds a final row with that (key, fingerprint);
- `setup()` once per worker (load models), then `process(batch) -> batch` on batches of candidate rows.
  The driver adds a `due` column (list of unit names still to do) to every batch it passes in. Output
  rows must carry the key and the `fingerprint` of the unit they belong to (the driver fills a null
  `fingerprint` when the stage has exactly one unit) and, where the table has them, `error` and
  `retryable` (an error that a later run should try again, such as CUDA running out of memory).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import Any

import pyarrow as pa

from million_ird.schema import SCHEMAS


def fingerprint_of(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (dict keys sorted): the same config gives the same string."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class Stage(ABC):
    """One per-key stage (see the module docstring for the contract the driver relies on)."""

    name: str = "stage"
    table: str = ""
    key: str = "image_id"
    needs: tuple[str, ...] = ()
    batch_size: int = 16  # most candidate rows per batch
    batch_cost: str | None = None  # a candidates column; a batch also closes once its values add up to batch_budget
    batch_budget: float = float("inf")

    @property
    def output_schema(self) -> pa.Schema:
        """The Arrow schema of the rows `process` returns (the output table's)."""
        return SCHEMAS[self.table]

    @abstractmethod
    def candidates_sql(self) -> tuple[str, list[Any]]:
        """SELECT (with its parameters) of the key and `needs` columns of every row this stage covers."""

    @abstractmethod
    def fingerprints(self) -> dict[str, str]:
        """Unit name -> config fingerprint of that unit's values."""

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load models or parameters once per worker (default: nothing)."""

    def summary_sql(self) -> str | None:
        """One SELECT (parameter: the run_id) of one row of figures for the run's summary table, or None."""
        return None

    @abstractmethod
    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Turn one batch of candidate rows (with `due`) into output rows matching `output_schema`."""
