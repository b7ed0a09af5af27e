"""Patches stage: cut each kept image into non-overlapping patches, drop mostly-flat ones, shard the rest.

Grid rules: a centred grid of `size`² cells, floor(width / size) by floor(height / size); the
remainder is split equally between the two sides (the extra pixel of an odd remainder goes right /
bottom), so no patch overlaps another or the border. Images shorter than one patch on either side
are left out in SQL, never decoded. Every grid cell gets a row with its box and flat_ratio; kept
patches are encoded losslessly (PNG; 16-bit sources stay 16-bit, gray becomes RGB) into tar shards
under files/patches/<fingerprint>/, with their shard, member name, byte offset and length. An image
that cannot be decoded gets one error row (kept false, no box), and is not tried again unless
`--retry-errors`. Images that dedup dropped are skipped unless `--include-duplicates`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import pyarrow as pa

from million_ird import driver
from million_ird.flat import CELL, DESPECKLE_RING, DITHER_SIGMA, GRADIENT_VARIANCE, flat_ratio, gray
from million_ird.images import ImageError, encode_png, read_image, resolve
from million_ird.lock import store_lock
from million_ird.schema import PATCHES
from million_ird.shards import ShardWriter
from million_ird.stage import Stage, fingerprint_of
from million_ird.store import Store, StoreError

log = logging.getLogger(__name__)
PATCHES_VERSION = "2"  # bump when the grid, the detector or the encoding changes what is written
SHARD_DIR = "files/patches"
PNG_RATIO = 0.5  # PNG bytes / raw bytes of a typical photo patch: sizes batches so a shard comes out near shard_mb


@dataclass(frozen=True)
class PatchesConfig:
    """Patch size, flat-region detector settings, shard size, which images."""

    size: int = 512
    cell: int = CELL
    flat_threshold: float = GRADIENT_VARIANCE
    max_flat: float = 0.5
    selection: str | None = None
    shard_mb: int = 1024
    images_per_batch: int = 1024
    include_duplicates: bool = False

    def __post_init__(self) -> None:
        if self.size < 1 or self.cell < 1 or self.cell > self.size:
            raise StoreError(f"--size {self.size} and --cell {self.cell}: both must be positive with the cell no "
                             "larger than the patch (e.g. --size 512 --cell 64)")
        if not 0 <= self.max_flat <= 1 or self.shard_mb < 1 or self.images_per_batch < 1:
            raise StoreError(f"--max-flat {self.max_flat} must be in 0..1, --shard-mb {self.shard_mb} and "
                             f"--images-per-batch {self.images_per_batch} at least 1")

    def cells_per_batch(self) -> float:
        """Grid cells (16-bit ones count twice) whose patches fill about one shard of `shard_mb` as PNG."""
        return self.shard_mb * 2**20 / (self.size * self.size * 3 * PNG_RATIO)


def grid(width: int, height: int, size: int) -> list[tuple[int, int]]:
    """Top-left corners (x, y) of the centred non-overlapping size x size grid."""
    nx, ny = width // size, height // size
    x0, y0 = (width - nx * size) // 2, (height - ny * size) // 2
    return [(x0 + i * size, y0 + j * size) for j in range(ny) for i in range(nx)]


def candidates(cfg: PatchesConfig) -> tuple[str, list[Any]]:
    """ok images at least one patch tall and wide, in the selection if given, not dropped by dedup, with
    `cells`: their grid cells (twice for 16-bit), what a batch is sized by."""
    where = ["status = 'ok'", "path IS NOT NULL", "least(width, height) >= ?"]
    params: list[Any] = [cfg.size, cfg.size, cfg.size]
    if cfg.selection:
        where.append("image_id IN (SELECT image_id FROM selections WHERE selection = ?)")
        params.append(cfg.selection)
    if not cfg.include_duplicates:
        where.append("NOT duplicate_dropped")
    return (f"SELECT image_id, path, (width // ?) * (height // ?) * (CASE WHEN bit_depth > 8 THEN 2 ELSE 1 END) "
            f"AS cells FROM catalog WHERE {' AND '.join(where)}", params)


class PatchStage(Stage):
    """image rows (image_id, path) -> one row per grid patch (kept ones sharded), or one error row."""

    name = "patches"
    table = "patches"
    needs = ("path", "cells")
    batch_cost = "cells"

    def __init__(self, root: Path, cfg: PatchesConfig) -> None:
        self.root, self.cfg = root, cfg
        self.batch_size, self.batch_budget = cfg.images_per_batch, cfg.cells_per_batch()
        self._fp = fingerprint_of("patches", PATCHES_VERSION, cfg.size, cfg.cell, cfg.flat_threshold, cfg.max_flat,
                                  DESPECKLE_RING, DITHER_SIGMA)

    def candidates_sql(self) -> tuple[str, list[Any]]:
        """See `candidates`."""
        return candidates(self.cfg)

    def fingerprints(self) -> dict[str, str]:
        """One unit: the grid, detector and encoding settings."""
        return {"": self._fp}

    def setup(self) -> None:
        """One OpenCV thread per worker process."""
        cv2.setNumThreads(1)

    def summary_sql(self) -> str:
        """Images cut, patches, kept and flat-dropped patches of the run."""
        return ("SELECT count(DISTINCT image_id) FILTER (WHERE error IS NULL) AS images, count(patch_id) AS patches, "
                "count(*) FILTER (WHERE kept) AS kept, count(*) FILTER (WHERE NOT kept AND error IS NULL) "
                "AS dropped_flat, count(DISTINCT shard) AS shards FROM patches WHERE run_id = ?")

    def _cut(self, image_id: str, path: str, shards: ShardWriter) -> list[dict]:
        pixels = read_image(resolve(self.root, path), rgb=True)
        size, rows = self.cfg.size, []
        luma = gray(pixels)  # once per image: the same values per patch as converting each patch
        for x, y in grid(pixels.shape[1], pixels.shape[0], size):
            patch = pixels[y:y + size, x:x + size]
            ratio = flat_ratio(luma[y:y + size, x:x + size], self.cfg.cell, self.cfg.flat_threshold)
            patch_id = f"{image_id}_{y}_{x}"
            row = {"patch_id": patch_id, "image_id": image_id, "x": x, "y": y, "size": size,
                   "flat_ratio": ratio, "kept": ratio <= self.cfg.max_flat, "fingerprint": self._fp}
            if row["kept"]:
                m = shards.add(f"{patch_id}.png", encode_png(patch))
                row.update(shard=m.shard, member=m.member, byte_offset=m.byte_offset, nbytes=m.nbytes)
            rows.append(row)
        return rows

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Cut every image of the batch into the batch's own shards, closed before the rows are returned."""
        shards = ShardWriter(self.root, f"{SHARD_DIR}/{self._fp}", self.cfg.shard_mb * 2**20)
        rows: list[dict] = []
        try:
            for image_id, path in zip(batch.column("image_id").to_pylist(), batch.column("path").to_pylist(),
                                      strict=True):
                try:
                    rows.extend(self._cut(image_id, path, shards))
                except (ImageError, cv2.error) as exc:
                    rows.append({"image_id": image_id, "kept": False, "fingerprint": self._fp,
                                 "error": f"{type(exc).__name__}: {exc}", "retryable": False})
            shards.close()
        except BaseException:
            shards.abort()
            raise
        return pa.RecordBatch.from_pylist(rows, schema=PATCHES)


