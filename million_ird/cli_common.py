"""Pieces every `million-ird` command module shares: the --manifest option and one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from million_ird.store import Store

Manifest = Annotated[Path, typer.Option("--manifest", "-m", help="Dataset directory (the store).")]


def fail(message: str) -> NoReturn:
    """Print a one-line error to stderr and exit with status 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def existing_store(manifest: Path) -> Store:
    """The store at `manifest`, or a one-line error when there is none yet."""
    store = Store(manifest)
    if not store.root.is_dir():
        fail(f"{store.root}: no dataset directory here; run `million-ird ingest --manifest DIR ...` first")
    return store
