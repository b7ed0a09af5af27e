"""Ingest: turn source lists into new `images` rows (deduplicated, stable ids) and `rejected` rows.

Both are idempotent: an image id already in `images`, or a rejected row already in `rejected` with the
same source, origin, URL, path and reason, is not appended again (DuckDB anti-joins against the store).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from million_ird.schema import IMAGES, REJECTED
from million_ird.sources.common import IngestConfig, SourceBatch
from million_ird.sources.folder import read_folder
from million_ird.sources.lists import read_parquet_list, read_url_list
from million_ird.store import Store, new_run_id, utc_now

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestInputs:
    """Which inputs one ingest call reads (exactly one kind)."""

    parquet: tuple[Path, ...] = ()
    urls: Path | None = None
    folder: Path | None = None


def read_inputs(inputs: IngestInputs, cfg: IngestConfig) -> SourceBatch:
    """Read every input into one batch; raises IngestError before anything is written."""
    batch = SourceBatch()
    for path in inputs.parquet:
        read_parquet_list(path, cfg, batch)
    if inputs.urls is not None:
        read_url_list(inputs.urls, cfg, batch)
    if inputs.folder is not None:
        read_folder(inputs.folder, cfg, batch)
    return batch


REJECTED_KEY = ("source", "origin", "url", "path", "reason")
NEW_REJECTED_SQL = """
SELECT c.row FROM rejected_candidates c ANTI JOIN rejected r
ON c.source = r.source AND c.origin = r.origin AND c.reason = r.reason
   AND c.url IS NOT DISTINCT FROM r.url AND c.path IS NOT DISTINCT FROM r.path
ORDER BY c.row
"""


def new_rejections(con: duckdb.DuckDBPyConnection, rejected: list[dict]) -> list[dict]:
    """The rejected rows not recorded yet (same source, origin, URL, path and reason), each once, in input order."""
    unique = list({tuple(r[k] for k in REJECTED_KEY): r for r in rejected}.values())
    columns = {k: pa.array([r[k] for r in unique], pa.string()) for k in REJECTED_KEY}
    con.register("rejected_candidates", pa.table({"row": pa.array(range(len(unique)), pa.int64()), **columns}))
    keep = con.sql(NEW_REJECTED_SQL).to_arrow_table().column(0).to_pylist()
    return [unique[i] for i in keep]


def ingest(store: Store, inputs: IngestInputs, cfg: IngestConfig) -> dict:
    """Append the new images and rejected rows to the store; returns the run's counts."""
    batch = read_inputs(inputs, cfg)
    run_id = new_run_id("ingest")
    now = utc_now()
    rows: dict[str, dict] = {}
    for row in batch.images:
        rows.setdefault(row["image_id"], row)
    duplicates_in_input = len(batch.images) - len(rows)
    with store.connect() as con:
        con.register("candidates", pa.table({"image_id": pa.array(list(rows), pa.string())}))
        existing = set(con.sql("SELECT image_id FROM candidates SEMI JOIN images USING (image_id)")
                       .to_arrow_table().column(0).to_pylist())
        rejected = new_rejections(con, batch.rejected)  # a re-run records nothing twice
    new = [dict(r, ingested_at=now) for i, r in rows.items() if i not in existing]
    store.append("rejected", pa.Table.from_pylist([dict(r, run_id=run_id) for r in rejected], schema=REJECTED),
                 run_id)
    store.append("images", pa.Table.from_pylist(new, schema=IMAGES), run_id)
    reasons = Counter(r["reason"].split(":")[0].split(";")[0] for r in batch.rejected)  # kind, not values
    stats = {
        "source": cfg.source, "read": len(batch.images) + len(batch.rejected), "new": len(new),
        "duplicates_in_input": duplicates_in_input, "already_in_store": len(existing),
        "rejected": len(batch.rejected), "rejected_new": len(rejected), "rejected_by_reason": dict(reasons.most_common()),
    }
    store.save_run("ingest", run_id, {"config": cfg, "inputs": inputs}, stats)
    log.info("ingest %s: %s", run_id, stats)
    return stats
