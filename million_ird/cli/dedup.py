"""`million-ird dedup`: exact and near-duplicate groups across sources, and test-set decontamination."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from million_ird.cli.common import (
    Executor,
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
from million_ird.dedup import DEFAULT_MAX_DISTANCE, DEFAULT_TEST_DISTANCE
from million_ird.store import StoreError


def _names(value: str | None) -> tuple[str, ...]:
    """A comma-separated list of names, blanks dropped."""
    return tuple(name.strip() for name in (value or "").split(",") if name.strip())


@writes_store()
def dedup(
    manifest: Manifest,
    max_distance: Annotated[int, typer.Option(
        help="Near-duplicate radius: images whose 63-bit perceptual hashes (full frame or centre box) differ in at "
             "most K bits are one group. 8 catches rescaled, JPEG re-encoded and 3-5%-cropped copies; larger "
             "values group more (and more unrelated images by chance), 0 only identical hashes.",
        metavar="K")] = DEFAULT_MAX_DISTANCE,
    test_distance: Annotated[int, typer.Option(
        help="Radius of a test-set match (--against): a store image this close to any test image is dropped.",
        metavar="K")] = DEFAULT_TEST_DISTANCE,
    against: Annotated[list[Path] | None, typer.Option(
        help="Test-set folder (repeatable), e.g. BSD68, Urban100, Rain100L, SOTS, or any folder of images "
             "(searched recursively): every store image that is a byte copy, or a rescaled, re-encoded or "
             "slightly cropped copy, of one of its images is dropped (reason test-set). Matches of fine textures "
             "are confirmed by their pixels; near-uniform test images (solid colours, smooth gradients) match "
             "byte copies only.")] = None,
    source_priority: Annotated[str | None, typer.Option(
        help="Comma-separated sources, best first (e.g. DIV2K,LSDIR,laion-hr): which copy a group keeps when "
             "resolutions tie; unlisted sources come after listed ones (unset: resolution, then the smallest id).")] = None,
    selection: Annotated[str | None, typer.Option(
        help="Only images in selections/NAME (from `filter --name NAME`); unset: every ok image.")] = None,
    images_per_batch: Annotated[int, typer.Option(help="Images per hashing batch (the unit of crash loss).")] = 64,
    workers: Workers = 1,
    executor: Executor = "local",
    ray_address: RayAddress = None,
    retry_errors: RetryErrors = False,
) -> None:
    """Group exact and near-duplicate images across sources, keep one per group, drop copies of test images.

    Each group keeps its highest-resolution image (ties: --source-priority, then the smallest id); \
the rows go to the `duplicates` table and patches and export skip the dropped images. Images are hashed \
once (resumed like every stage); each run recomputes the groups and is the one in force.
    """
    from million_ird.stages.dedup import DedupConfig, run_dedup

    try:
        cfg = DedupConfig(max_distance=max_distance, test_distance=test_distance,
                          against=tuple(str(p) for p in against or ()), source_priority=_names(source_priority),
                          selection=selection, images_per_batch=images_per_batch)
    except ValueError as exc:
        fail(str(exc))
    run = driver_config(executor, workers, ray_address, retry_errors, None)
    store, progress = downloaded_store(manifest)
    try:
        with executor_errors():
            stats = run_dedup(store, cfg, run)
    except StoreError as exc:
        fail(str(exc))
    by_source = stats.get("dropped_by_source") or {}
    echo_run(stats, skip=("dropped_by_source", "unknown_priority_sources"))
    if by_source:
        from million_ird.summary import format_table

        typer.echo(format_table([{"source": k, "dropped": v} for k, v in by_source.items()]))
    if stats.get("unknown_priority_sources"):
        typer.echo(f"note: --source-priority names sources with no image here: "
                   f"{', '.join(stats['unknown_priority_sources'])}")
    if stats.get("test_files_byte_only"):
        typer.echo(f"note: {stats['test_files_byte_only']} test file(s) are near-uniform (solid colour, smooth "
                   "gradient): their hash carries nothing, so only byte-identical copies of them are dropped")
    if stats.get("test_pixel_unreadable"):
        typer.echo(f"warning: {stats['test_pixel_unreadable']} image(s) hash-matched a test image but could not be "
                   "read for the pixel check, and were kept")
    typer.echo(f"dropped {stats['dropped']} of {stats['images']} images "
               f"({stats['dropped_exact']} exact, {stats['dropped_near']} near, {stats['dropped_test_set']} test-set)")
    echo_download_note(progress, manifest)


def register(app: typer.Typer) -> None:
    """Add `dedup` to `app`."""
    app.command("dedup")(dedup)
