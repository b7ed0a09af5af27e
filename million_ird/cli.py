"""`million-ird` command line: every stage of the curation pipeline over one dataset store."""

from __future__ import annotations

import csv
import io
import json
import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated

import duckdb
import pyarrow as pa
import typer

from million_ird.cli_common import Manifest, existing_store, fail, writes_store
from million_ird.cli_iqa import register as register_iqa
from million_ird.cli_splits import register as register_splits
from million_ird.report import format_table
from million_ird.sources.common import IngestConfig, IngestError
from million_ird.store import Store, StoreError

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    """Curate the Million-IRD pre-training set into a Parquet + DuckDB dataset store."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
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


@app.command()
@writes_store()
def download(
    manifest: Manifest,
    processes: Annotated[int, typer.Option(help="img2dataset worker processes.")] = 1,
    threads: Annotated[int, typer.Option(help="Download threads per process.")] = 16,
    timeout: Annotated[int, typer.Option(help="Seconds before a silent connection is given up.")] = 10,
    retries: Annotated[int, typer.Option(help="Maximum attempts per image across runs; each run tries every pending row once.")] = 3,
    shard_size: Annotated[int, typer.Option(help="Rows per img2dataset shard (the unit of progress and of crash loss).")] = 500,
    max_pixels: Annotated[int, typer.Option(help="Decompression-bomb guard: fail images with more pixels than this, unread.")] = 200_000_000,
) -> None:
    """Fetch originals byte-for-byte with img2dataset, verify each, record outcomes; safe to re-run."""
    from million_ird.stages.download import DownloadConfig
    from million_ird.stages.download import download as run_download

    cfg = DownloadConfig(processes=processes, threads=threads, timeout=timeout, retries=retries,
                         shard_size=shard_size, max_pixels=max_pixels)
    try:
        stats = run_download(existing_store(manifest), cfg)
    except StoreError as exc:
        fail(str(exc))
    errors = stats.pop("errors")
    typer.echo(format_table([stats]))
    if errors:
        typer.echo(format_table([{"error": k[:100], "rows": v} for k, v in errors.items()]))


@app.command()
@writes_store()
def patches(
    manifest: Manifest,
    selection: Annotated[str | None, typer.Option(help="Only images in selections/NAME (from `filter --name NAME`) [default: every ok image].")] = None,
    size: Annotated[int, typer.Option(help="Patch side in pixels (non-overlapping, centred grid).")] = 512,
    cell: Annotated[int, typer.Option(help="Cell side of the flat-region detector.")] = 64,
    flat_threshold: Annotated[float, typer.Option(help="A cell is flat when the variance of its Sobel gradient magnitude is below this (0-255 scale).")] = 150.0,
    max_flat: Annotated[float, typer.Option(help="Drop patches whose fraction of flat cells is above this.")] = 0.5,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Cut images into 512x512 patches, drop mostly-flat ones, write kept patches as lossless PNG."""
    from million_ird.stages.patches import PatchesConfig, count_candidates, run_patches

    cfg = PatchesConfig(size=size, cell=cell, flat_threshold=flat_threshold, max_flat=max_flat,
                        selection=selection, workers=workers)
    store = existing_store(manifest)
    progress = store.download_progress()
    blocker = progress.blocker(shlex.quote(str(manifest)))
    if blocker:
        fail(blocker)
    try:
        counts = run_patches(store, cfg)
    except StoreError as exc:
        fail(str(exc))
    typer.echo(format_table([counts]))
    if counts["images"] == 0:
        where = f" in selection {selection!r}" if selection else ""
        what = "image" if progress.tried == progress.images else "downloaded image"
        typer.echo(f"nothing to do: every {what}{where} is already cut" if count_candidates(store, cfg) else
                   f"nothing to do: no downloaded image{where} is at least {size} px on both sides")
    note = progress.note(shlex.quote(str(manifest)))
    if note:
        typer.echo(note)


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


@app.command()
def query(
    manifest: Manifest,
    sql: Annotated[str, typer.Argument(help="One read-only SQL statement over the views images, downloads, catalog, "
                                            "scores, selections, patches, pairs, rejected.")],
    format: Annotated[str, typer.Option("--format", "-f", help="Output: table, csv or json (a list of row objects).")] = "table",
) -> None:
    """Run read-only SQL over the store's DuckDB views."""
    if format not in ("table", "csv", "json"):
        fail(f"--format {format!r}: choose table, csv or json")
    store = existing_store(manifest)
    try:
        with store.connect() as con:
            statements = con.extract_statements(sql)
            kinds = {s.type for s in statements}
            if len(statements) != 1 or not kinds <= {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}:
                fail("query takes exactly one read-only statement (SELECT, WITH, DESCRIBE, EXPLAIN)")
            table = con.sql(sql).to_arrow_table()
    except duckdb.Error as exc:
        fail(f"SQL: {str(exc).splitlines()[0]}")
    _emit(table, format)


@app.command()
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


def _demo_root(out: Path | None) -> Path:
    from million_ird.demo import demo_root

    return demo_root(out)


DEMO_STEPS = (
    ("score", "--metrics", "niqe,brisque"),
    ("filter", "--niqe", "5", "--brisque", "35", "--min-side", "256", "--name", "demo", "--replace"),
    ("patches", "--selection", "demo", "--size", "256"),  # the sample photos are small: 256² patches
    ("splits", "--recipe", "synthetic"),
    ("stats",),
)


@app.command()
@writes_store(lambda params: _demo_root(params["out"]), creates=True)
def demo(
    out: Annotated[Path | None, typer.Option(help="Where to build the demo dataset store [default: manifests/demo/store "
                                             "in the source checkout, where `python -m dynet_ref.train --data "
                                             "manifests/` finds it].")] = None,
    keep: Annotated[bool, typer.Option(help="Keep an existing --out folder instead of starting fresh.")] = False,
) -> None:
    """Run the whole pipeline on the bundled sample, served from a local HTTP server (no network needed)."""
    from million_ird.demo import DEFAULT_OUT, DemoConfig, copy_train_config, run_demo, train_command

    cfg = DemoConfig(out=out or DEFAULT_OUT, fresh=not keep)
    try:
        store = run_demo(cfg, echo=typer.echo)
    except (IngestError, StoreError) as exc:
        fail(str(exc))
    for step in DEMO_STEPS:
        args = [step[0], "--manifest", str(store.root), *step[1:]]
        typer.echo(f"\n== million-ird {' '.join(args)}")
        app(args, standalone_mode=False)
    settings = copy_train_config(cfg, store)
    typer.echo(f"\nDemo store: {store.root}" + (f" (training settings: {settings})" if settings else ""))
    typer.echo(f"Try: million-ird query --manifest {store.root} "
               "\"SELECT source, status, format, width, height, niqe, brisque FROM catalog\"")
    typer.echo(f"Next: train DyNet on it: {train_command(store)}")


register_iqa(app)
register_splits(app)

if __name__ == "__main__":
    app()
