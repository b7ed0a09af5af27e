"""Ingest: turn source lists into new `images` rows (deduplicated, stable ids) and `rejected` rows.

Inputs are read as whole Arrow batches (million_ird.sources.columnar); rows stay in Arrow until written.
Both are idempotent: an image id already in `images`, or a rejected row already in `rejected` with the
same source, origin, URL, path and reason, is not appended again (DuckDB anti-joins against the store).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from million_ird.schema import TS
from million_ird.sources.common import REJECTS, IngestConfig, SourceBatch
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


FIRSTS_SQL = "CREATE TEMP TABLE firsts AS SELECT image_id, min(ord) AS ord FROM candidates GROUP BY image_id"
NEW_IMAGES_SQL = "SELECT ord FROM firsts ANTI JOIN images USING (image_id) ORDER BY ord"
NEW_REJECTED_SQL = """
SELECT c.row FROM (SELECT min(row) AS row, source, origin, url, path, reason FROM rejected_candidates
                   GROUP BY source, origin, url, path, reason) c
ANTI JOIN rejected r
ON c.source = r.source AND c.origin = r.origin AND c.reason = r.reason
   AND c.url IS NOT DISTINCT FROM r.url AND c.path IS NOT DISTINCT FROM r.path
ORDER BY c.row
"""


def _positions(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Array:
    """The int64 row positions a query returns."""
    return con.sql(sql).to_arrow_table().column(0).combine_chunks()


def new_images(con: duckdb.DuckDBPyConnection, images: pa.Table) -> tuple[pa.Array, int]:
    """Positions of the first row of each image id not in the store yet (input order), and how many ids."""
    con.register("candidates", pa.table({"image_id": images.column("image_id"),
                                         "ord": pa.array(np.arange(images.num_rows, dtype=np.int64))}))
    con.execute(FIRSTS_SQL)
    distinct = con.sql("SELECT count(*) FROM firsts").fetchall()[0][0]
    return _positions(con, NEW_IMAGES_SQL), distinct


def new_rejections(con: duckdb.DuckDBPyConnection, rejected: pa.Table) -> pa.Array:
    """Positions of the rejected rows not recorded yet (same source, origin, URL, path and reason), each once,
    in input order."""
    columns = {name: rejected.column(name) for name in REJECTS.names}
    con.register("rejected_candidates",
                 pa.table({"row": pa.array(np.arange(rejected.num_rows, dtype=np.int64)), **columns}))
    return _positions(con, NEW_REJECTED_SQL)


def reasons_by_kind(reasons: pa.ChunkedArray) -> dict[str, int]:
    """Rejected rows per kind of reason (the text before any ':' or ';'), most common first."""
    kinds: Counter[str] = Counter()
    counts = pc.value_counts(reasons)  # in order of first appearance, as a Counter over the rows counts them
    for reason, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True):
        kinds[reason.split(":")[0].split(";")[0]] += n
    return dict(kinds.most_common())


def input_record(inputs: IngestInputs) -> dict:
    """What a run record keeps of the inputs: absolute paths, and each list file's size and sha256 (which
    metadata shard made the data, months later; a folder's images get their sha256 from `download`)."""
    lists = [*inputs.parquet, *([inputs.urls] if inputs.urls else [])]
    files = []
    for path in lists:
        with open(path, "rb") as fh:
            files.append({"path": str(path.resolve()), "bytes": path.stat().st_size,
                          "sha256": hashlib.file_digest(fh, "sha256").hexdigest()})
    return {"parquet": [str(p.resolve()) for p in inputs.parquet],
            "urls": str(inputs.urls.resolve()) if inputs.urls else None,
            "folder": str(inputs.folder.resolve()) if inputs.folder else None, "files": files}


def ingest(store: Store, inputs: IngestInputs, cfg: IngestConfig) -> dict:
    """Append the new images and rejected rows to the store; returns the run's counts."""
    images, rejected = read_inputs(inputs, cfg).tables()
    run_id = new_run_id("ingest")
    with store.connect() as con:
        fresh, distinct = new_images(con, images)
        fresh_rejected = new_rejections(con, rejected)  # a re-run records nothing twice
    new = images if len(fresh) == images.num_rows else images.take(fresh)  # sorted, distinct: all of them
    new = new.append_column("ingested_at", pa.repeat(pa.scalar(utc_now(), TS), new.num_rows))
    recorded = rejected if len(fresh_rejected) == rejected.num_rows else rejected.take(fresh_rejected)
    recorded = recorded.append_column("run_id", pa.repeat(pa.scalar(run_id, pa.string()), recorded.num_rows))
    store.append("rejected", recorded, run_id)
    store.append("images", new, run_id)
    stats = {
        "source": cfg.source, "read": images.num_rows + rejected.num_rows, "new": new.num_rows,
        "duplicates_in_input": images.num_rows - distinct, "already_in_store": distinct - new.num_rows,
        "rejected": rejected.num_rows, "rejected_new": recorded.num_rows,
        "rejected_by_reason": reasons_by_kind(rejected.column("reason")),
    }
    store.save_run("ingest", run_id, {"config": cfg, "inputs": input_record(inputs)}, stats)
    log.info("ingest %s: %s", run_id, stats)
    return stats
