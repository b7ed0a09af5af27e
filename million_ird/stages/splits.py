"""Build train/test pair rows (`pairs` table) from benchmark folders or from the store's own images.

A pair is either real (clean + degraded files), generated once (a test set degraded here, written as PNG
with its sha256 in `params`), or on the fly (clean + degradation + seed + `params.args`; a trainer calls
`degradations.get(degradation)(clean, degradations.rng_from_seed(seed), **params["args"])`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

import degradations
from degradations.haze import OTS_A, OTS_BETA
from million_ird import images, testsets
from million_ird.images import ImageError, read_image, to_uint8
from million_ird.store import Store

log = logging.getLogger(__name__)

RECIPES = ("all-in-one", "synthetic")
CHUNK = 1000


class SplitError(RuntimeError):
    """A split cannot be built as asked (the message says what to fix)."""


@dataclass(frozen=True)
class SplitsConfig:
    """Choices for building a split (defaults: the reference protocol; synthetic choices are ours)."""

    recipe: str = "all-in-one"
    seed: int = 0
    sigmas: tuple[float, ...] = (15.0, 25.0, 50.0)
    noise_rounding: str = "truncate"
    test_fraction: float = 0.2
    rain_preset: str = "rain100l"
    digest_on_the_fly: bool = False
    limit: int | None = None


@dataclass(frozen=True)
class BenchmarkPaths:
    """Folders of the benchmark datasets (None = not given)."""

    denoise_train: tuple[Path, ...] = ()
    rain100l: Path | None = None
    reside_ots: Path | None = None
    sots: Path | None = None
    bsd68: Path | None = None
    urban100: Path | None = None


@dataclass(frozen=True)
class Planned:
    """One pair to write: real when `degraded` is set, else built from `degradation` + `args`."""

    pair_id: str
    split: str
    task: str
    clean: str
    degraded: str | None = None
    degradation: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    sigma: float | None = None
    materialize: bool = False
    digest: bool = False


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file (or shard member) as uint8 RGB by million_ird.images' rules."""
    try:
        return to_uint8(read_image(path, rgb=True))
    except ImageError as exc:
        raise SplitError(f"{exc}; check the file exists and is a valid image") from exc


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG (through a temp name, then rename)."""
    try:
        images.write_png(path, image)
    except (ImageError, OSError) as exc:
        raise SplitError(f"cannot write {path}: {exc}; check the folder is writable") from exc


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pixels_sha256(image: np.ndarray) -> str:
    """sha256 of an image's shape and pixel bytes (independent of the PNG encoder)."""
    return hashlib.sha256(repr(image.shape).encode() + np.ascontiguousarray(image).tobytes()).hexdigest()


def resolve(store: Store, path: str) -> Path:
    """A stored path made absolute (store-relative paths are joined to the store root)."""
    p = Path(path)
    return p if p.is_absolute() else store.root / p


def derive(clean: np.ndarray, degradation: str, args: dict[str, Any], seed: int) -> tuple[np.ndarray, dict]:
    """Re-create a degraded image from its spec: degradation name, its arguments and the per-pair seed."""
    return degradations.get(degradation)(clean, degradations.rng_from_seed(seed), **args)


def rederive(store: Store, row: dict[str, Any]) -> np.ndarray:
    """The degraded image of a stored pair row, re-created from its clean file, spec and stored seed."""
    params = json.loads(row["params"] or "{}")
    return derive(read_rgb(resolve(store, row["clean"])), row["degradation"], params["args"], row["seed"])[0]


def _row(p: Planned, recipe: str, run_id: str, degraded: str | None, seed: int | None,
         params: dict[str, Any]) -> dict[str, Any]:
    return {"pair_id": p.pair_id, "recipe": recipe, "split": p.split, "task": p.task, "clean": p.clean,
            "degraded": degraded, "degradation": p.degradation, "params": json.dumps(params, sort_keys=True),
            "seed": seed, "sigma": p.sigma, "run_id": run_id}


