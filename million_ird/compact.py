"""Merge small part files of a table into bigger ones without changing any query result.

A compaction first writes a journal (`<table>/_compaction.json`: the merged parts it will write and
the parts they replace), then the merged parts (each atomically), then deletes the replaced ones
and the journal. `Store.parts` reads the journal, so a reader sees either the old parts or the
merged ones, never both; a killed compaction is finished or undone by `recover` at the next writing
command (under the store lock).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from million_ird.lock import assert_held
from million_ird.store import JOURNAL, Store, write_json_atomic, write_parquet_atomic

ROWS_PER_PART = 500_000
BYTES_PER_PART = 128 * 2**20


def _groups(parts: list[Path], rows_per_part: int, bytes_per_part: int) -> list[list[Path]]:
    """Consecutive runs of parts whose rows and bytes fit one merged part (parts already big stay alone)."""
    groups: list[list[Path]] = []
    rows = size = 0
    for part in parts:
        meta = pq.ParquetFile(part).metadata
        n, b = meta.num_rows, part.stat().st_size
        if groups and rows + n <= rows_per_part and size + b <= bytes_per_part:
            groups[-1].append(part)
            rows, size = rows + n, size + b
        else:
            groups.append([part])
            rows, size = n, b
    return [g for g in groups if len(g) > 1]


def compact(store: Store, table: str, only: str | None = None, rows_per_part: int = ROWS_PER_PART,
            bytes_per_part: int = BYTES_PER_PART) -> dict[str, int]:
    """Merge `table`'s small parts (those whose name contains `only`, if given); returns parts before and after."""
    assert_held(store.root, "compact")
    parts = [p for p in store.parts(table) if only is None or only in p.name]
    groups = _groups(parts, rows_per_part, bytes_per_part)
    before = len(store.parts(table))
    if not groups:
        return {"parts_before": before, "parts_after": before}
    replace_parts(store, table, [p for g in groups for p in g],
                  (pa.concat_tables([pq.read_table(p) for p in g]) for g in groups))
    return {"parts_before": before, "parts_after": len(store.parts(table))}


def replace_parts(store: Store, table: str, old: list[Path], new: Iterable[pa.Table]) -> list[Path]:
    """Swap the part files `old` for parts holding the tables `new` (same folder), journalled as above."""
    assert_held(store.root, "compact.replace_parts")
    folder = store.root / table
    tables = list(new)
    merged = [f"part-compact-{uuid.uuid4().hex[:12]}.parquet" for _ in tables]
    replaced = [p.name for p in old]
    write_json_atomic({"merged": merged, "replaced": replaced}, folder / JOURNAL)
    for name, data in zip(merged, tables, strict=True):
        write_parquet_atomic(data, folder / name)
    _finish(folder, replaced)
    return [folder / m for m in merged]


def _finish(folder: Path, replaced: list[str]) -> None:
    for name in replaced:
        (folder / name).unlink(missing_ok=True)
    (folder / JOURNAL).unlink(missing_ok=True)


def recover(store: Store) -> int:
    """Finish (all merged parts written) or undo (some missing) compactions a killed run left; returns how many."""
    assert_held(store.root, "compact.recover")
    done = 0
    for journal in store.root.glob(f"*/{JOURNAL}"):
        entry = json.loads(journal.read_text())
        folder = journal.parent
        if all((folder / m).exists() for m in entry["merged"]):
            _finish(folder, entry["replaced"])
        else:
            for name in entry["merged"]:
                (folder / name).unlink(missing_ok=True)
            journal.unlink()
        done += 1
    return done
