"""Bring a store written by million-ird 0.2 up to date: its wide `scores` parts become long ones.

0.2 wrote one scores row per image with a column per metric and comma lists of the metrics, versions
and `<metric>:<sha256>` parameter hashes. Each such row becomes one row per metric it lists, with the
same value (or the row's error), version, parameter hash and time, and the fingerprint that metric's
config has now, so a migrated store resumes exactly where it stood. The swap is journalled like a
compaction: a killed migration leaves either the old parts or the new ones, never both.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from million_ird.compact import replace_parts
from million_ird.schema import SCORES
from million_ird.stage import fingerprint_of
from million_ird.store import Store


def old_score_parts(store: Store) -> list[Path]:
    """The scores part files written in the 0.2 layout (no `metric` column)."""
    return [p for p in store.parts("scores") if "metric" not in pq.read_schema(p).names]


def _long_rows(row: dict) -> list[dict]:
    names = (row.get("metrics") or "").split(",")
    versions = (row.get("scorer_version") or "").split(",")
    shas = dict(s.split(":", 1) for s in (row.get("params_sha256") or "").split(",") if ":" in s)
    out = []
    for i, metric in enumerate(n for n in names if n):
        version = versions[i] if i < len(versions) else None
        sha = shas.get(metric, "")
        value = None if row.get("error") else row.get(metric)
        out.append({"image_id": row["image_id"], "metric": metric, "value": value, "version": version,
                    "params_sha256": sha, "fingerprint": fingerprint_of(metric, version, sha),
                    "seconds": row.get("seconds"), "error": row.get("error"),
                    "retryable": None if row.get("error") is None else False,
                    "run_id": row.get("run_id"), "scored_at": row.get("scored_at")})
    return out


def migrate_scores(store: Store) -> dict[str, int]:
    """Convert every 0.2 scores part (under the store lock); returns parts and rows before and after."""
    old = old_score_parts(store)
    new: list[pa.Table] = []
    rows_before = 0
    for part in old:
        rows = pq.read_table(part).to_pylist()
        rows_before += len(rows)
        new.append(pa.Table.from_pylist([r for row in rows for r in _long_rows(row)], schema=SCORES))
    if old:
        replace_parts(store, "scores", old, new)
    return {"parts": len(old), "rows_before": rows_before, "rows_after": sum(t.num_rows for t in new)}