def execute(store: Store, p: Planned, cfg: SplitsConfig, run_id: str) -> dict[str, Any]:
    """Turn a planned pair into a `pairs` row, generating and hashing the degraded image when needed."""
    if p.degradation is None:
        return _row(p, cfg.recipe, run_id, p.degraded, None, dict(p.meta))
    seed = degradations.sample_seed(cfg.seed, p.pair_id, p.degradation)
    params: dict[str, Any] = {"args": p.args, "global_seed": cfg.seed, **p.meta}
    if not (p.materialize or p.digest):
        return _row(p, cfg.recipe, run_id, None, seed, params)
    out, used = derive(read_rgb(resolve(store, p.clean)), p.degradation, p.args, seed)
    params.update(used=used, pixels_sha256=pixels_sha256(out))
    degraded = None
    if p.materialize:
        rel = Path("files") / "splits" / f"{p.pair_id}.png"
        write_png(store.root / rel, out)
        params["sha256"] = file_sha256(store.root / rel)
        degraded = rel.as_posix()
    return _row(p, cfg.recipe, run_id, degraded, seed, params)


def _noise(p_id: str, split: str, clean: Path, cfg: SplitsConfig, materialize: bool, meta: dict) -> list[Planned]:
    return [Planned(f"{p_id.replace('{s}', f's{s:g}')}", split, "denoise", str(clean), None, "gaussian_noise",
                    {"sigma": s, "rounding": cfg.noise_rounding}, meta, s, materialize,
                    cfg.digest_on_the_fly) for s in cfg.sigmas]


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


def plan_all_in_one(paths: BenchmarkPaths, cfg: SplitsConfig) -> tuple[list[Planned], dict[str, int]]:
    """Plan the reference all-in-one split from benchmark folders; returns the plan and found counts."""
    r, plan, counts = cfg.recipe, [], {}
    if paths.denoise_train:
        found = testsets.find_denoise_train(list(paths.denoise_train))
        counts["denoise-train"] = len(found)
        for f in found:
            plan += _noise(f"{r}/train/denoise/{{s}}/{_stem(f.name)}", "train", f.clean, cfg, False, {})
    if paths.rain100l:
        for split in ("train", "test"):
            found = testsets.find_rain_pairs(paths.rain100l, split)
            counts[f"rain100l-{split}"] = len(found)
            plan += [Planned(f"{r}/{split}/derain/{f.name}", split, "derain", str(f.clean), str(f.degraded),
                             meta={"source": "Rain100L", **f.meta}) for f in found]
    for key, finder, split in (("ots", testsets.find_ots, "train"), ("sots", testsets.find_sots, "test")):
        root = paths.reside_ots if key == "ots" else paths.sots
        if root:
            found = finder(root)
            counts[key] = len(found)
            plan += [Planned(f"{r}/{split}/dehaze/{_stem(f.name)}", split, "dehaze", str(f.clean), str(f.degraded),
                             meta={"source": key.upper(), **f.meta}) for f in found]
    for key in ("bsd68", "urban100"):
        root = getattr(paths, key)
        if root:
            found = testsets.find_clean_set(root, key)
            counts[key] = len(found)
            for f in found:
                plan += _noise(f"{r}/test/denoise/{key}/{{s}}/{_stem(f.name.split('/', 1)[1])}", "test",
                               f.clean, cfg, True, {"source": key})
    if not counts:
        raise SplitError("recipe all-in-one needs at least one of --denoise-train, --rain100l, --reside-ots, "
                         "--sots, --bsd68, --urban100 (or use --recipe synthetic)")
    return plan, counts


def source_images(store: Store, limit: int | None = None) -> list[tuple[str, str]]:
    """(id, path) of kept patches when the store has any, else of downloaded ('ok') catalog images."""
    rows = store.query("SELECT patch_id AS id, shard || '#' || byte_offset || '+' || nbytes AS path FROM latest_patches "
                       "WHERE kept AND shard IS NOT NULL ORDER BY patch_id")
    if rows.num_rows == 0:
        rows = store.query("SELECT image_id AS id, path FROM catalog WHERE status = 'ok' AND path IS NOT NULL "
                           "ORDER BY image_id")
    pairs = list(zip(rows.column("id").to_pylist(), rows.column("path").to_pylist(), strict=True))
    return pairs[:limit] if limit else pairs


