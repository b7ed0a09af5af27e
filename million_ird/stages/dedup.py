"""Dedup stage: exact and near-duplicate groups across all sources, and test-set decontamination.

`run_dedup`, under the store lock:
1. hashes every test image under each `--against` folder (in process: they are few) with the ladder of
   centre boxes `phash.TEST_REGIONS`, and its file's sha256; a missing or image-less folder, or a test
   file that cannot be decoded, stops the run before anything is written. A test image below
   `dedup.TEXTURE_MIN` structure (solid colour, smooth gradient) is matched by its bytes only (counted as
   `test_files_byte_only`); one between that and `phash.STRUCTURE_MIN` (a fine texture) is hashed, but
   its matches need the pixel check (`test_files_low_structure`);
2. runs the `hashes` stage through the driver (resumes; the same code again hashes nothing);
3. reads the hashes in force (this code's fingerprint, no error) of the ok images, with sha256, size and
   source from the catalog;
4. test-set matches: an image within `test_distance` of any box of a hashed test image, or
   byte-identical to any test file, is dropped with reason `test-set`, `matched` = the closest test file
   (absolute path), `distance` = its Hamming distance (0 for a byte copy), `group_id` null. A hash match
   in which the store image or the test image is not informative counts only when their pixels agree
   (`dedup.same_pixels`: both files are decoded again; they are few);
5. groups: exact copies (sha256) and near copies (full-frame or centre-box pHash within `max_distance`,
   informative images only) are connected components; each keeps one image, the one with most pixels,
   then the earliest source in `source_priority`, then the smallest id. Test-set-dropped images still
   link their group but are never kept: the best of the other members is; a group with fewer than two
   other members writes no rows. The pair search runs on `--workers` threads;
6. appends one row per dropped or kept grouped image to `duplicates` under a new run_id, then saves the
   run record, which puts this run in force (`latest_duplicates`, `catalog.duplicate_dropped`); a run
   that finds nothing writes no rows and so clears the earlier ones.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from million_ird import driver, phash
from million_ird.dedup import (
    DEFAULT_MAX_DISTANCE,
    DEFAULT_TEST_DISTANCE,
    ROWS,
    TEXTURE_MIN,
    group_duplicates,
    match_test_sets,
    pixel_thumbnails,
    same_pixels,
)
from million_ird.images import IMAGE_SUFFIXES, ImageError, decode, read_image, resolve
from million_ird.lock import store_lock
from million_ird.stage import fingerprint_of
from million_ird.stages.hashes import PHASH_VERSION, HashStage, hash_candidates, hash_fingerprint
from million_ird.store import Store, StoreError, new_run_id

log = logging.getLogger(__name__)
DEDUP_VERSION = "2"  # bump when the grouping, keep rule or test-set rule changes the rows written


@dataclass(frozen=True)
class DedupConfig:
    """Grouping radius, test-set radius and folders, keep-rule source priority, which images."""

    max_distance: int = DEFAULT_MAX_DISTANCE
    test_distance: int = DEFAULT_TEST_DISTANCE
    against: tuple[str, ...] = ()
    source_priority: tuple[str, ...] = ()
    selection: str | None = None
    images_per_batch: int = 64

    def __post_init__(self) -> None:
        """Refuse radii a 64-bit hash cannot have."""
        for name in ("max_distance", "test_distance"):
            if not 0 <= getattr(self, name) < 64:
                raise ValueError(f"{name} must be in [0, 63], got {getattr(self, name)}")


@dataclass(frozen=True)
class HashedTestSets:
    """The hashed test sets: one name per hash (a test file repeated per box), file sha256 -> first such file."""

    names: list[str] = field(default_factory=list)
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    by_sha256: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, str]] = field(default_factory=list)  # (absolute path, sha256) of every test file
    not_informative: int = 0  # test files below phash.STRUCTURE_MIN: low_structure + byte_only
    low_structure: frozenset[str] = frozenset()  # hashed test files whose matches need the pixel check
    byte_only: int = 0  # test files below dedup.TEXTURE_MIN: matched by their sha256 only


def list_test_files(folder: Path) -> list[Path]:
    """Every image file under `folder` (recursively, sorted, hidden files skipped); one-line errors."""
    if not folder.is_dir():
        raise StoreError(f"--against {folder}: no such test-set folder")
    files = sorted(Path(d) / f for d, _, names in os.walk(folder) for f in names
                   if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith("."))
    if not files:
        raise StoreError(f"--against {folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    return files


def hash_test_sets(folders: tuple[Path, ...]) -> HashedTestSets:
    """Hash every box of `phash.TEST_REGIONS` of every test image (informative ones) and every file's sha256."""
    files = [f for folder in folders for f in list_test_files(folder)]
    names: list[str] = []
    hashes: list[np.ndarray] = []
    by_sha: dict[str, str] = {}
    listed: list[tuple[str, str]] = []
    low: set[str] = set()
    flat = 0
    for path in files:
        try:
            data = path.read_bytes()  # read once: hashed, then decoded
            digest = hashlib.sha256(data).hexdigest()
            pixels = decode(data, path)
        except (OSError, ImageError) as exc:
            raise StoreError(f"--against: {exc}; remove or replace that test file") from exc
        by_sha.setdefault(digest, str(path))
        listed.append((str(path), digest))
        structure = phash.hash_image(pixels).structure
        if structure < TEXTURE_MIN:  # its hash is rounding noise: matched by sha256 only
            flat += 1
            continue
        if structure < phash.STRUCTURE_MIN:  # a fine texture: its hash matches are confirmed by pixels
            low.add(str(path))
        variants = phash.hash_variants(pixels, phash.TEST_REGIONS)
        hashes.append(variants)
        names += [str(path)] * len(variants)
    return HashedTestSets(names, np.concatenate(hashes) if hashes else np.zeros(0, np.int64), by_sha, listed,
                          flat + len(low), frozenset(low), flat)


