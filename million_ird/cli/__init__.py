"""`million-ird` command line: every stage of the curation pipeline over one dataset store."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from million_ird.cli import build, dedup, demo, export, fetch, inspect, iqa, maintain, patches, report, splits

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None)  # help text is plain: "[default: X]" must not be read as Rich markup


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    """Curate the Million-IRD pre-training set into a Parquet + DuckDB dataset store."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


for group in (fetch, iqa, dedup, patches, splits, export, build, inspect, report, maintain, demo):  # the order of `million-ird --help`
    group.register(app)
