"""`million-ird export`: the kept patches as a Hugging Face Parquet dataset or WebDataset shards, with a card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from million_ird.cli.common import Manifest, existing_store, fail
from million_ird.store import StoreError
from million_ird.summary import format_table


def _size(nbytes: int) -> str:
    value, unit = float(nbytes), "B"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            break
        value /= 1024
    return f"{nbytes} B" if unit == "B" else f"{value:.1f} {unit}"


def export(
    manifest: Manifest,
    fmt: Annotated[str, typer.Option("--format", "-f", help="hf: Parquet files under OUT/data/ that "
                                     "`datasets.load_dataset` reads with an Image feature; webdataset: tar shards "
                                     "OUT/shard-NNNNNN.tar with <key>.png + <key>.json per patch.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to create (written under a temp name beside it, "
                                      "then renamed). Inside the store only under DIR/export/, so it can never "
                                      "replace a table or the files.")],
    selection: Annotated[str | None, typer.Option(help="Only images in selections/NAME (from `filter --name NAME`) "
                                                  "[default: every image with kept patches].")] = None,
    shard_size: Annotated[int, typer.Option(help="Patches per output file (Parquet file or tar shard).")] = 1000,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out folder (swapped in once complete).")] = False,
) -> None:
    """Export the kept patches (settings in force, dedup applied) with their PNG bytes as stored, plus README.md."""
    from million_ird.export import ExportConfig, run_export

    store = existing_store(manifest)
    try:
        cfg = ExportConfig(format=fmt, out=out, selection=selection, shard_size=shard_size, overwrite=overwrite)
        stats = run_export(store, cfg)
    except StoreError as exc:
        fail(str(exc))
    except OSError as exc:  # out of disk space, no permission on --out's folder, ...
        fail(f"cannot write the export to {out}: {exc}")
    rows = [dict(r) for r in stats["per_source"]]
    rows.append({"source": "TOTAL", "images": sum(r["images"] for r in rows), "patches": stats["patches"]})
    typer.echo(format_table(rows, ["source", "images", "patches"]))
    kind = ("Parquet file" if fmt == "hf" else "tar shard") + ("s" if stats["files"] != 1 else "")
    typer.echo(f"wrote {stats['files']} {kind} "
               f"({_size(stats['bytes'])}) to {stats['out']}; dataset card: {stats['card']}")


def register(app: typer.Typer) -> None:
    """Add `export` to `app`."""
    app.command("export")(export)
