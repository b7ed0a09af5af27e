"""`million-ird report`: a self-contained HTML page of what a store holds (read-only: takes no lock)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from million_ird.cli.common import Manifest, existing_store, fail
from million_ird.store import StoreError


def report(
    manifest: Manifest,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write: outside the store, or in it at the top (DIR/report.html) or under DIR/export/.")],
    samples: Annotated[int, typer.Option(min=0, help="Pictures per grid (images, patches, duplicate groups).")] = 12,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the samples: the same store and seed give the same page.")] = 0,
    thumb: Annotated[int, typer.Option(min=16, help="Longer side of a thumbnail in px.")] = 160,
    progress: Annotated[bool, typer.Option(help="Show a progress bar over the sections.")] = True,
) -> None:
    """Write one HTML page (no network needed to view it): funnel, score histograms, resolutions, samples."""
    from million_ird.report import ReportConfig, write_report

    store = existing_store(manifest)
    try:
        result = write_report(store, out, ReportConfig(samples=samples, seed=seed, thumb=thumb, progress=progress))
    except (StoreError, OSError) as exc:
        fail(str(exc))
    typer.echo(result.summary())


def register(app: typer.Typer) -> None:
    """Add `report` to `app`."""
    app.command("report")(report)
