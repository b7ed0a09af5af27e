"""The plan of a split: its config and fingerprint, and the pairs a recipe covers (computed here, in Python).

`all-in-one` plans the reference protocol from benchmark folders (`million_ird.sources.benchmarks`);
`synthetic` plans noise/rain/haze pairs on the store's own kept patches (else downloaded images), with an
exact, seeded test split. A plan is one `Planned` per pair, done or not: the splits stage
(`million_ird.stages.splits`) runs the ones its table lacks under the config's fingerprint.
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
SPLITS_VERSION = "2"  # bump when the plan, the rows or the degradations they call change what is written
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
    limit: int | None = None  # synthetic: at most N source images (not in the fingerprint: a store that grows)
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


def split_fingerprint(cfg: SplitsConfig) -> str:
    """Hash of everything that changes the pairs: the config (but `limit`), benchmark paths, code version."""
    return fingerprint_of("splits", SPLITS_VERSION, __version__, plain(dataclasses.replace(cfg, limit=None)))


def _noise(p_id: str, split: str, clean: Path, cfg: SplitsConfig, materialize: bool, meta: dict) -> list[Planned]:
    return [Planned(f"{p_id.replace('{s}', f's{s:g}')}", split, "denoise", str(clean), None, "gaussian_noise",
                    {"sigma": s, "rounding": cfg.noise_rounding}, meta, s, materialize,
                    cfg.digest_on_the_fly) for s in cfg.sigmas]


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


def plan_all_in_one(cfg: SplitsConfig) -> tuple[list[Planned], dict[str, int]]:
    """Plan the reference all-in-one split from `cfg.paths`; returns the plan and found counts."""
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
    return plan, counts


def source_images(store: Store, limit: int | None = None) -> list[tuple[str, str]]:
    """(id, path) of kept patches when the store has any, else of downloaded ('ok') catalog images; never of
    an image the latest dedup run dropped (a duplicate or a test-set match)."""
    rows = store.query("SELECT p.patch_id AS id, p.shard || '#' || p.byte_offset || '+' || p.nbytes AS path "
                       "FROM latest_patches p JOIN catalog c USING (image_id) "
                       "WHERE p.kept AND p.shard IS NOT NULL AND NOT c.duplicate_dropped ORDER BY p.patch_id")
    if rows.num_rows == 0:
        rows = store.query("SELECT image_id AS id, path FROM catalog WHERE status = 'ok' AND path IS NOT NULL "
                           "AND NOT duplicate_dropped ORDER BY image_id")
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


def existing_splits(store: Store, recipe: str, fingerprint: str) -> dict[str, str]:
    """Source id -> split of images with pairs under this recipe and config (ids are pair_ids' last part)."""
    rows = store.query("SELECT DISTINCT split, split_part(pair_id, '/', -1) AS id FROM pairs WHERE recipe = ? "
                       "AND fingerprint = ? ORDER BY id, split DESC", [recipe, fingerprint]).to_pylist()
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
                             existing_splits(store, cfg.recipe, split_fingerprint(cfg)))
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


def plan_pairs(store: Store, cfg: SplitsConfig) -> tuple[list[Planned], dict[str, int]]:
    """The pairs `cfg`'s recipe covers (done or not) and the found counts to report."""
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
