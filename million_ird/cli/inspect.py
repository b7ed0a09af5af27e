"""`million-ird query` and `million-ird stats`: read-only looks at a store (never take the lock)."""

from __future__ import annotations

import csv
import io
import json
import sys
from typing import Annotated

import duckdb
import pyarrow as pa
import typer

from million_ird.cli.common import Manifest, existing_store, fail
from million_ird.summary import format_table


def _emit(table: pa.Table, fmt: str) -> None:
    rows = table.to_pylist()
    if fmt == "json":
        typer.echo(json.dumps(rows, default=str, indent=1))
    elif fmt == "csv":
        buf = io.StringIO()
        names = table.column_names
        writer = csv.DictWriter(buf, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
        sys.stdout.write(buf.getvalue())
    else:
        typer.echo(format_table(rows, table.column_names))


def query(
    manifest: Manifest,
    sql: Annotated[str, typer.Argument(help="One read-only SQL statement over the views images, downloads, catalog, "
                                            "scores, hashes, duplicates, selections, patches, pairs, rejected and "
                                            "their latest_* views.")],
    format: Annotated[str, typer.Option("--format", "-f", help="Output: table, csv or json (a list of row objects).")] = "table",
) -> None:
    """Run read-only SQL over the store's DuckDB views."""
    if format not in ("table", "csv", "json"):
        fail(f"--format {format!r}: choose table, csv or json")
    store = existing_store(manifest)
    try:
        with store.connect_for(sql) as con:
            statements = con.extract_statements(sql)
            kinds = {s.type for s in statements}
            if len(statements) != 1 or not kinds <= {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}:
                fail("query takes exactly one read-only statement (SELECT, WITH, DESCRIBE, EXPLAIN)")
            table = con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        fail(f"SQL: {str(exc).splitlines()[0]}")
    _emit(table, format)


def stats(
    manifest: Manifest,
    as_json: Annotated[bool, typer.Option("--json", help="Print the statistics as JSON.")] = False,
) -> None:
    """Rows per source and status, bytes, megapixels, declared vs real resolution."""
    from million_ird.stats import store_stats

    store = existing_store(manifest)
    result = store_stats(store)
    if as_json:
        typer.echo(json.dumps(result, default=str, indent=1))
        return
    typer.echo(format_table(result["sources"] + [result["total"]]))
    typer.echo(f"rejected at ingest: {result['rejected_at_ingest']}")
    if result["top_errors"]:
        typer.echo(format_table([{"error": (r["error"] or "")[:100], "rows": r["n"]} for r in result["top_errors"]]))


def register(app: typer.Typer) -> None:
    """Add `query`, `stats` to `app`."""
    app.command('query')(query)
    app.command('stats')(stats)
