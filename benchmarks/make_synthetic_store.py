"""Build a synthetic store of N images (no image bytes) with realistic tables, for the scale benchmark.

    python -m benchmarks.make_synthetic_store --out DIR --images 2000000 [--seed 0]

Written through `Store.append` in parts of `ROWS_PER_PART` rows (as the driver would), all vectorised
except the id hashes (one blake2b per URL, ~1 s per 1M): `images` (laion-hr ~96%, LSDIR ~4%, Flickr2K,
DIV2K, NTIRE at their real sizes; ids exactly as ingest makes them, declared sizes, captions, LAION
extras as JSON, origins) and the `rejected` bad URLs; `downloads` (one row per attempt 1-3, ~70% ok in
the end, real error strings); long `scores` (niqe, brisque on every ok image, nima on ~15%, a few
error rows; the fingerprints `metric_fingerprint` gives for the shipped metrics, NIMA's for made-up
weights); one dedup run in `duplicates` (~1% of ok images; its run record puts it in force);
`selections/niqe5-brisque40` (ok, kept by dedup, NIQE < 5, BRISQUE < 40, side >= 1024); `patches` (up
to 4 row-major 512² grid cells per selected image, flat ratio, kept, tar shard/member/offset/length,
the default PatchStage fingerprint); run records under runs/ as the driver writes them; and
`inputs/laion-hr-meta.parquet`, an N-row LAION-style metadata file (URL, TEXT, WIDTH, HEIGHT,
similarity, hash, punsafe, pwatermark, LANGUAGE) whose first valid rows are the store's laion-hr
images, for the ingest benchmark.
"""

from __future__ import annotations

import argparse
import binascii
import hashlib
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from million_ird.compact import ROWS_PER_PART
from million_ird.filter import write_selection
from million_ird.schema import TS
from million_ird.sources.columnar import UrlColumns, url_rows
from million_ird.sources.common import IngestConfig, local_image_id
from million_ird.stage import fingerprint_of
from million_ird.stages.patches import PatchesConfig, PatchStage
from million_ird.stages.score import ScoreConfig, build_metrics, metric_fingerprint
from million_ird.store import Store

LAION_FILE = "inputs/laion-hr-meta.parquet"
SELECTION = "niqe5-brisque40"  # the selection the synthetic patches were cut from
LOCAL_SHARE = {"LSDIR": 84_991 / 2e6, "Flickr2K": 2_650 / 2e6, "DIV2K": 900 / 2e6, "NTIRE": 500 / 2e6}
BASE_TIME = datetime(2024, 3, 1, tzinfo=timezone.utc)
HOSTS = [f"{p}{i}.{d}" for p in ("img", "cdn", "images", "media", "static") for i in range(8)
         for d in ("example.com", "photos.example.net", "pics.example.org", "cdn.example.io", "shop.example.co")]
WORDS = ("sunset mountain lake forest city street portrait dog cat flower macro landscape beach ocean "
         "river night sky building bridge car bird tree snow desert field closeup architecture interior "
         "vintage modern detailed sharp colourful aerial old woman man child food market festival").split()
