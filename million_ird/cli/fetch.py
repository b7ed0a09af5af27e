"""`million-ird ingest` and `million-ird download`: source lists into the store, originals onto disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from million_ird.cli.common import Manifest, existing_store, fail, writes_store
from million_ird.sources.common import IngestConfig, IngestError
from million_ird.store import Store, StoreError
from million_ird.summary import format_table


@writes_store(creates=True)
def ingest(
    manifest: Manifest,
    parquet: Annotated[list[Path] | None, typer.Option(help="LAION-HR-style Parquet metadata file(s).")] = None,
    urls: Annotated[Path | None, typer.Option(help="Text file with one URL per line, or a CSV with a URL column.")] = None,
    folder: Annotated[Path | None, typer.Option(help="Local folder of images (DIV2K, Flickr2K, LSDIR, NTIRE), verified in place.")] = None,
    source: Annotated[str | None, typer.Option(help="Source name stored with every row [default: laion-hr, urls, or the folder name].")] = None,
    url_col: Annotated[str | None, typer.Option(help="URL column [default: URL or url].")] = None,
    width_col: Annotated[str | None, typer.Option(help="Declared-width column [default: WIDTH or width].")] = None,
    height_col: Annotated[str | None, typer.Option(help="Declared-height column [default: HEIGHT or height].")] = None,
    caption_col: Annotated[str | None, typer.Option(help="Caption column [default: TEXT, caption or text].")] = None,
    min_side: Annotated[int, typer.Option(help="Reject rows whose declared shorter side is below N pixels (0: keep all).")] = 0,
    max_watermark: Annotated[float | None, typer.Option(help="Reject rows with pwatermark above P (LAION metadata).")] = None,
) -> None:
    """Add candidate images from source lists; non-http(s) URLs are rejected with a reason, never fetched."""
    from million_ird.sources.ingest import IngestInputs
    from million_ird.sources.ingest import ingest as run_ingest

    given = [x for x in (parquet, urls, folder) if x]
    if len(given) != 1:
        fail("pass exactly one of --parquet FILE..., --urls FILE or --folder DIR")
    default_source = "laion-hr" if parquet else "urls" if urls else Path(folder).name  # type: ignore[arg-type]
    cfg = IngestConfig(source=source or default_source, url_col=url_col, width_col=width_col,
                       height_col=height_col, caption_col=caption_col, min_side=min_side,
                       max_watermark=max_watermark)
    inputs = IngestInputs(parquet=tuple(parquet or ()), urls=urls, folder=folder)
    try:
        stats = run_ingest(Store(manifest), inputs, cfg)
    except (IngestError, StoreError) as exc:
        fail(str(exc))
    reasons = stats.pop("rejected_by_reason")
    typer.echo(format_table([stats]))
    if reasons:
        typer.echo(format_table([{"rejected because": k, "rows": v} for k, v in reasons.items()]))


@writes_store()
def download(
    manifest: Manifest,
    processes: Annotated[int, typer.Option(help="img2dataset worker processes.")] = 1,
    threads: Annotated[int, typer.Option(help="Download threads per process.")] = 16,
    timeout: Annotated[int, typer.Option(help="Seconds before a silent connection is given up.")] = 10,
    retries: Annotated[int, typer.Option(help="Maximum attempts per image across runs; each run tries every pending row once.")] = 3,
    shard_size: Annotated[int, typer.Option(help="Rows per img2dataset shard (the unit of progress and of crash loss).")] = 500,
    max_pixels: Annotated[int, typer.Option(help="Decompression-bomb guard: fail images with more pixels than this, unread.")] = 200_000_000,
    http_proxy: Annotated[str | None, typer.Option(help="Send http:// requests through this proxy (e.g. http://proxy:3128).")] = None,
    max_bytes: Annotated[int, typer.Option(help="Fail files larger than this many bytes, from Content-Length before the body is read (0: no limit).")] = 200_000_000,
    allow_private: Annotated[bool, typer.Option(help="Also fetch from loopback, private, link-local and other non-public addresses (refused by default).")] = False,
    distributor: Annotated[str, typer.Option(help="img2dataset distributor: multiprocessing, ray or pyspark (rows of a shard it gives up on are fetched on the next run).")] = "multiprocessing",
) -> None:
    """Fetch originals byte-for-byte with img2dataset, verify each, record outcomes; safe to re-run."""
    from million_ird.stages.download import DownloadConfig
    from million_ird.stages.download import download as run_download

    cfg = DownloadConfig(processes=processes, threads=threads, timeout=timeout, retries=retries,
                         shard_size=shard_size, max_pixels=max_pixels, http_proxy=http_proxy,
                         max_bytes=max_bytes, allow_private=allow_private, distributor=distributor)
    try:
        stats = run_download(existing_store(manifest), cfg)
    except StoreError as exc:
        fail(str(exc))
    errors = stats.pop("errors")
    typer.echo(format_table([stats]))
    if errors:
        typer.echo(format_table([{"error": k[:100], "rows": v} for k, v in errors.items()]))


def register(app: typer.Typer) -> None:
    """Add `ingest`, `download` to `app`."""
    app.command('ingest')(ingest)
    app.command('download')(download)