def load_hashes(store: Store, fingerprint: str, selection: str | None) -> pa.Table:
    """The ok images with a hash in force (this fingerprint, no error): id, sha256, size, source, hashes."""
    sql, params = hash_candidates(selection)
    query = f"""
        WITH k AS ({sql}),
             h AS (SELECT image_id, phash, phash_centre, informative FROM hashes
                   WHERE fingerprint = ? AND error IS NULL
                   QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY run_id DESC) = 1)
        SELECT c.image_id, c.sha256, c.width, c.height, c.source, c.path, h.phash, h.phash_centre, h.informative
        FROM catalog_base c JOIN h ON h.image_id = c.image_id
        WHERE c.image_id IN (SELECT image_id FROM k)
        ORDER BY c.image_id"""
    return store.query(query, [*params, fingerprint])


@dataclass(frozen=True)
class Contamination:
    """The test-set rows (ROWS, one per dropped store image) and the pixel checks behind them."""

    rows: pa.Table
    pixel_checks: int = 0  # (store image, test file) hash matches that needed the pixel check
    pixel_confirmed: int = 0  # ... and passed it
    unreadable: int = 0  # store images that could not be decoded for it (not dropped)


def _test_thumbnails(names: Iterable[str]) -> dict[str, np.ndarray]:
    """The pixel-check thumbnails of every box of `phash.TEST_REGIONS` of each test file (absolute paths)."""
    out = {}
    for name in names:
        try:
            out[name] = pixel_thumbnails(read_image(name), phash.TEST_REGIONS)
        except (ImageError, cv2.error) as exc:
            raise StoreError(f"--against: {exc}; remove or replace that test file") from exc
    return out


def confirm_by_pixels(rows: list[dict], paths: dict[str, str], root: Path | None,
                      workers: int = 1) -> tuple[list[dict], int]:
    """The hash matches (ROWS dicts) whose store image and test file agree in pixels (`dedup.same_pixels`),
    and the number of store images that could not be read (their matches are not kept)."""
    if not rows:
        return [], 0
    if root is None or any(not paths.get(r["image_id"]) for r in rows):
        raise ValueError("a test-set pixel check reads store images: pass the store root and a path column")
    tests = _test_thumbnails(sorted({r["matched"] for r in rows}))
    by_image: dict[str, list[dict]] = {}
    for row in rows:
        by_image.setdefault(row["image_id"], []).append(row)

    def check(image_id: str) -> list[dict] | None:
        try:
            thumbs = pixel_thumbnails(read_image(resolve(root, paths[image_id])), (1.0, phash.CENTRE))
        except (ImageError, cv2.error) as exc:
            log.warning("test-set pixel check: cannot read image %s (kept): %s", image_id, exc)
            return None
        return [r for r in by_image[image_id] if same_pixels(tests[r["matched"]], thumbs)]

    with ThreadPoolExecutor(max(1, workers)) as pool:  # decoding and resizing release the GIL
        results = list(pool.map(check, by_image))
    return [r for result in results if result for r in result], sum(result is None for result in results)