def remove_orphan_shards(store: Store) -> int:
    """Delete shards no patches row points at (a killed run's, renamed before its rows were written)."""
    folder = store.root / SHARD_DIR
    if not folder.is_dir():
        return 0
    used = set(store.query("SELECT DISTINCT shard FROM patches WHERE shard IS NOT NULL").column(0).to_pylist())
    removed = 0
    for shard in folder.glob("*/*.tar"):
        if shard.relative_to(store.root).as_posix() not in used:
            shard.unlink()
            removed += 1
    return removed


def count_candidates(store: Store, cfg: PatchesConfig) -> int:
    """How many images `cfg` would cut, counting those already cut (tells "all done" from "none fits")."""
    sql, params = candidates(cfg)
    return store.query(f"SELECT count(*) FROM ({sql})", params).column(0)[0].as_py()


def run_patches(store: Store, cfg: PatchesConfig, run: driver.DriverConfig | None = None) -> dict:
    """Cut every pending image through the driver (under the store lock); returns the run's counts."""
    store.check_selection(cfg.selection)
    with store_lock(store.root):
        orphans = remove_orphan_shards(store)
        config = {**asdict(cfg), "despeckle_ring": DESPECKLE_RING, "dither_sigma": DITHER_SIGMA}  # the whole detector
        stats = driver.run(store, PatchStage(store.root, cfg), run or driver.DriverConfig(), config=config)
    stats["orphan_shards_removed"] = orphans
    return stats
