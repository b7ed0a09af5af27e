"""Remote source lists: LAION-HR-style Parquet metadata and plain text/CSV lists of URLs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from million_ird.sources.columnar import UrlColumns, join, url_rows
from million_ird.sources.common import (
    IngestConfig,
    IngestError,
    SourceBatch,
    extras_json,
    is_number_type,
    is_text_type,
    to_int,
    to_number,
    url_image_id,
    url_problem,
)


def _pick(columns: list[str], wanted: str | None, defaults: tuple[str, ...], flag: str, where: Path,
          required: bool) -> str | None:
    """The column to use: the one asked for (must exist) or the first default present."""
    if wanted is not None:
        if wanted not in columns:
            raise IngestError(f"{where}: no column {wanted!r} (columns: {', '.join(columns)}); pass --{flag} NAME")
        return wanted
    for name in defaults:
        if name in columns:
            return name
    if required:
        raise IngestError(f"{where}: none of the columns {defaults} found (columns: {', '.join(columns)}); "
                          f"pass --{flag} NAME")
    return None


BATCH_ROWS = 65_536  # rows per Arrow batch read from a Parquet list


def add_url_row(batch: SourceBatch, cfg: IngestConfig, row: dict, cols: dict[str, str | None],
                origin: str) -> None:
    """Check one row of a URL list and add it to `batch` as an image or a rejected row (the row-wise
    reference of `million_ird.sources.columnar.url_rows`, used for CSV lists)."""
    url = row.get(cols["url"])
    problem = url_problem(url)
    if problem:
        batch.reject(cfg.source, origin, problem, url=str(url) if url is not None else None)
        return
    url = url.strip()
    width = to_int(row.get(cols["width"]), cols["width"] or "WIDTH", origin) if cols["width"] else None
    height = to_int(row.get(cols["height"]), cols["height"] or "HEIGHT", origin) if cols["height"] else None
    if cfg.min_side and (width is None or height is None or min(width, height) < cfg.min_side):
        batch.reject(cfg.source, origin, f"below --min-side {cfg.min_side}: declared {width}x{height}", url=url)
        return
    if cfg.max_watermark is not None and cols["watermark"]:
        pw = to_number(row.get(cols["watermark"]), cols["watermark"], origin, "fix the row or drop --max-watermark")
        if pw is not None and pw > cfg.max_watermark:
            batch.reject(cfg.source, origin, f"above --max-watermark {cfg.max_watermark}: pwatermark {pw:.3f}",
                         url=url)
            return
    caption = row.get(cols["caption"]) if cols["caption"] else None
    batch.images.append({
        "image_id": url_image_id(url), "source": cfg.source, "url": url, "path": None,
        "width": width, "height": height, "caption": None if caption is None else str(caption),
        "extra": extras_json(row, {c for k, c in cols.items() if c and k != "watermark"}), "origin": origin,
    })


def _columns(table_cols: list[str], cfg: IngestConfig, where: Path) -> dict[str, str | None]:
    need_size = cfg.min_side > 0
    cols = {
        "url": _pick(table_cols, cfg.url_col, ("URL", "url"), "url-col", where, True),
        "width": _pick(table_cols, cfg.width_col, ("WIDTH", "width"), "width-col", where, need_size),
        "height": _pick(table_cols, cfg.height_col, ("HEIGHT", "height"), "height-col", where, need_size),
        "caption": _pick(table_cols, cfg.caption_col, ("TEXT", "caption", "text"), "caption-col", where, False),
        "watermark": _pick(table_cols, None, (cfg.watermark_col,), "max-watermark", where,
                           cfg.max_watermark is not None),
    }
    return cols


def _check_types(schema: pa.Schema, cols: dict[str, str | None], cfg: IngestConfig, where: Path) -> None:
    """Refuse columns whose Arrow type cannot hold what they are used for, before any row is read."""
    url = cols["url"]
    if url is not None and not is_text_type(schema.field(url).type):
        raise IngestError(f"{where}: column {url!r} has Arrow type {schema.field(url).type}, not a string, so it "
                          "cannot hold URLs; pass --url-col NAME to name the column that holds them")
    fixes = {"width": "pass --width-col NAME to name the right column",
             "height": "pass --height-col NAME to name the right column"}
    if cfg.max_watermark is not None:
        fixes["watermark"] = "fix the column or drop --max-watermark"
    for key, fix in fixes.items():
        name = cols[key]
        if name is not None and not is_number_type(schema.field(name).type):
            raise IngestError(f"{where}: column {name!r} has Arrow type {schema.field(name).type}, not a number "
                              f"(integer, float, decimal or numeric text); {fix}")


def read_parquet_list(path: Path, cfg: IngestConfig, batch: SourceBatch) -> None:
    """Read a LAION-HR-style Parquet file (URL, TEXT, WIDTH, HEIGHT, pwatermark, ...) into `batch`."""
    if not path.is_file():
        raise IngestError(f"{path}: no such file; check the --parquet path")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise IngestError(f"{path}: not a readable Parquet file ({exc}); pass Parquet to --parquet, "
                          "text/CSV to --urls") from None
    cols = _columns(pf.schema_arrow.names, cfg, path)
    _check_types(pf.schema_arrow, cols, cfg, path)
    url_cols = UrlColumns(url=str(cols["url"]), width=cols["width"], height=cols["height"], caption=cols["caption"],
                          watermark=cols["watermark"])  # the URL column is required: never None here
    offset = 0
    with tqdm(total=pf.metadata.num_rows, desc=f"read {path.name}", unit="row", leave=False) as bar:
        for record_batch in pf.iter_batches(batch_size=BATCH_ROWS):
            origins = _origins(f"{path}:row ", offset, record_batch.num_rows)
            batch.add_tables(*url_rows(record_batch, url_cols, cfg, origins))
            offset += record_batch.num_rows
            bar.update(record_batch.num_rows)


def _origins(prefix: str, start: int, count: int) -> pa.Array:
    """`prefix` followed by the row numbers start, start + 1, ..."""
    return join(count, prefix, pc.cast(pa.array(np.arange(start, start + count, dtype=np.int64)), pa.string()))


def read_url_list(path: Path, cfg: IngestConfig, batch: SourceBatch) -> None:
    """Read a text file with one URL per line, or a CSV whose header names the URL column."""
    if not path.is_file():
        raise IngestError(f"{path}: no such file; check the --urls path")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise IngestError(f"{path}: not UTF-8 text; --urls takes a text or CSV list of URLs") from None
    first = lines[0] if lines else ""
    if path.suffix.lower() in (".csv", ".tsv") or ("," in first and "://" not in first.split(",")[0]):
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        reader = csv.DictReader(lines, delimiter=delimiter)
        cols = _columns(list(reader.fieldnames or []), cfg, path)
        for i, row in enumerate(reader, start=2):
            add_url_row(batch, cfg, row, cols, f"{path}:line {i}")
        return
    if cfg.min_side:
        raise IngestError(f"{path}: a plain URL list declares no sizes, so --min-side cannot apply; "
                          "use a CSV with width/height columns or drop --min-side")
    kept = [(i, text) for i, text in ((i, line.strip()) for i, line in enumerate(lines, start=1))
            if text and not text.startswith("#")]
    table = pa.RecordBatch.from_pydict({"url": pa.array([t for _, t in kept], pa.string())})
    origins = pa.array([f"{path}:line {i}" for i, _ in kept], pa.string())
    batch.add_tables(*url_rows(table, UrlColumns(url="url"), cfg, origins))