def held_out_count(n: int, test_fraction: float) -> int:
    """Test images of a synthetic split of n: max(1, fraction * n rounded half up), leaving one for training."""
    exact = Decimal(repr(test_fraction)) * n  # decimal: 0.3 * 5 is 1.5, not 1.4999...
    return min(max(1, int(exact + Decimal("0.5"))), n - 1)


def split_key(seed: int, image_id: str) -> float:
    """Seeded sort key of one source image (a pure function of seed and id: same order in any process)."""
    return float(degradations.sample_rng(seed, image_id, "split").random())


def assign_splits(ids: list[str], seed: int, test_fraction: float,
                  fixed: dict[str, str] | None = None) -> dict[str, str]:
    """Split ids exactly: the held_out_count(n) lowest split keys go to test; ids in `fixed` keep their split.

    `fixed` holds images that already have pairs, so a store that grew never moves an image between
    splits (that would leak it); only the remaining test quota is drawn among new images.
    """
    wanted, known = held_out_count(len(ids), test_fraction), set(ids)
    out = {i: s for i, s in (fixed or {}).items() if i in known}
    need = wanted - sum(s == "test" for s in out.values())
    for image_id in sorted(ids, key=lambda i: (split_key(seed, i), i)):
        if image_id not in out:
            out[image_id] = "test" if need > 0 else "train"
            need -= out[image_id] == "test"
    got = sum(s == "test" for s in out.values())
    if got != wanted:
        log.warning("%d test images instead of %d: images that already have pairs keep their split", got, wanted)
    return out


def existing_splits(store: Store, recipe: str) -> dict[str, str]:
    """Source id -> split of images that already have pairs in this recipe (ids are pair_ids' last part)."""
    rows = store.query("SELECT DISTINCT split, split_part(pair_id, '/', -1) AS id FROM pairs WHERE recipe = ? "
                       "ORDER BY id, split DESC", [recipe]).to_pylist()
    return {r["id"]: r["split"] for r in rows}


def plan_synthetic(store: Store, cfg: SplitsConfig) -> tuple[list[Planned], dict[str, int]]:
    """Plan a synthetic all-in-one split (noise/rain/haze) from the store's own images.

    The test split is exact in size (see `held_out_count`) and every test image gets every task and sigma.
    """
    sources = source_images(store, cfg.limit)
    if not sources:
        raise SplitError(f"store {store.root} has no kept patches and no downloaded images; run ingest/download "
                         "first (or use --recipe all-in-one with benchmark folders)")
    if not 0 < cfg.test_fraction < 1:
        raise SplitError(f"--test-fraction {cfg.test_fraction}: give a fraction between 0 and 1, e.g. 0.2")
    if len(sources) < 2:
        raise SplitError(f"store {store.root} has {len(sources)} source image; a synthetic split needs at least 2 "
                         "(one train, one test): ingest and download more images"
                         + (" or raise --limit" if cfg.limit else ""))
    split_of = assign_splits([i for i, _ in sources], cfg.seed, cfg.test_fraction,
                             existing_splits(store, cfg.recipe))
    plan, r = [], cfg.recipe
    for image_id, path in sources:
        split = split_of[image_id]
        test = split == "test"
        grid = degradations.sample_rng(cfg.seed, image_id, "haze-grid")
        haze_args = {"A": OTS_A[int(grid.integers(len(OTS_A)))], "beta": OTS_BETA[int(grid.integers(len(OTS_BETA)))]}
        plan += [Planned(f"{r}/{split}/denoise/s{s:g}/{image_id}", split, "denoise", path, None, "gaussian_noise",
                         {"sigma": s, "rounding": cfg.noise_rounding}, {}, s, test, True) for s in cfg.sigmas]
        plan.append(Planned(f"{r}/{split}/derain/{image_id}", split, "derain", path, None, "rain",
                            {"preset": cfg.rain_preset}, {}, None, test, True))
        plan.append(Planned(f"{r}/{split}/dehaze/{image_id}", split, "dehaze", path, None, "haze",
                            haze_args, {}, None, test, True))
    n_test = sum(s == "test" for s in split_of.values())
    return plan, {"source images": len(sources), "train images": len(sources) - n_test, "test images": n_test}


