"""`million-ird patches`: cut kept images into patches, drop mostly-flat ones."""

from __future__ import annotations

from typing import Annotated

import typer

from million_ird.cli.common import (
    Executor,
    Limit,
    Manifest,
    RayAddress,
    RetryErrors,
    Workers,
    downloaded_store,
    driver_config,
    echo_download_note,
    echo_run,
    executor_errors,
    fail,
    writes_store,
)
from million_ird.store import StoreError


@writes_store()
def patches(
    manifest: Manifest,
    selection: Annotated[str | None, typer.Option(help="Only images in selections/NAME (from `filter --name NAME`) [default: every ok image].")] = None,
    size: Annotated[int, typer.Option(help="Patch side in pixels (non-overlapping, centred grid).")] = 512,
    cell: Annotated[int, typer.Option(help="Cell side of the flat-region detector.")] = 64,
    flat_threshold: Annotated[float, typer.Option(help="A cell is flat when the variance of its Sobel gradient magnitude is below this (0-255 scale).")] = 150.0,
    max_flat: Annotated[float, typer.Option(help="Drop patches whose fraction of flat cells is above this.")] = 0.5,
    shard_mb: Annotated[int, typer.Option(help="Shard size in MB: a batch holds the images whose patches fill about this much as PNG (assuming PNG at half the raw size), and rolls over to a new tar shard past it.")] = 1024,
    images_per_batch: Annotated[int, typer.Option(help="Most images per batch (the unit of work and of crash loss; each batch closes its own shards).")] = 1024,
    include_duplicates: Annotated[bool, typer.Option(help="Also cut images that `million-ird dedup` dropped.")] = False,
    workers: Workers = 1,
    executor: Executor = "local",
    ray_address: RayAddress = None,
    retry_errors: RetryErrors = False,
    limit: Limit = None,
) -> None:
    """Cut images into patches, drop mostly-flat ones, write kept ones losslessly into tar shards; resumes by config."""
    from million_ird.stages.patches import PatchesConfig, count_candidates, run_patches

    try:
        cfg = PatchesConfig(size=size, cell=cell, flat_threshold=flat_threshold, max_flat=max_flat,
                            selection=selection, shard_mb=shard_mb, images_per_batch=images_per_batch,
                            include_duplicates=include_duplicates)
    except StoreError as exc:
        fail(str(exc))
    run = driver_config(executor, workers, ray_address, retry_errors, limit)
    store, progress = downloaded_store(manifest)
    try:
        with executor_errors():
            stats = run_patches(store, cfg, run)
    except StoreError as exc:
        fail(str(exc))
    echo_run(stats)
    if stats["pending"] == 0:
        where = f" in selection {selection!r}" if selection else ""
        what = "image" if progress.tried == progress.images else "downloaded image"
        typer.echo(f"nothing to do: every {what}{where} is already cut with these settings" if count_candidates(store, cfg)
                   else f"nothing to do: no downloaded image{where} is at least {size} px on both sides")
    echo_download_note(progress, manifest)


def register(app: typer.Typer) -> None:
    """Add `patches` to `app`."""
    app.command("patches")(patches)
