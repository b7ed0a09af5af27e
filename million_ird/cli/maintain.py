"""`million-ird compact` and `million-ird migrate`: keep a store's part files few and its layout current."""

from __future__ import annotations

import typer

from million_ird.cli.common import Manifest, existing_store, writes_store
from million_ird.schema import SCHEMAS
from million_ird.summary import format_table


@writes_store()
def compact(manifest: Manifest) -> None:
    """Merge small part files of every table into parts of up to 500k rows / 128 MB; no query result changes."""
    from million_ird.compact import compact as run_compact
    from million_ird.compact import recover

    store = existing_store(manifest)
    store.clean_temp()
    recover(store)
    rows = [{"table": t, **run_compact(store, t)} for t in SCHEMAS]
    typer.echo(format_table(rows))


@writes_store()
def migrate(manifest: Manifest) -> None:
    """Convert tables written by million-ird 0.2 (scores with one column per metric) to the current layout."""
    from million_ird.compact import recover
    from million_ird.migrate import migrate_scores

    store = existing_store(manifest, check_layout=False)
    recover(store)
    stats = migrate_scores(store)
    typer.echo(format_table([{"table": "scores", **stats}]))
    if not stats["parts"]:
        typer.echo("nothing to do: the store is already in the current layout")


def register(app: typer.Typer) -> None:
    """Add `compact` and `migrate` to `app`."""
    app.command("compact")(compact)
    app.command("migrate")(migrate)
