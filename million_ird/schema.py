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

# one row per (image, metric) and attempt: a metric added to the registry needs no schema change
SCORES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("metric", pa.string(), nullable=False),  # registry name: niqe, brisque, nima, ...
        pa.field("value", pa.float64()),  # null on an error row
        pa.field("version", pa.string()),  # package version + metric implementation version
        pa.field("params_sha256", pa.string()),  # hash of the parameter file used (NIQE model, NIMA weights)
        pa.field("fingerprint", pa.string(), nullable=False),  # hash of (metric, version, params_sha256)
        pa.field("seconds", pa.float64()),
        pa.field("error", pa.string()),
        pa.field("retryable", pa.bool_()),  # true: a later run tries again (device out of memory, ...)
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

# one row per grid patch of an image (or one error row for an image that could not be cut)
PATCHES = pa.schema(
    [
        pa.field("patch_id", pa.string()),  # <image_id>_<y>_<x>; null on an error row
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("x", pa.int32()),
        pa.field("y", pa.int32()),
        pa.field("size", pa.int32()),
        pa.field("flat_ratio", pa.float32()),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("shard", pa.string()),  # tar shard relative to the store root (kept patches only)
        pa.field("member", pa.string()),  # member name inside the shard
        pa.field("byte_offset", pa.int64()),  # where the member's PNG bytes start in the shard
        pa.field("nbytes", pa.int64()),  # how many bytes they are
        pa.field("fingerprint", pa.string(), nullable=False),  # hash of size, detector settings, version
        pa.field("error", pa.string()),
        pa.field("retryable", pa.bool_()),
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
        pa.field("fingerprint", pa.string()),  # hash of the split's config (seed, sigmas, ...); null before 0.3
        pa.field("run_id", pa.string()),
    ]
)

# the pairs a splits run put in force, one row per pair; content-addressed, so a set already recorded is not
# written again. `latest_pairs` shows, per recipe, the set named in its latest finished splits run record
PAIR_SETS = pa.schema(
    [
        pa.field("set_id", pa.string(), nullable=False),  # hash of the fingerprint and the sorted pair ids
        pa.field("pair_id", pa.string(), nullable=False),
        pa.field("fingerprint", pa.string(), nullable=False),  # the pair's split fingerprint
        pa.field("run_id", pa.string()),  # the run that recorded the set first
    ]
)

# the 64-bit perceptual hash of every ok image (the per-image half of dedup)
HASHES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("phash", pa.int64()),  # 64 bits stored as a signed integer (see million_ird.phash)
        pa.field("phash_centre", pa.int64()),  # the same hash of the central region (robust to small crops)
        pa.field("informative", pa.bool_()),  # false for near-uniform images: never grouped by hash alone
        pa.field("fingerprint", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("retryable", pa.bool_()),
        pa.field("run_id", pa.string()),
    ]
)

# images that dedup or decontamination groups; the latest dedup run is the one in force
DUPLICATES = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("group_id", pa.string()),  # the kept image's id (test-set rows: null)
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),  # exact | near | test-set
        pa.field("matched", pa.string()),  # the kept image_id, or the test file, this one duplicates
        pa.field("distance", pa.int32()),  # Hamming distance of the hashes (0 for exact copies)
        pa.field("fingerprint", pa.string(), nullable=False),  # hash of the dedup settings
        pa.field("run_id", pa.string(), nullable=False),
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
    "hashes": HASHES,
    "duplicates": DUPLICATES,
    "patches": PATCHES,
    "pairs": PAIRS,
    "pair_sets": PAIR_SETS,
}
