"""The stage contract every runner executes: setup once per worker, then process record batches."""

from __future__ import annotations

from abc import ABC, abstractmethod

import pyarrow as pa


class Stage(ABC):
    """A unit of per-row work: reads the columns in `needs`, returns rows matching `output_schema`."""

    name: str = "stage"
    needs: tuple[str, ...] = ()
    output_schema: pa.Schema

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load models or parameters once per worker (default: nothing)."""

    @abstractmethod
    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Turn one input batch into one output batch (rows matching `output_schema`)."""
