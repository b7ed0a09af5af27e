"""The plan of a split: its config and fingerprint, and the pairs a recipe covers (computed here, in Python).

`all-in-one` plans the reference protocol from benchmark folders (`million_ird.sources.benchmarks`);
`synthetic` plans noise/rain/haze pairs on the store's own kept patches (else, when no kept patch is in force,
whole downloaded images), with an exact, seeded test split drawn per image: every patch of an image shares
its split. A plan is one `Planned` per pair, done or not, with the fingerprint they are written under (the
config, and for synthetic pairs what they are made from: the patch settings in force or whole images). The
splits stage (`million_ird.stages.splits`) runs the ones its table lacks and records the plan's pair set,
which is then the set in force for the recipe.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

import degradations
from degradations.haze import OTS_A, OTS_BETA
from million_ird import __version__
from million_ird.sources import benchmarks
from million_ird.stage import fingerprint_of
from million_ird.store import Store, plain

log = logging.getLogger(__name__)

RECIPES = ("all-in-one", "synthetic")
KEPT_PATCHES, WHOLE_IMAGES, BENCHMARK_FILES = "kept patches", "whole images", "benchmark files"  # what pairs are made of
SPLITS_VERSION = "4"  # bump when the plan, the rows or the degradations they call change what is written
PLAN = pa.schema([  # one planned pair (the stage's candidates); args and meta are JSON objects
    pa.field("pair_id", pa.string(), nullable=False), pa.field("split", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False), pa.field("clean", pa.string(), nullable=False),
    pa.field("degraded", pa.string()), pa.field("degradation", pa.string()), pa.field("args", pa.string()),
    pa.field("meta", pa.string()), pa.field("sigma", pa.float64()), pa.field("materialize", pa.bool_()),
    pa.field("digest", pa.bool_()),
])


class SplitError(RuntimeError):
    """A split cannot be built as asked (the message says what to fix)."""


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
class SplitsConfig:
    """Choices for building a split (defaults: the reference protocol; synthetic choices are ours)."""

    recipe: str = "all-in-one"
    seed: int = 0
    sigmas: tuple[float, ...] = (15.0, 25.0, 50.0)
    noise_rounding: str = "truncate"
    test_fraction: float = 0.2
    rain_preset: str = "rain100l"
    digest_on_the_fly: bool = False
    limit: int | None = None  # synthetic: the first N source images (not in the fingerprint: a store that grows)
    paths: BenchmarkPaths = field(default_factory=BenchmarkPaths)


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

    def to_row(self) -> dict[str, Any]:
        """The plan-table row of this pair (args and meta as JSON)."""
        return {**dataclasses.asdict(self), "args": json.dumps(self.args), "meta": json.dumps(self.meta)}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Planned:
        """The pair of a plan-table row (extra columns such as the driver's `due` are ignored)."""
        values = {f.name: row[f.name] for f in dataclasses.fields(cls)}
        return cls(**{**values, "args": json.loads(row["args"]), "meta": json.loads(row["meta"])})


@dataclass(frozen=True)
class Source:
    """One clean image synthetic pairs are made from: a kept patch (its id, shard member) or a whole image."""

    source_id: str
    image_id: str
    path: str


@dataclass(frozen=True)
class SourceSet:
    """What a synthetic split is made from: kept patches (and the patch fingerprints in force), or whole images."""

    kind: str
    sources: list[Source]
    patch_fingerprints: tuple[str, ...] = ()

    @property
    def images(self) -> list[str]:
        """The distinct source images, sorted."""
        return sorted({s.image_id for s in self.sources})

    @property
    def made_from(self) -> tuple[str, ...]:
        """What the split fingerprint records of the sources: the patch settings in force, or whole images."""
        return self.patch_fingerprints or (WHOLE_IMAGES,)


@dataclass(frozen=True)
class SplitPlan:
    """The pairs a split covers (done or not), the fingerprint they are written under, what they are made from."""

    pairs: list[Planned]
    counts: dict[str, int]
    fingerprint: str
    kind: str
    sources: int
    images: int | None = None

    def describe(self) -> str:
        """One line: what the pairs are made from (kept patches, whole images or benchmark files)."""
        if self.kind == KEPT_PATCHES:
            return f"pairs made from {self.sources} kept patches of {self.images} images"
        if self.kind == WHOLE_IMAGES:
            return f"pairs made from {self.sources} whole images (no kept patches in force)"
        return f"pairs made from {self.sources} files in the benchmark folders"

    def record(self) -> dict[str, Any]:
        """What the run record keeps of the plan's sources."""
        return {"source": self.kind, "sources": self.sources, "source_images": self.images}


def split_fingerprint(cfg: SplitsConfig, made_from: tuple[str, ...] = ()) -> str:
    """Hash of everything that changes the pairs: the config (but `limit`), benchmark paths, code version and
    what synthetic pairs are made from (`made_from`: whole images, or the patch fingerprints in force)."""
    return fingerprint_of("splits", SPLITS_VERSION, __version__, plain(dataclasses.replace(cfg, limit=None)),
                          list(made_from))


def _noise(p_id: str, split: str, clean: Path, cfg: SplitsConfig, materialize: bool, meta: dict) -> list[Planned]:
    return [Planned(f"{p_id.replace('{s}', f's{s:g}')}", split, "denoise", str(clean), None, "gaussian_noise",
                    {"sigma": s, "rounding": cfg.noise_rounding}, meta, s, materialize,
                    cfg.digest_on_the_fly) for s in cfg.sigmas]


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


def plan_all_in_one(cfg: SplitsConfig) -> SplitPlan:
    """Plan the reference all-in-one split from `cfg.paths` (its counts: the files found per set)."""
    paths, r, plan, counts = cfg.paths, cfg.recipe, [], {}
    if paths.denoise_train:
        found = benchmarks.find_denoise_train(list(paths.denoise_train))
        counts["denoise-train"] = len(found)
        for f in found:
            plan += _noise(f"{r}/train/denoise/{{s}}/{_stem(f.name)}", "train", f.clean, cfg, False, {})
    if paths.rain100l:
        for split in ("train", "test"):
            found = benchmarks.find_rain_pairs(paths.rain100l, split)
            counts[f"rain100l-{split}"] = len(found)
            plan += [Planned(f"{r}/{split}/derain/{f.name}", split, "derain", str(f.clean), str(f.degraded),
                             meta={"source": "Rain100L", **f.meta}) for f in found]
    for key, finder, split in (("ots", benchmarks.find_ots, "train"), ("sots", benchmarks.find_sots, "test")):
        root = paths.reside_ots if key == "ots" else paths.sots
        if root:
            found = finder(root)
            counts[key] = len(found)
            plan += [Planned(f"{r}/{split}/dehaze/{_stem(f.name)}", split, "dehaze", str(f.clean), str(f.degraded),
                             meta={"source": key.upper(), **f.meta}) for f in found]
    for key in ("bsd68", "urban100"):
        root = getattr(paths, key)
        if root:
            found = benchmarks.find_clean_set(root, key)
            counts[key] = len(found)
            for f in found:
                plan += _noise(f"{r}/test/denoise/{key}/{{s}}/{_stem(f.name.split('/', 1)[1])}", "test",
                               f.clean, cfg, True, {"source": key})
    if not counts:
        raise SplitError("recipe all-in-one needs at least one of --denoise-train, --rain100l, --reside-ots, "
                         "--sots, --bsd68, --urban100 (or use --recipe synthetic)")
    return SplitPlan(plan, counts, split_fingerprint(cfg), BENCHMARK_FILES, sum(counts.values()))


# the patch settings (fingerprints) of the kept patches in force; then those of images the latest dedup kept,
# else (no kept patch in force) whole downloaded images
PATCH_SETTINGS_SQL = "SELECT DISTINCT fingerprint FROM latest_patches WHERE kept AND shard IS NOT NULL ORDER BY 1"
KEPT_PATCHES_SQL = ("SELECT patch_id || '_' || size || 'px' AS id, image_id, ref AS path "  # ids of 64/128-px cuts collide
                    "FROM kept_patches ORDER BY patch_id")
WHOLE_IMAGES_SQL = ("SELECT image_id AS id, image_id, path FROM catalog WHERE status = 'ok' "
                    "AND path IS NOT NULL AND NOT duplicate_dropped ORDER BY image_id")


def source_set(store: Store, limit: int | None = None) -> SourceSet:
    """The kept patches in force when the store has any, else its downloaded ('ok') images; never of an image
    the latest dedup run dropped (a duplicate or a test-set match). `limit`: the first N images only."""
    fingerprints = tuple(store.query(PATCH_SETTINGS_SQL).column(0).to_pylist())
    patched = bool(fingerprints)
    rows = store.query(KEPT_PATCHES_SQL if patched else WHOLE_IMAGES_SQL).to_pylist()
    if limit:
        first = set(sorted({r["image_id"] for r in rows})[:limit])
        rows = [r for r in rows if r["image_id"] in first]
    return SourceSet(KEPT_PATCHES if patched else WHOLE_IMAGES,
                     [Source(r["id"], r["image_id"], r["path"]) for r in rows], fingerprints)


def held_out_count(n: int, test_fraction: float) -> int:
    """Test images of a synthetic split of n: max(1, fraction * n rounded half up), leaving one for training."""
    exact = Decimal(repr(test_fraction)) * n  # decimal: 0.3 * 5 is 1.5, not 1.4999...
    return min(max(1, int(exact + Decimal("0.5"))), n - 1)


def split_key(seed: int, image_id: str) -> float:
    """Seeded sort key of one source image (a pure function of seed and id: same order in any process)."""
    return float(degradations.sample_rng(seed, image_id, "split").random())


def assign_splits(ids: list[str], seed: int, test_fraction: float,
                  fixed: dict[str, str] | None = None) -> dict[str, str]:
    """Split image ids exactly: the held_out_count(n) lowest split keys go to test; ids in `fixed` keep their split.

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


def existing_splits(store: Store, cfg: SplitsConfig) -> dict[str, str]:
    """Image id -> split of the images that have pairs of this recipe, seed and test fraction under any other
    settings (sigmas, patch size, --limit), from the `image_id` and `test_fraction` their params record."""
    rows = store.query(
        "SELECT DISTINCT json_extract_string(params, '$.image_id') AS image_id, split FROM pairs WHERE recipe = ? "
        "AND json_extract_string(params, '$.global_seed')::BIGINT = ? "
        "AND json_extract_string(params, '$.test_fraction')::DOUBLE = ? "
        "AND json_extract_string(params, '$.image_id') IS NOT NULL ORDER BY image_id, split DESC",
        [cfg.recipe, cfg.seed, cfg.test_fraction]).to_pylist()
    return {r["image_id"]: r["split"] for r in rows}  # test wins (sorted last)


def _synthetic_pairs(src: Source, split: str, cfg: SplitsConfig) -> list[Planned]:
    """Every task and sigma of one source: noise, rain and haze (generated as files on the test side)."""
    test, base = split == "test", f"{cfg.recipe}/{split}"
    grid = degradations.sample_rng(cfg.seed, src.source_id, "haze-grid")
    haze_args = {"A": OTS_A[int(grid.integers(len(OTS_A)))], "beta": OTS_BETA[int(grid.integers(len(OTS_BETA)))]}
    meta = {"image_id": src.image_id, "test_fraction": cfg.test_fraction}  # what existing_splits reads back
    return [*(Planned(f"{base}/denoise/s{s:g}/{src.source_id}", split, "denoise", src.path, None, "gaussian_noise",
                      {"sigma": s, "rounding": cfg.noise_rounding}, meta, s, test, True) for s in cfg.sigmas),
            Planned(f"{base}/derain/{src.source_id}", split, "derain", src.path, None, "rain",
                    {"preset": cfg.rain_preset}, meta, None, test, True),
            Planned(f"{base}/dehaze/{src.source_id}", split, "dehaze", src.path, None, "haze", haze_args, meta,
                    None, test, True)]


def _checked_sources(store: Store, cfg: SplitsConfig) -> SourceSet:
    """The source set of a synthetic split, or a SplitError saying what the store lacks."""
    src = source_set(store, cfg.limit)
    if not src.sources and src.kind == KEPT_PATCHES:
        raise SplitError(f"store {store.root}: every kept patch in force is of an image the latest dedup dropped; "
                         "cut patches of kept images (`million-ird patches`) or re-run dedup")
    if not src.sources:
        raise SplitError(f"store {store.root} has no kept patches and no downloaded images; run ingest/download "
                         "first (or use --recipe all-in-one with benchmark folders)")
    if not 0 < cfg.test_fraction < 1:
        raise SplitError(f"--test-fraction {cfg.test_fraction}: give a fraction between 0 and 1, e.g. 0.2")
    if len(src.images) < 2:
        raise SplitError(f"store {store.root} has {len(src.images)} source image; a synthetic split needs at least 2 "
                         "(one train, one test): ingest and download more images"
                         + (" or raise --limit" if cfg.limit else ""))
    return src


def plan_synthetic(store: Store, cfg: SplitsConfig) -> SplitPlan:
    """Plan a synthetic all-in-one split (noise/rain/haze) from the store's own kept patches or images.

    The split is drawn per image (all patches of an image share it), exact in size over images (see
    `held_out_count`), and every test image gets every task and sigma.
    """
    src = _checked_sources(store, cfg)
    images = src.images
    split_of = assign_splits(images, cfg.seed, cfg.test_fraction, existing_splits(store, cfg))
    plan = [p for s in src.sources for p in _synthetic_pairs(s, split_of[s.image_id], cfg)]
    n_test = sum(split_of[i] == "test" for i in images)
    counts = {**({KEPT_PATCHES: len(src.sources)} if src.kind == KEPT_PATCHES else {}),
              "source images": len(images), "train images": len(images) - n_test, "test images": n_test}
    return SplitPlan(plan, counts, split_fingerprint(cfg, src.made_from), src.kind, len(src.sources), len(images))


def plan_pairs(store: Store, cfg: SplitsConfig) -> SplitPlan:
    """The pairs `cfg`'s recipe covers (done or not), their fingerprint and the found counts to report."""
    if cfg.recipe not in RECIPES:
        raise SplitError(f"--recipe {cfg.recipe!r}: use one of {', '.join(RECIPES)}")
    return plan_synthetic(store, cfg) if cfg.recipe == "synthetic" else plan_all_in_one(cfg)


def counts_table(counts: dict[str, int]) -> list[dict[str, object]]:
    """Found-vs-expected rows (benchmark sets) or plain counts (synthetic)."""
    if set(counts) <= set(benchmarks.EXPECTED):
        return benchmarks.found_vs_expected(counts)
    return [{"set": k, "found": v} for k, v in counts.items()]


def plan_table(planned: list[Planned]) -> pa.Table:
    """The plan as an Arrow table of the PLAN schema (what the stage's candidates read)."""
    return pa.Table.from_pylist([p.to_row() for p in planned], schema=PLAN)