def existing_ids(store: Store, recipe: str) -> set[str]:
    """pair_ids this recipe already wrote (what a re-run skips)."""
    rows = store.query("SELECT pair_id FROM pairs WHERE recipe = ?", [recipe])
    return set(rows.column("pair_id").to_pylist())


def write_pairs(store: Store, plan: list[Planned], cfg: SplitsConfig, run_id: str) -> Counter:
    """Execute the not-yet-written part of `plan`, appending rows in chunks; returns counts per split/task."""
    done = existing_ids(store, cfg.recipe)
    todo = [p for p in plan if p.pair_id not in done]
    written: Counter = Counter()
    rows: list[dict[str, Any]] = []
    for p in tqdm(todo, desc=f"splits {cfg.recipe}", unit="pair", disable=not todo):
        rows.append(execute(store, p, cfg, run_id))
        written[(p.split, p.task)] += 1
        if len(rows) >= CHUNK:
            store.append("pairs", pa.Table.from_pylist(rows), run_id)
            rows = []
    store.append("pairs", pa.Table.from_pylist(rows), run_id)
    written[("skipped", "already written")] = len(plan) - len(todo)
    return written


def verify(store: Store, recipe: str | None = None) -> tuple[int, list[tuple[str, str]]]:
    """Re-check every pair: files exist, stored sha256 match, and specs re-derive the same pixels."""
    sql = "SELECT * FROM pairs" + (" WHERE recipe = ?" if recipe else "") + " ORDER BY pair_id"
    table = store.query(sql, [recipe] if recipe else [])
    problems: list[tuple[str, str]] = []
    for row in tqdm(table.to_pylist(), desc="verify", unit="pair", disable=table.num_rows == 0):
        problems += [(row["pair_id"], why) for why in _check_row(store, row)]
    return table.num_rows, problems


def _check_row(store: Store, row: dict[str, Any]) -> Iterator[str]:
    params = json.loads(row["params"] or "{}")
    clean = resolve(store, row["clean"])
    if not clean.is_file():
        yield f"clean file missing: {clean}"
        return
    if row["degraded"]:
        path = resolve(store, row["degraded"])
        if not path.is_file():
            yield f"degraded file missing: {path}"
            return
        if "sha256" in params and file_sha256(path) != params["sha256"]:
            yield f"sha256 of {path} differs from the stored one"
    if row["degradation"] is None:
        return
    if "global_seed" in params and row["seed"] != degradations.sample_seed(params["global_seed"], row["pair_id"],
                                                                            row["degradation"]):
        yield "seed is not the one derived from (global_seed, pair_id, degradation)"
    if "pixels_sha256" in params:
        out, _ = derive(read_rgb(clean), row["degradation"], params["args"], row["seed"])
        if pixels_sha256(out) != params["pixels_sha256"]:
            yield "re-derived pixels differ from the stored digest"
        elif row["degraded"] and not np.array_equal(read_rgb(resolve(store, row["degraded"])), out):
            yield "degraded file pixels differ from the re-derived image"


def counts_table(counts: dict[str, int]) -> list[dict[str, object]]:
    """Found-vs-expected rows (benchmark sets) or plain counts (synthetic)."""
    if set(counts) <= set(testsets.EXPECTED):
        return testsets.found_vs_expected(counts)
    return [{"set": k, "found": v} for k, v in counts.items()]


def summary_rows(written: Counter) -> list[dict[str, object]]:
    """Rows of (split, task, pairs) for the final table."""
    return [{"split": s, "task": t, "pairs": n} for (s, t), n in sorted(written.items())]


def iter_rows(store: Store, recipe: str) -> Iterable[dict[str, Any]]:
    """All pair rows of a recipe, ordered by task then pair_id."""
    return store.query("SELECT * FROM pairs WHERE recipe = ? ORDER BY task, pair_id", [recipe]).to_pylist()