BAD_URLS = [None, "", "ftp://files.example.org/image.jpg", "/relative/photo.jpg", "https://bad host.example/x.jpg"]
ERRORS = [  # (text, weight, a verification error: the bytes arrived, so format/bytes/sha256 are set)
    ("download failed: HTTP Error 404: Not Found", 0.35, False),
    ("download failed: HTTP Error 403: Forbidden", 0.20, False),
    ("download failed: <urlopen error [Errno -2] Name or service not known>", 0.12, False),
    ("download failed: The read operation timed out", 0.12, False),
    ("download failed: HTTP Error 410: Gone", 0.05, False),
    ("download failed: <urlopen error [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "unable to get local issuer certificate (_ssl.c:1006)>", 0.06, False),
    ("not an image: the server sent HTML/XML text", 0.06, True),
    ("corrupt or truncated jpeg: image file is truncated (23 bytes not processed)", 0.04, True),
]
FORMATS = (("jpeg", "jpg", 0.82, 0.15, 0.45), ("png", "png", 0.10, 1.2, 2.2), ("webp", "webp", 0.08, 0.1, 0.3))
NIMA_WEIGHTS_SHA = hashlib.sha256(b"synthetic NIMA weights (none ship)").hexdigest()


@dataclass(frozen=True)
class SyntheticConfig:
    """How big a store to make, its seed and part size."""

    images: int = 2_000_000
    seed: int = 0
    rows_per_part: int = ROWS_PER_PART


def hex_strings(rng: np.random.Generator, n: int, nbytes: int) -> pa.Array:
    """`n` random lowercase hex strings of 2*nbytes characters, built straight from Arrow buffers."""
    data = binascii.hexlify(rng.bytes(n * nbytes))
    offsets = np.arange(n + 1, dtype=np.int32) * (2 * nbytes)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))


def pick(rng: np.random.Generator, choices: list, n: int, p: list[float] | None = None) -> pa.Array:
    """`n` draws from `choices` (weights `p`) as an Arrow array."""
    idx = rng.choice(len(choices), size=n, p=None if p is None else np.asarray(p) / np.sum(p))
    return pa.array(choices, pa.string()).take(pa.array(idx))


def join(*parts: pa.Array | str) -> pa.Array:
    """Element-wise string concatenation of arrays and literals."""
    return pc.binary_join_element_wise(*parts, "")


def text(values: np.ndarray) -> pa.Array:
    """Numbers as their decimal strings."""
    return pc.cast(pa.array(values), pa.string())


def timestamps(seconds: np.ndarray) -> pa.Array:
    """UTC timestamps `seconds` after BASE_TIME."""
    base = np.datetime64(BASE_TIME.replace(tzinfo=None), "us")
    return pa.array(base + (seconds * 1e6).astype("timedelta64[us]")).cast(TS)


def run_id(command: str, day: float) -> str:
    """A run id in the driver's format, `day` days after BASE_TIME."""
    when = BASE_TIME + timedelta(days=day)
    return f"{when:%Y%m%dT%H%M%SZ}-{command}-{hashlib.sha256(f'{command}{day}'.encode()).hexdigest()[:6]}"


def declared_sizes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """LAION-HR-like sizes: shorter side >= 1024 (log-normal tail), common aspect ratios, 65% landscape."""
    short = np.clip(1024 * np.exp(np.abs(rng.normal(0, 0.35, n))), 1024, 8000).astype(np.int64)
    ratio = rng.choice([1.0, 4 / 3, 3 / 2, 16 / 9, 2.0], size=n, p=[0.15, 0.35, 0.3, 0.15, 0.05])
    long = (short * ratio).astype(np.int64)
    landscape = rng.random(n) < 0.65
    return np.where(landscape, long, short), np.where(landscape, short, long)


