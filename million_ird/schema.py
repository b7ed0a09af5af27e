"""Explicit Arrow schemas for every table of a dataset store (never inferred from data)."""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

IMAGES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("url", pa.string()),  # http(s) URL, null for local-folder rows
        pa.field("path", pa.string()),  # absolute path for local-folder rows, null for URL rows
        pa.field("width", pa.int64()),  # declared by the source list (may be null)
        pa.field("height", pa.int64()),
        pa.field("caption", pa.string()),
        pa.field("extra", pa.string()),  # JSON object with every other input column, kept verbatim
        pa.field("origin", pa.string()),  # the input file and row the entry came from
        pa.field("ingested_at", TS),
    ]
)

DOWNLOADS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # 'ok' | 'failed'
        pa.field("error", pa.string()),
        pa.field("path", pa.string()),  # relative to the store root; absolute for local-folder sources
        pa.field("format", pa.string()),  # from magic bytes: jpeg/png/webp/bmp/tiff/gif
        pa.field("width", pa.int64()),
        pa.field("height", pa.int64()),
        pa.field("channels", pa.int16()),
        pa.field("bit_depth", pa.int16()),
        pa.field("bytes", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("attempt", pa.int32(), nullable=False),
        pa.field("run_id", pa.string()),
        pa.field("finished_at", TS),
    ]
)

SCORES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("niqe", pa.float64()),
        pa.field("brisque", pa.float64()),
        pa.field("nima", pa.float64()),
        pa.field("metrics", pa.string()),  # comma list of the metrics this row carries
        pa.field("scorer_version", pa.string()),  # package version + metric implementation versions
        pa.field("params_sha256", pa.string()),  # hash of the parameter files used (NIQE/BRISQUE/NIMA weights)
        pa.field("seconds", pa.float64()),
        pa.field("error", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("scored_at", TS),
    ]
)

SELECTIONS = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("selection", pa.string(), nullable=False),  # the NAME of selections/NAME/
    ]
)

PATCHES = pa.schema(
    [
        pa.field("patch_id", pa.string(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("x", pa.int32(), nullable=False),
        pa.field("y", pa.int32(), nullable=False),
        pa.field("size", pa.int32(), nullable=False),
        pa.field("flat_ratio", pa.float32()),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("path", pa.string()),  # relative to the store root
        pa.field("run_id", pa.string()),
    ]
)

PAIRS = pa.schema(
    [
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("recipe", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),  # train | test
        pa.field("task", pa.string(), nullable=False),  # denoise | derain | dehaze
        pa.field("clean", pa.string(), nullable=False),  # path (absolute or relative to the store root)
        pa.field("degraded", pa.string()),  # path, or null when degraded on the fly from `spec`
        pa.field("degradation", pa.string()),
        pa.field("params", pa.string()),  # JSON object
        pa.field("seed", pa.int64()),
        pa.field("sigma", pa.float32()),
        pa.field("run_id", pa.string()),
    ]
)

REJECTED = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("path", pa.string()),
        pa.field("origin", pa.string(), nullable=False),  # input file and row
        pa.field("reason", pa.string(), nullable=False),
        pa.field("run_id", pa.string()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "images": IMAGES,
    "rejected": REJECTED,
    "downloads": DOWNLOADS,
    "scores": SCORES,
    "patches": PATCHES,
    "pairs": PAIRS,
}