def closest_test_matches(images: pa.Table, tests: HashedTestSets, max_distance: int, root: Path | None = None,
                         workers: int = 1) -> Contamination:
    """One test-set row (ROWS) per store image that near-matches or byte-copies a test file: the closest one.

    Every store image is searched (informative or not); a hash match is kept alone only when the store image
    is informative and the test file is not in `tests.low_structure`, otherwise only when the pixels agree
    (the store images are read from `root` on `workers` threads).
    """
    variants = np.c_[images.column("phash").to_numpy(), images.column("phash_centre").to_numpy()]
    found = match_test_sets(images.column("image_id"), variants, tests.hashes, tests.names,
                            max_distance=max_distance).to_pylist()
    hit = images.filter(pc.is_in(images.column("image_id"),
                                 value_set=pa.array(sorted({r["image_id"] for r in found}), pa.string())))
    paths = dict(zip(hit.column("image_id").to_pylist(),
                     hit.column("path").to_pylist() if "path" in hit.column_names else [None] * hit.num_rows,
                     strict=True))
    flat = {i for i, ok in zip(hit.column("image_id").to_pylist(), hit.column("informative").to_pylist(), strict=True)
            if not ok}
    check = [r for r in found if r["image_id"] in flat or r["matched"] in tests.low_structure]
    confirmed, unreadable = confirm_by_pixels(check, paths, root, workers)
    found = [r for r in found if not (r["image_id"] in flat or r["matched"] in tests.low_structure)] + confirmed
    copies = images.filter(pc.is_in(images.column("sha256"), value_set=pa.array(list(tests.by_sha256), pa.string())))
    for image_id, sha in zip(copies.column("image_id").to_pylist(), copies.column("sha256").to_pylist(), strict=True):
        found.append({"image_id": image_id, "group_id": None, "kept": False, "reason": "test-set",
                      "matched": tests.by_sha256[sha], "distance": 0})
    best: dict[str, dict] = {}
    for row in sorted(found, key=lambda r: (r["image_id"], r["distance"], r["matched"])):
        best.setdefault(row["image_id"], row)
    if check:
        log.info("test-set pixel check: %d of %d hash matches confirmed (%d images unreadable)",
                 len(confirmed), len(check), unreadable)
    return Contamination(pa.Table.from_pylist(list(best.values()), schema=ROWS), len(check), len(confirmed),
                         unreadable)


def group_with_test_rows(images: pa.Table, test_rows: pa.Table, cfg: DedupConfig, workers: int = 1) -> pa.Table:
    """The duplicates rows (ROWS): the groups (test-set matches link them but are never kept), then test_rows."""
    dropped = pc.is_in(images.column("image_id"), value_set=test_rows.column("image_id")).to_numpy(zero_copy_only=False)
    variants = np.c_[images.column("phash").to_numpy(), images.column("phash_centre").to_numpy()]
    groups = group_duplicates(images.column("image_id"), images.column("sha256"), variants,
                              images.column("informative"), images.column("width"), images.column("height"),
                              images.column("source"), max_distance=cfg.max_distance,
                              source_priority=cfg.source_priority, exclude=dropped, workers=workers)
    return pa.concat_tables([groups, test_rows])


def find_duplicates(images: pa.Table, tests: HashedTestSets, cfg: DedupConfig, workers: int = 1,
                    root: Path | None = None) -> pa.Table:
    """The duplicates rows (ROWS) of the hashed images: groups (test-set matches never kept), then test-set rows.

    `root`: the store root, from which `images.path` is read when a test-set match needs the pixel check.
    """
    matches = closest_test_matches(images, tests, cfg.test_distance, root, workers)
    return group_with_test_rows(images, matches.rows, cfg, workers)