def laion_metadata(rng: np.random.Generator, n: int) -> pa.Table:
    """An n-row LAION-HR-style metadata table; ~0.2% of rows have URLs ingest rejects."""
    rows = np.arange(n)
    url = join("https://", pick(rng, HOSTS, n), "/photos/", text(rows // 1000), "/", hex_strings(rng, n, 6),
               "-", text(rows), ".", pick(rng, ["jpg", "jpeg", "png", "webp"], n, [0.8, 0.05, 0.1, 0.05]))
    bad = rng.random(n) < 0.002
    bad_idx = np.flatnonzero(bad)
    url = pc.replace_with_mask(url, pa.array(bad), pick(rng, BAD_URLS, len(bad_idx)))
    words = [pick(rng, WORDS, n) for _ in range(6)]
    caption = pc.if_else(pa.array(rng.random(n) < 0.02), pa.nulls(n, pa.string()), pc.binary_join_element_wise(*words, " "))
    width, height = declared_sizes(rng, n)
    return pa.table({
        "URL": url, "TEXT": caption, "WIDTH": width, "HEIGHT": height,
        "similarity": np.round(rng.normal(0.32, 0.04, n), 6), "hash": rng.integers(-2**63, 2**63 - 1, n),
        "punsafe": np.round(rng.beta(0.5, 20, n), 6), "pwatermark": np.round(rng.beta(0.8, 6, n), 6),
        "LANGUAGE": pick(rng, ["en", "de", "fr", "es", "nolang"], n, [0.6, 0.1, 0.1, 0.1, 0.1]),
    })


def source_counts(n: int) -> dict[str, int]:
    """Images per source: the local sets at their real shares (at least 1 each), laion-hr the rest."""
    local = {s: max(1, round(n * share)) for s, share in LOCAL_SHARE.items()}
    return {"laion-hr": n - sum(local.values()), **local}


def laion_images(meta: pa.Table, laion_path: Path, count: int) -> tuple[pa.Table, pa.Table]:
    """The store's laion-hr images (the first `count` rows ingest keeps) and the rows before them it rejects,
    made by ingest's own columnar reader (`million_ird.sources.columnar.url_rows`)."""
    cols, cfg = UrlColumns(url="URL", width="WIDTH", height="HEIGHT", caption="TEXT"), IngestConfig(source="laion-hr")
    images, rejected, start = [], [], 0
    for batch in meta.to_batches(max_chunksize=65_536):
        origins = join(f"{laion_path}:row ", text(np.arange(start, start + batch.num_rows)))
        kept, refused = url_rows(batch, cols, cfg, origins)
        images.append(kept)
        rejected.append(refused)
        start += batch.num_rows
    chosen = pa.concat_tables(images).slice(0, count)
    last = int(chosen.column("origin")[-1].as_py().rsplit(" ", 1)[1]) if count else -1
    refused = pa.concat_tables(rejected)
    rows = pc.cast(pc.utf8_slice_codeunits(refused.column("origin"), len(f"{laion_path}:row ")), pa.int64())
    return chosen, refused.filter(pc.less_equal(rows, last))


def local_images(rng: np.random.Generator, source: str, n: int) -> pa.Table:
    """A local folder source (DIV2K-like sizes: about 2K on the long side), ids as `read_folder` makes them."""
    rel = [f"{i // 1000:04d}/{i:07d}.png" for i in range(n)] if source == "LSDIR" else [f"{i:04d}.png" for i in range(n)]
    root = f"/data/{source}"
    long = np.full(n, 2040) if source in ("DIV2K", "Flickr2K") else rng.integers(1400, 2600, n)
    short = rng.integers(1080, 1540, n)
    landscape = rng.random(n) < 0.8
    paths = pa.array([f"{root}/{r}" for r in rel], pa.string())
    return pa.table({
        "image_id": pa.array([local_image_id(source, r) for r in rel], pa.string()),
        "source": pa.array([source] * n), "path": paths, "width": np.where(landscape, long, short),
        "height": np.where(landscape, short, long), "origin": paths,
    })


def write_parts(store: Store, table: str, data: pa.Table, run: str, rows_per_part: int) -> int:
    """Append `data` to `table` in parts of at most `rows_per_part` rows; returns how many parts."""
    parts = 0
    for start in range(0, data.num_rows, rows_per_part):
        store.append(table, data.slice(start, rows_per_part), run_id=run)
        parts += 1
    return parts


def download_rows(rng: np.random.Generator, images: pa.Table) -> tuple[pa.Table, np.ndarray, pa.Table]:
    """Every attempt outcome (ordered by attempt, then image id), the final ok mask, and the real sizes."""
    n = images.num_rows
    local = pc.is_valid(images.column("path")).to_numpy(zero_copy_only=False)
    ok = np.where(local, rng.random(n) < 0.999, rng.random(n) < 0.70)
    attempts = np.where(ok, rng.choice([1, 2, 3], n, p=[0.9, 0.07, 0.03]), rng.choice([1, 2, 3], n, p=[0.3, 0.2, 0.5]))
    img = np.repeat(np.arange(n), attempts)
    attempt = np.arange(len(img)) - np.repeat(np.cumsum(attempts) - attempts, attempts) + 1
    status_ok = ok[img] & (attempt == attempts[img])
    w, h = images.column("width").to_numpy(), images.column("height").to_numpy()
    shrink = np.where(~local & (rng.random(n) < 0.04), rng.choice([0.5, 0.75], n), 1.0)
    real = pa.table({"width": (w * shrink).astype(np.int64), "height": (h * shrink).astype(np.int64)})
    m = len(img)
    fmt_i = np.where(local[img], 1, rng.choice(3, m, p=[f[2] for f in FORMATS]))
    err_i = rng.choice(len(ERRORS), m, p=[e[1] for e in ERRORS])
    has_bytes = status_ok | np.array([e[2] for e in ERRORS])[err_i]
    rw, rh = real.column("width").to_numpy()[img], real.column("height").to_numpy()[img]
    lo, hi = np.array([f[3] for f in FORMATS])[fmt_i], np.array([f[4] for f in FORMATS])[fmt_i]
    size = np.where(status_ok, rw * rh * rng.uniform(lo, hi), rng.integers(300, 40_000, m)).astype(np.int64)
    ids = images.column("image_id").take(pa.array(img))
    ext = pa.array([f[1] for f in FORMATS]).take(pa.array(fmt_i))
    stored = pc.if_else(pa.array(local[img]), images.column("path").take(pa.array(img)),
                        join("files/", pc.utf8_slice_codeunits(ids, 0, 2), "/", ids, ".", ext))
    ok_mask, no_bytes = pa.array(status_ok), pa.array(~has_bytes)
    png = fmt_i == 1
    rows = pa.table({
        "image_id": ids, "status": pc.if_else(ok_mask, "ok", "failed"),
        "error": pc.if_else(ok_mask, pa.scalar(None, pa.string()), pa.array([e[0] for e in ERRORS]).take(pa.array(err_i))),
        "path": pc.if_else(ok_mask, stored, pa.scalar(None, pa.string())),
        "format": pc.if_else(no_bytes, pa.scalar(None, pa.string()), pa.array([f[0] for f in FORMATS]).take(pa.array(fmt_i))),
        "width": pa.array(rw, mask=~status_ok), "height": pa.array(rh, mask=~status_ok),
        "channels": pa.array(np.where(png & (rng.random(m) < 0.15), 4, np.where(rng.random(m) < 0.02, 1, 3)).astype(np.int16),
                             mask=~status_ok),
        "bit_depth": pa.array(np.where(png & (rng.random(m) < 0.01), 16, 8).astype(np.int16), mask=~status_ok),
        "bytes": np.where(has_bytes, size, 0), "sha256": pc.if_else(no_bytes, pa.scalar(None, pa.string()), hex_strings(rng, m, 32)),
        "attempt": attempt.astype(np.int32), "finished_at": timestamps(attempt * 86400.0 + rng.uniform(0, 80000, m)),
    })
    return rows.sort_by([("attempt", "ascending"), ("image_id", "ascending")]), ok, real


def score_units() -> dict[str, tuple[str, str, str]]:
    """metric -> (version, params_sha256, fingerprint): the shipped metrics' own, NIMA's for made-up weights."""
    units = {m.name: (m.full_version, m.params_sha256, metric_fingerprint(m))
             for m in build_metrics(ScoreConfig(metrics=("niqe", "brisque")))}
    version = build_metrics(ScoreConfig(metrics=("nima",)))[0].full_version
    return {**units, "nima": (version, NIMA_WEIGHTS_SHA, fingerprint_of("nima", version, NIMA_WEIGHTS_SHA))}


SCORE_RUNS = {"niqe": 10, "brisque": 10, "nima": 11}  # the day of the score run of each metric


def score_rows(rng: np.random.Generator, ids: pa.Array, pixels: np.ndarray) -> pa.Table:
    """Long-layout scores of the ok images: niqe and brisque on all, nima on ~15%, ~0.3% error rows."""
    units = score_units()
    n, tables = len(ids), []
    for name, mean, sd, share in (("niqe", 4.3, 1.1, 1.0), ("brisque", 24.0, 13.0, 1.0), ("nima", 5.2, 0.6, 0.15)):
        rows = np.flatnonzero(rng.random(n) < share)
        k = len(rows)
        error = rng.random(k) < 0.003
        version, sha, fp = units[name]
        if name == "nima":
            msg, retryable = "RuntimeError: CUDA out of memory. Tried to allocate 1.20 GiB", True
        else:
            msg, retryable = f"ValueError: {name} is not finite (nan): flat or constant image", False
        value = np.clip(rng.normal(mean, sd, k), -10, 100)
        tables.append(pa.table({
            "image_id": ids.take(pa.array(rows)), "metric": pa.array([name] * k),
            "value": pa.array(value, mask=error), "version": pa.array([version] * k),
            "params_sha256": pa.array([sha] * k), "fingerprint": pa.array([fp] * k),
            "seconds": pixels[rows] / 1e6 * rng.uniform(0.08, 0.2, k),
            "error": pc.if_else(pa.array(error), msg, pa.scalar(None, pa.string())),
            "retryable": pa.array(np.full(k, retryable), mask=~error),
            "run_id": pa.array([run_id("score", SCORE_RUNS[name])] * k),
            "scored_at": timestamps(np.full(k, SCORE_RUNS[name] * 86400.0) + rng.uniform(0, 80000, k)),
        }))
    return pa.concat_tables(tables).sort_by([("image_id", "ascending"), ("metric", "ascending")])


def duplicate_rows(rng: np.random.Generator, ids: pa.Array) -> tuple[pa.Table, np.ndarray]:
    """One dedup run: ~1% of ok images in near-duplicate pairs (one kept, one dropped); the dropped mask."""
    n = len(ids)
    pairs = rng.permutation(n)[: 2 * (n // 200)].reshape(-1, 2)
    kept, dropped = pairs[:, 0], pairs[:, 1]
    dist = rng.integers(0, 9, len(pairs)).astype(np.int32)
    kid, did = ids.take(pa.array(kept)), ids.take(pa.array(dropped))
    fp, run = fingerprint_of("dedup", "synthetic"), run_id("dedup", 11)
    table = pa.table({
        "image_id": pa.concat_arrays([kid, did]), "group_id": pa.concat_arrays([kid, kid]),
        "kept": np.r_[np.ones(len(pairs), bool), np.zeros(len(pairs), bool)],
        "reason": pa.array(["near"] * (2 * len(pairs))), "matched": pa.concat_arrays([pa.nulls(len(pairs), pa.string()), kid]),
        "distance": np.r_[np.zeros(len(pairs), np.int32), dist], "fingerprint": pa.array([fp] * (2 * len(pairs))),
        "run_id": pa.array([run] * (2 * len(pairs))),
    })
    mask = np.zeros(n, bool)
    mask[dropped] = True
    return table, mask


def patch_rows(rng: np.random.Generator, ids: pa.Array, width: np.ndarray, height: np.ndarray, fp: str,
               size: int = 512) -> pa.Table:
    """Up to 4 grid cells (row-major, as `patches.grid` orders them) per image, flat ratios, shard layout."""
    nx, ny = width // size, height // size
    count = np.minimum(nx * ny, 4)
    img = np.repeat(np.arange(len(ids)), count)
    cell = np.arange(len(img)) - np.repeat(np.cumsum(count) - count, count)
    x = (width - nx * size)[img] // 2 + (cell % nx[img]) * size
    y = (height - ny * size)[img] // 2 + (cell // nx[img]) * size
    m = len(img)
    flat = rng.beta(0.6, 2.5, m).astype(np.float32)
    kept = flat <= 0.5
    nbytes = np.where(kept, rng.lognormal(np.log(420_000), 0.35, m), 0).astype(np.int64)
    span = np.where(kept, 1024 + (nbytes + 511) // 512 * 512, 0)  # PAX + ustar headers, padded data
    start = np.cumsum(span) - span
    shard_no = start // (1024 * 2**20)
    shard_names = hex_strings(rng, int(shard_no.max()) + 1 if m else 1, 8)
    image_ids = ids.take(pa.array(img))
    patch_id = join(image_ids, "_", text(y), "_", text(x))
    not_kept = pa.array(~kept)
    none = pa.scalar(None, pa.string())
    return pa.table({
        "patch_id": patch_id, "image_id": image_ids, "x": x.astype(np.int32), "y": y.astype(np.int32),
        "size": np.full(m, size, np.int32), "flat_ratio": flat, "kept": kept,
        "shard": pc.if_else(not_kept, none, join(f"files/patches/{fp}/", shard_names.take(pa.array(shard_no)), ".tar")),
        "member": pc.if_else(not_kept, none, join(patch_id, ".png")),
        "byte_offset": pa.array(start - shard_no * 1024 * 2**20 + 1024, mask=~kept), "nbytes": pa.array(nbytes, mask=~kept),
        "fingerprint": pa.array([fp] * m),
    })


def build_images(store: Store, cfg: SyntheticConfig, rng: np.random.Generator) -> pa.Table:
    """Write the LAION metadata file, `images` (one ingest run per source) and `rejected`; returns images."""
    laion_path = store.root / LAION_FILE
    laion_path.parent.mkdir(parents=True, exist_ok=True)
    meta = laion_metadata(rng, cfg.images)
    pq.write_table(meta, laion_path, row_group_size=128 * 1024, compression="zstd")
    counts = source_counts(cfg.images)
    laion, rejected = laion_images(meta, laion_path, counts["laion-hr"])
    tables = [laion] + [local_images(rng, s, counts[s]) for s in LOCAL_SHARE]
    for day, table in enumerate(tables):
        source = table.column("source")[0].as_py()
        run = run_id("ingest", day * 0.01)
        table = table.append_column("ingested_at", timestamps(np.full(table.num_rows, day * 864.0)))
        write_parts(store, "images", table, run, cfg.rows_per_part)
        if source == "laion-hr":
            write_parts(store, "rejected", with_run(rejected, run), run, cfg.rows_per_part)
        store.save_run("ingest", run, {"config": {"source": source}, "synthetic": True},
                       {"source": source, "new": table.num_rows})
    return pa.concat_tables(tables, promote_options="default")


def with_run(table: pa.Table, run: str) -> pa.Table:
    """`table` with a `run_id` column of `run`."""
    return table.append_column("run_id", pa.array([run] * table.num_rows, pa.string()))


def write_scored(store: Store, cfg: SyntheticConfig, rng: np.random.Generator, ok_ids: pa.Array,
                 width: np.ndarray, height: np.ndarray) -> dict[str, int]:
    """Scores, duplicates, the selection and its patches of the ok images, with their run records."""
    scores = score_rows(rng, ok_ids, (width * height).astype(np.float64))
    for run in pc.unique(scores.column("run_id")).to_pylist():
        write_parts(store, "scores", scores.filter(pc.equal(scores.column("run_id"), run)), run, cfg.rows_per_part)
    units = score_units()
    for day in sorted(set(SCORE_RUNS.values())):  # as the driver records them: the fingerprint of every unit
        metrics = tuple(m for m, d in SCORE_RUNS.items() if d == day)
        store.save_run("score", run_id("score", day), {"stage": ScoreConfig(metrics=metrics), "synthetic": asdict(cfg),
                                                       "fingerprints": {m: units[m][2] for m in metrics}},
                       {"metrics": list(metrics)})
    duplicates, dropped = duplicate_rows(rng, ok_ids)
    dedup_run = duplicates.column("run_id")[0].as_py()
    write_parts(store, "duplicates", duplicates, dedup_run, cfg.rows_per_part)
    store.save_run("dedup", dedup_run, {"synthetic": True}, {"rows": duplicates.num_rows})  # its rows are in force
    passed = _passes(scores, ok_ids) & ~dropped & (np.minimum(width, height) >= 1024)
    selection = pa.table({"image_id": ok_ids.filter(pa.array(passed)), "selection": pa.array([SELECTION] * int(passed.sum()))})
    write_selection(store, SELECTION, selection, {"name": SELECTION, "synthetic": True,
                                                  "thresholds": {"niqe": "< 5.0", "brisque": "< 40.0"}}, False)
    stage = PatchStage(store.root, PatchesConfig(selection=SELECTION))
    sel = np.flatnonzero(passed)
    patches = patch_rows(rng, ok_ids.take(pa.array(sel)), width[sel], height[sel], stage.fingerprints()[""])
    run = run_id("patches", 12)
    write_parts(store, "patches", with_run(patches, run), run, cfg.rows_per_part)
    store.save_run("patches", run, {"stage": PatchesConfig(selection=SELECTION), "fingerprints": stage.fingerprints(),
                                    "synthetic": True}, {"rows": patches.num_rows})
    return {"scores": scores.num_rows, "duplicates": duplicates.num_rows, "patches": patches.num_rows}


def build(out: Path, cfg: SyntheticConfig) -> dict[str, int]:
    """Build the whole synthetic store at `out` (must not hold one yet); returns rows per table."""
    store = Store(out)
    if store.parts("images"):
        raise SystemExit(f"{out} already holds a store; pass an empty or new --out folder")
    rng = np.random.default_rng(cfg.seed)
    images = build_images(store, cfg, rng)
    downloads, ok, real = download_rows(rng, images)
    for attempt in range(1, 4):  # one download run per attempt
        run = run_id("download", attempt)
        rows = downloads.filter(pc.equal(downloads.column("attempt"), attempt))
        write_parts(store, "downloads", with_run(rows, run), run, cfg.rows_per_part)
        store.save_run("download", run, {"synthetic": True}, {"attempted": rows.num_rows})
    ok_rows = np.flatnonzero(ok)
    ok_ids = images.column("image_id").combine_chunks().take(pa.array(ok_rows))
    width, height = real.column("width").to_numpy()[ok_rows], real.column("height").to_numpy()[ok_rows]
    counts = write_scored(store, cfg, rng, ok_ids, width, height)
    return {"images": images.num_rows, "rejected": len(store.query("SELECT 1 FROM rejected")),
            "downloads": downloads.num_rows, **counts}


def _passes(scores: pa.Table, ids: pa.Array) -> np.ndarray:
    """Per ok image: NIQE < 5 and BRISQUE < 40 (the benchmark filter), from the synthetic scores."""
    good = scores.filter(pc.is_valid(scores.column("value")))
    passing = np.ones(len(ids), bool)
    for metric, limit in (("niqe", 5.0), ("brisque", 40.0)):
        rows = good.filter(pc.equal(good.column("metric"), metric))
        ok = rows.filter(pc.less(rows.column("value"), limit)).column("image_id")
        passing &= pc.is_in(ids, value_set=ok.combine_chunks()).to_numpy(zero_copy_only=False)
    return passing


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, build the store, print rows per table and how long it took."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the (new) store folder")
    parser.add_argument("--images", type=int, default=2_000_000, help="images in the store (and LAION rows)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every draw")
    parser.add_argument("--rows-per-part", type=int, default=ROWS_PER_PART, help="rows per part file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    counts = build(args.out, SyntheticConfig(images=args.images, seed=args.seed, rows_per_part=args.rows_per_part))
    store = Store(args.out)
    for table, rows in counts.items():
        print(f"{table:11s} {rows:>10,} rows  {len(store.parts(table)):>4} parts")
    print(f"built {args.out} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
