"""Patches stage: cut each kept image into non-overlapping 512x512 patches, drop mostly-flat ones.

The grid is centred (equal leftovers on both sides); every patch gets a row with its box and
flat_ratio; kept patches are written losslessly as PNG (16-bit sources stay 16-bit) under
files/patches/. Images shorter than one patch are skipped in SQL, never decoded.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
from tqdm import tqdm

from million_ird.atomic import atomic_path
from million_ird.flat import CELL, GRADIENT_VARIANCE, flat_ratio
from million_ird.lock import store_lock
from million_ird.runner import run_stage
from million_ird.schema import PATCHES
from million_ird.stages.base import Stage
from million_ird.store import Store, StoreError, new_run_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PatchesConfig:
    """Patch size, flat-region detector settings, which images, how many workers."""

    size: int = 512
    cell: int = CELL
    flat_threshold: float = GRADIENT_VARIANCE
    max_flat: float = 0.5
    selection: str | None = None
    workers: int = 1
    batch_images: int = 8


def grid(width: int, height: int, size: int) -> list[tuple[int, int]]:
    """Top-left corners (x, y) of the centred non-overlapping size x size grid."""
    nx, ny = width // size, height // size
    x0, y0 = (width - nx * size) // 2, (height - ny * size) // 2
    return [(x0 + i * size, y0 + j * size) for j in range(ny) for i in range(nx)]


def read_pixels(path: Path) -> np.ndarray:
    """Decode to 3-channel BGR (alpha dropped, gray expanded), keeping 8 or 16 bits."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot decode {path}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = img[..., :3]
    return np.ascontiguousarray(img)


def write_png_atomic(path: Path, pixels: np.ndarray) -> None:
    """Lossless PNG through a temp name, then rename."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), pixels, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
            raise OSError(f"cannot write {tmp}")


class PatchStage(Stage):
    """image rows (image_id, path) -> one row per grid patch, with flat_ratio and kept flag."""

    name = "patches"
    needs = ("image_id", "path")
    output_schema = PATCHES

    def __init__(self, root: Path, cfg: PatchesConfig, run_id: str) -> None:
        self.root, self.cfg, self.run_id = root, cfg, run_id

    def setup(self) -> None:
        """One OpenCV thread per worker process."""
        cv2.setNumThreads(1)

    def _patches_of(self, image_id: str, path: str) -> list[dict]:
        full = Path(path) if os.path.isabs(path) else self.root / path
        pixels = read_pixels(full)
        rows = []
        size = self.cfg.size
        for x, y in grid(pixels.shape[1], pixels.shape[0], size):
            patch = pixels[y:y + size, x:x + size]
            ratio = flat_ratio(patch[..., ::-1], self.cfg.cell, self.cfg.flat_threshold)
            patch_id = f"{image_id}_{y}_{x}"
            kept = ratio <= self.cfg.max_flat
            rel = f"files/patches/{image_id[:2]}/{patch_id}.png" if kept else None
            if kept:
                write_png_atomic(self.root / rel, patch)
            rows.append({"patch_id": patch_id, "image_id": image_id, "x": x, "y": y, "size": size,
                         "flat_ratio": ratio, "kept": kept, "path": rel, "run_id": self.run_id})
        return rows

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Cut every image of the batch; an undecodable image is logged and yields no rows."""
        rows: list[dict] = []
        for image_id, path in zip(batch.column("image_id").to_pylist(), batch.column("path").to_pylist(), strict=True):
            try:
                rows.extend(self._patches_of(image_id, path))
            except (ValueError, OSError) as exc:
                log.warning("patches: skipping %s: %s", image_id, exc)
        return pa.RecordBatch.from_pylist(rows, schema=PATCHES)


def _candidates(cfg: PatchesConfig) -> tuple[list[str], list[object]]:
    """WHERE terms and parameters for ok images at least one patch tall and wide, in the selection if given."""
    where = ["c.status = 'ok'", "least(c.width, c.height) >= ?"]
    params: list[object] = [cfg.size]
    if cfg.selection:
        where.append("c.image_id IN (SELECT image_id FROM selections WHERE selection = ?)")
        params.append(cfg.selection)
    return where, params


def pending(store: Store, cfg: PatchesConfig) -> pa.Table:
    """ok images at least one patch tall and wide, in the selection if given, with no patch rows yet."""
    where, params = _candidates(cfg)
    where.append("c.image_id NOT IN (SELECT image_id FROM patches)")
    return store.query(f"SELECT c.image_id, c.path FROM catalog c WHERE {' AND '.join(where)} ORDER BY c.image_id",
                       params)


def count_candidates(store: Store, cfg: PatchesConfig) -> int:
    """How many images `cfg` would cut, counting those already cut (tells "all done" from "none fits")."""
    where, params = _candidates(cfg)
    return store.query(f"SELECT count(*) FROM catalog c WHERE {' AND '.join(where)}", params).column(0)[0].as_py()


def _batches(table: pa.Table, size: int) -> Iterator[pa.RecordBatch]:
    for start in range(0, table.num_rows, size):
        yield from table.slice(start, size).to_batches()


def run_patches(store: Store, cfg: PatchesConfig) -> dict:
    """Cut every pending image; appends patch rows per batch so an interrupted run resumes (holds the store lock)."""
    if cfg.selection and not (store.root / "selections" / cfg.selection).is_dir():
        raise StoreError(f"no selection {cfg.selection!r} in {store.root}/selections; "
                         "run `million-ird filter --name NAME` first or drop --selection")
    with store_lock(store.root):  # re-entrant: a no-op under the CLI's lock, the guard for library callers
        return _run_patches(store, cfg)


def _run_patches(store: Store, cfg: PatchesConfig) -> dict:
    store.clean_temp()
    run_id = new_run_id("patches")
    started = time.time()
    todo = pending(store, cfg)
    counts = {"images": todo.num_rows, "patches": 0, "kept": 0, "dropped_flat": 0}
    stage = PatchStage(store.root, cfg, run_id)
    with tqdm(total=todo.num_rows, desc="patches", unit="img") as bar:
        for out in run_stage(stage, _batches(todo, cfg.batch_images), cfg.workers):
            table = pa.Table.from_batches([out], schema=PATCHES)
            store.append("patches", table, run_id)
            kept = sum(table.column("kept").to_pylist())
            counts["patches"] += table.num_rows
            counts["kept"] += kept
            counts["dropped_flat"] += table.num_rows - kept
            bar.update(min(cfg.batch_images, bar.total - bar.n))
    counts["seconds"] = round(time.time() - started, 2)
    store.save_run("patches", run_id, cfg, counts)
    return counts