def dedup_fingerprint(cfg: DedupConfig, folders: tuple[Path, ...], tests: HashedTestSets) -> str:
    """Fingerprint of the rows: settings that change them, the hash fingerprint, the test files and their sha256."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("against", "images_per_batch")}
    return fingerprint_of("dedup", DEDUP_VERSION, settings, [str(f) for f in folders], hash_fingerprint(), tests.files)


def summarise(images: pa.Table, rows: pa.Table, tests: HashedTestSets, cfg: DedupConfig,
              matches: Contamination | None = None) -> dict:
    """Counts of the run: images, groups, drops by reason and by source, test files and their pixel checks."""
    dropped = rows.filter(pc.invert(rows.column("kept"))).join(images.select(["image_id", "source"]), "image_id")
    reasons = {r["values"]: r["counts"] for r in pc.value_counts(dropped.column("reason")).to_pylist()}
    by_source = {r["values"]: r["counts"] for r in pc.value_counts(dropped.column("source")).to_pylist()}
    test_rows = dropped.filter(pc.equal(dropped.column("reason"), "test-set"))
    stats = {
        "images": images.num_rows,
        "not_informative": images.num_rows - int(pc.sum(images.column("informative")).as_py() or 0),
        "groups": pc.count_distinct(rows.column("group_id")).as_py(),
        "dropped_exact": reasons.get("exact", 0), "dropped_near": reasons.get("near", 0),
        "dropped_test_set": reasons.get("test-set", 0), "dropped": dropped.num_rows,
        "test_images": len(tests.files), "test_files_matched": pc.count_distinct(test_rows.column("matched")).as_py(),
        "test_files_low_structure": len(tests.low_structure), "test_files_byte_only": tests.byte_only,
        "test_pixel_checks": matches.pixel_checks if matches else 0,
        "test_pixel_confirmed": matches.pixel_confirmed if matches else 0,
        "dropped_by_source": dict(sorted(by_source.items(), key=lambda kv: str(kv[0]))),
    }
    known = set(pc.unique(images.column("source")).to_pylist())
    unknown = [name for name in cfg.source_priority if name not in known]
    if unknown:
        stats["unknown_priority_sources"] = unknown
    if matches and matches.unreadable:
        stats["test_pixel_unreadable"] = matches.unreadable
    return stats


def run_dedup(store: Store, cfg: DedupConfig, run: driver.DriverConfig | None = None) -> dict:
    """Hash, group and decontaminate the store's ok images, put the result in force; returns the run's counts."""
    started = time.time()
    run = run or driver.DriverConfig()
    store.check_selection(cfg.selection)
    folders = tuple(Path(f).expanduser().resolve() for f in cfg.against)
    with store_lock(store.root):
        tests = hash_test_sets(folders)  # before anything is written: a bad --against stops here
        hashed = driver.run(store, HashStage(store.root, cfg.selection, cfg.images_per_batch), run,
                            config={"version": PHASH_VERSION, "centre": phash.CENTRE,
                                    "structure_min": phash.STRUCTURE_MIN, "thumb": phash.THUMB, "low": phash.LOW})
        images = load_hashes(store, hash_fingerprint(), cfg.selection)
        workers = max(1, run.executor.workers)  # threads for the pairs and the pixel checks
        matches = closest_test_matches(images, tests, cfg.test_distance, store.root, workers)
        rows = group_with_test_rows(images, matches.rows, cfg, workers)
        fp = dedup_fingerprint(cfg, folders, tests)
        run_id = new_run_id("dedup")
        stats: dict = {"run_id": run_id, "hashed": hashed.get("hashed", 0), "hash_errors": hashed.get("errors", 0),
                       **summarise(images, rows, tests, cfg, matches)}
        full = rows.append_column("fingerprint", pa.array([fp] * rows.num_rows, pa.string()))
        full = full.append_column("run_id", pa.array([run_id] * rows.num_rows, pa.string()))
        store.append("duplicates", full, run_id=run_id)
        stats["seconds"] = round(time.time() - started, 2)
        store.save_run("dedup", run_id, {"stage": cfg, "against": [str(f) for f in folders], "driver": run,
                                         "fingerprints": {"": fp}}, stats)  # last: puts this run in force
    return stats
