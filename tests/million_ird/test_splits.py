"""`splits`: reference counts on tiny fake benchmark trees, generated test sets + --verify, synthetic split,
resume by config (a new seed or sigma list writes a new set; the latest run's set is the one in force)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from million_ird.cli.splits import register
from million_ird.images import encode_png
from million_ird.schema import PATCHES
from million_ird.shards import ShardWriter
from million_ird.stages import split_plan as P
from million_ird.stages import splits as S
from million_ird.store import Store

RUNNER = CliRunner()


def cli() -> typer.Typer:
    """A fresh app with only `splits` (plus a no-op so typer keeps the sub-command name)."""
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:
        """Unused."""

    return app


def png(path: Path, seed: int, shape: tuple[int, int] = (24, 32)) -> Path:
    """A small textured PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8))
    return path


def empty(path: Path) -> None:
    """An empty file: planning only lists names, it never opens real-pair or training files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Benchmark trees with the reference counts (OTS reduced to 2 ids x 35 files)."""
    root = tmp_path_factory.mktemp("bench")
    for i in range(400):
        empty(root / "BSD400" / f"{i}.jpg")
    for i in range(4744):
        empty(root / "WED" / f"{i:05d}.bmp")
    for split, n, (a, b) in (("train", 200, ("rainy", "gt")), ("test", 100, ("input", "target"))):
        for i in range(1, n + 1):
            empty(root / "Rain100L" / split / a / f"rain-{i}.png")
            empty(root / "Rain100L" / split / b / f"norain-{i}.png")
    for cid in ("0001", "0002"):
        empty(root / "OTS" / "original" / f"{cid}.jpg")
        for a in (0.8, 0.85, 0.9, 0.95, 1):
            for beta in (0.04, 0.06, 0.08, 0.1, 0.12, 0.16, 0.2):
                empty(root / "OTS" / "synthetic" / f"part{int(a * 20) - 15}" / f"{cid}_{a}_{beta}.jpg")
    for i in range(500):
        empty(root / "SOTS" / "hazy" / f"{i:04d}_0.8_0.2.jpg")
        empty(root / "SOTS" / "gt" / f"{i:04d}.png")
    for i in range(68):
        png(root / "CBSD68" / f"{i:04d}.png", i, (8, 8))
    for i in range(1, 101):
        png(root / "Urban100" / f"img_{i:03d}.png", 1000 + i, (8, 8))
    return root


def bench_args(root: Path) -> list[str]:
    """CLI flags for every benchmark folder."""
    return ["--denoise-train", str(root / "BSD400"), "--denoise-train", str(root / "WED"),
            "--rain100l", str(root / "Rain100L"), "--reside-ots", str(root / "OTS"), "--sots", str(root / "SOTS"),
            "--bsd68", str(root / "CBSD68"), "--urban100", str(root / "Urban100")]


def test_all_in_one_counts_match_the_reference_protocol(tmp_path: Path, bench: Path) -> None:
    store_dir = tmp_path / "store"
    res = RUNNER.invoke(cli(), ["splits", "--manifest", str(store_dir), *bench_args(bench)])
    assert res.exit_code == 0, res.output
    report = {line.split()[0]: line.split()[1:] for line in res.output.splitlines() if line[:1].isalpha()}
    for name in ("denoise-train", "rain100l-train", "rain100l-test", "sots", "bsd68", "urban100"):
        assert report[name][0] == report[name][1] and report[name][2] == "ok", res.output
    assert report["ots"] == ["70", "72135", "INCOMPLETE"]
    store = Store(store_dir)
    rows = store.query("SELECT split, task, count(*) AS n FROM pairs GROUP BY ALL").to_pylist()
    counts = {(r["split"], r["task"]): r["n"] for r in rows}
    assert counts == {("train", "denoise"): 5144 * 3, ("train", "derain"): 200, ("train", "dehaze"): 70,
                      ("test", "denoise"): (68 + 100) * 3, ("test", "derain"): 100, ("test", "dehaze"): 500}
    sig = store.query("SELECT sigma, count(*) AS n FROM pairs WHERE task='denoise' GROUP BY 1 ORDER BY 1").to_pylist()
    assert [(r["sigma"], r["n"]) for r in sig] == [(15.0, 5312), (25.0, 5312), (50.0, 5312)]
    haze = store.query("SELECT params FROM pairs WHERE pair_id LIKE '%/train/dehaze/ots/part1/0001_0.8_0.2'")
    assert json.loads(haze.column(0)[0].as_py()) == {"source": "OTS", "A": 0.8, "beta": 0.2, "id": "0001"}
    again = RUNNER.invoke(cli(), ["splits", "--manifest", str(store_dir), *bench_args(bench)])
    assert again.exit_code == 0 and store.query("SELECT count(*) FROM pairs").column(0)[0].as_py() == 16806
    assert re.search(r"skipped\s+already written\s+16806", again.output), again.output


def test_generated_test_sets_are_seeded_hashed_and_verified(tmp_path: Path, bench: Path) -> None:
    store_dir = tmp_path / "store"
    args = ["splits", "--manifest", str(store_dir), "--bsd68", str(bench / "CBSD68"), "--seed", "3"]
    assert RUNNER.invoke(cli(), args).exit_code == 0
    store = Store(store_dir)
    row = store.query("SELECT * FROM pairs WHERE pair_id = 'all-in-one/test/denoise/bsd68/s25/0007'").to_pylist()[0]
    params = json.loads(row["params"])
    clean = cv2.imread(row["clean"])[..., ::-1]
    noisy = cv2.imread(str(store_dir / row["degraded"]))[..., ::-1]
    assert row["sigma"] == 25 and params["args"] == {"sigma": 25.0, "rounding": "truncate"}
    expected, _ = S.derive(np.ascontiguousarray(clean), "gaussian_noise", params["args"], row["seed"])
    assert np.array_equal(noisy, expected) and params["sha256"] == S.file_sha256(store_dir / row["degraded"])
    res = RUNNER.invoke(cli(), ["splits", "--manifest", str(store_dir), "--verify"])
    assert res.exit_code == 0 and "204" in res.output, res.output
    damaged = noisy.copy()
    damaged[0, 0] ^= 1
    cv2.imwrite(str(store_dir / row["degraded"]), damaged[..., ::-1])
    res = RUNNER.invoke(cli(), ["splits", "--manifest", str(store_dir), "--verify"])
    assert res.exit_code == 1 and "MISMATCH all-in-one/test/denoise/bsd68/s25/0007: sha256" in res.output


def test_missing_or_misnamed_folder_is_a_one_line_error(tmp_path: Path, bench: Path) -> None:
    res = RUNNER.invoke(cli(), ["splits", "--manifest", str(tmp_path / "s"), "--rain100l", str(bench / "WED")])
    assert res.exit_code == 2
    lines = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "expected --rain100l PATH : PATH/train/{rainy|input}/rain-N.png" in lines[0]
    res = RUNNER.invoke(cli(), ["splits", "--manifest", str(tmp_path / "s")])
    assert res.exit_code == 2 and "needs at least one of --denoise-train" in res.output
    res = RUNNER.invoke(cli(), ["splits", "--manifest", str(tmp_path / "s"), "--bsd68", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "is not a folder; expected --bsd68 PATH : PATH/*.png" in res.output


def small_store(root: Path, n: int = 6) -> Store:
    """A store whose catalog has n downloaded images (one failed download too)."""
    store = Store(root)
    ids = [f"img{i}" for i in range(n + 1)]
    paths = [png(root / "files" / f"{i}.png", k, (40, 48)) for k, i in enumerate(ids)]
    store.append("images", pa.table({"image_id": ids, "source": ["t"] * len(ids)}))
    store.append("downloads", pa.table({
        "image_id": ids, "status": ["ok"] * n + ["failed"], "attempt": [1] * len(ids),
        "path": [str(p.relative_to(root)) for p in paths]}))
    return store


def test_synthetic_split_is_reproducible_and_verifiable(tmp_path: Path) -> None:
    small_store(tmp_path / "a")
    small_store(tmp_path / "b")
    base = ["splits", "--recipe", "synthetic", "--test-fraction", "0.5", "--seed", "9"]
    for name in ("a", "b"):
        res = RUNNER.invoke(cli(), [*base, "--manifest", str(tmp_path / name), "--export", "mioir"])
        assert res.exit_code == 0, res.output
    cols = "pair_id, split, task, degradation, params, seed, sigma"
    a = Store(tmp_path / "a").query(f"SELECT {cols} FROM pairs ORDER BY pair_id").to_pylist()
    b = Store(tmp_path / "b").query(f"SELECT {cols} FROM pairs ORDER BY pair_id").to_pylist()
    assert len(a) == 6 * 5 and a == b  # bit-for-bit: same seeds, params, pixel digests
    assert {r["task"] for r in a} == {"denoise", "derain", "dehaze"} and {r["split"] for r in a} == {"train", "test"}
    assert len({r["seed"] for r in a}) == len(a)
    assert all("pixels_sha256" in json.loads(r["params"]) for r in a)
    assert (tmp_path / "a" / "export" / "splits-synthetic" / "mioir" / "train.csv").exists()
    assert RUNNER.invoke(cli(), ["splits", "--manifest", str(tmp_path / "a"), "--recipe", "synthetic",
                                 "--verify"]).exit_code == 0
    # a clean image that changed after the split was written is caught by re-derivation
    train = next(r for r in Store(tmp_path / "a").query("SELECT * FROM pairs WHERE split='train'").to_pylist())
    png(tmp_path / "a" / train["clean"], 999, (40, 48))
    res = RUNNER.invoke(cli(), ["splits", "--manifest", str(tmp_path / "a"), "--recipe", "synthetic", "--verify"])
    assert res.exit_code == 1 and "re-derived pixels differ" in res.output


def test_synthetic_split_needs_images(tmp_path: Path) -> None:
    res = RUNNER.invoke(cli(), ["splits", "--manifest", str(tmp_path), "--recipe", "synthetic"])
    assert res.exit_code == 2 and "no kept patches and no downloaded images" in res.output


def test_synthetic_prefers_kept_patches(tmp_path: Path) -> None:
    store = small_store(tmp_path)
    shards = ShardWriter(tmp_path, "files/patches/test", max_bytes=2**20)
    m = shards.add("p1.png", encode_png(np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    shards.close()
    store.append("patches", pa.Table.from_pylist([
        {"patch_id": "p1", "image_id": "img0", "x": 0, "y": 0, "size": 64, "kept": True, "shard": m.shard,
         "member": m.member, "byte_offset": m.byte_offset, "nbytes": m.nbytes, "fingerprint": "f"},
        {"patch_id": "p2", "image_id": "img1", "x": 0, "y": 0, "size": 64, "kept": False, "fingerprint": "f"}],
        schema=PATCHES))
    src = P.source_set(store)
    assert src.kind == P.KEPT_PATCHES and src.patch_fingerprints == ("f",)
    assert src.sources == [P.Source("p1_64px", "img0", f"{m.shard}#{m.byte_offset}+{m.nbytes}")]  # size: ids of cuts collide


@pytest.mark.parametrize("n,fraction,expected", [
    (2, 0.2, 1), (3, 0.2, 1), (5, 0.2, 1), (8, 0.2, 2), (13, 0.2, 3), (20, 0.2, 4), (5, 0.3, 2), (5, 0.5, 3),
    (4, 0.5, 2), (10, 0.05, 1), (2, 0.9, 1), (7, 0.99, 6),
])
def test_synthetic_test_split_is_exact_in_size(tmp_path: Path, n: int, fraction: float, expected: int) -> None:
    store = small_store(tmp_path, n)
    planned = P.plan_synthetic(store, P.SplitsConfig("synthetic", seed=4, test_fraction=fraction))
    plan, counts = planned.pairs, planned.counts
    test_ids = {p.pair_id.rsplit("/", 1)[1] for p in plan if p.split == "test"}
    train_ids = {p.pair_id.rsplit("/", 1)[1] for p in plan if p.split == "train"}
    assert len(test_ids) == expected == counts["test images"] and len(train_ids) == n - expected
    assert not test_ids & train_ids
    per = Counter((p.split, p.task, p.sigma) for p in plan)
    for split, ids in (("test", test_ids), ("train", train_ids)):
        assert {k[1:]: v for k, v in per.items() if k[0] == split} == {
            ("denoise", 15.0): len(ids), ("denoise", 25.0): len(ids), ("denoise", 50.0): len(ids),
            ("derain", None): len(ids), ("dehaze", None): len(ids)}


def test_every_task_and_sigma_has_a_test_pair(tmp_path: Path) -> None:
    small_store(tmp_path, 3)
    res = RUNNER.invoke(cli(), ["splits", "--recipe", "synthetic", "--manifest", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rows = Store(tmp_path).query("SELECT task, sigma, count(*) AS n, count(degraded) AS files FROM pairs "
                                 "WHERE split = 'test' GROUP BY ALL ORDER BY ALL").to_pylist()
    assert [(r["task"], r["sigma"], r["n"], r["files"]) for r in rows] == [
        ("dehaze", None, 1, 1), ("denoise", 15.0, 1, 1), ("denoise", 25.0, 1, 1), ("denoise", 50.0, 1, 1),
        ("derain", None, 1, 1)]
    assert re.search(r"test images\s+1", res.output) and re.search(r"train images\s+2", res.output)


def test_split_is_a_pure_function_of_seed_and_ids() -> None:
    ids = [f"id{i:02d}" for i in range(20)]
    split = P.assign_splits(ids, 7, 0.25)
    assert P.assign_splits(list(reversed(ids)), 7, 0.25) == split  # input order does not matter
    assert sorted(i for i, s in split.items() if s == "test") == ["id01", "id09", "id11", "id15", "id17"]
    assert P.assign_splits(ids, 8, 0.25) != split  # the seed does
    # the test set of a subset is the lowest keys of that subset, not a coin flip per image
    assert sum(s == "test" for s in P.assign_splits(ids[:6], 7, 0.25).values()) == 2


def splits_in_force(store: Store) -> dict[str, str]:
    """Source image id -> split of the synthetic pairs in force (`latest_pairs`)."""
    rows = store.query("SELECT DISTINCT split_part(pair_id, '/', -1) AS id, split FROM latest_pairs "
                       "WHERE recipe = 'synthetic'").to_pylist()
    return {r["id"]: r["split"] for r in rows}


def test_images_already_written_keep_their_split_when_the_store_grows(tmp_path: Path) -> None:
    small_store(tmp_path, 4)
    base = ["splits", "--recipe", "synthetic", "--manifest", str(tmp_path), "--test-fraction", "0.5"]
    assert RUNNER.invoke(cli(), base).exit_code == 0
    before = splits_in_force(Store(tmp_path))
    store = Store(tmp_path)
    new = [f"new{i}" for i in range(4)]
    paths = [png(tmp_path / "files" / f"{i}.png", 50 + k, (40, 48)) for k, i in enumerate(new)]
    store.append("images", pa.table({"image_id": new, "source": ["t"] * 4}))
    store.append("downloads", pa.table({"image_id": new, "status": ["ok"] * 4, "attempt": [1] * 4,
                                        "path": [str(p.relative_to(tmp_path)) for p in paths]}))
    res = RUNNER.invoke(cli(), base)
    assert res.exit_code == 0 and re.search(r"skipped\s+already written\s+20", res.output), res.output
    after = splits_in_force(Store(tmp_path))
    assert {i: after[i] for i in before} == before and sum(s == "test" for s in after.values()) == 4
    rows = Store(tmp_path).query("SELECT split_part(pair_id, '/', -1) AS id, count(DISTINCT split) AS n "
                                 "FROM pairs GROUP BY 1").to_pylist()
    assert {r["n"] for r in rows} == {1}  # no image in both splits


def test_synthetic_split_of_one_image_is_a_one_line_error(tmp_path: Path) -> None:
    small_store(tmp_path, 1)
    res = RUNNER.invoke(cli(), ["splits", "--manifest", str(tmp_path), "--recipe", "synthetic"])
    lines = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert str(tmp_path) in lines[0] and "needs at least 2" in lines[0] and "ingest and download more" in lines[0]
    res = RUNNER.invoke(cli(), ["splits", "--manifest", str(tmp_path), "--recipe", "synthetic", "--test-fraction", "1"])
    assert res.exit_code == 2 and "between 0 and 1" in res.output


def test_promptir_export_has_every_synthetic_pair(tmp_path: Path) -> None:
    store = small_store(tmp_path, 5)
    res = RUNNER.invoke(cli(), ["splits", "--manifest", str(tmp_path), "--recipe", "synthetic", "--test-fraction",
                                "0.4", "--export", "promptir"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "export" / "splits-synthetic" / "promptir"
    rows = list(S.iter_rows(store, "synthetic"))
    n = Counter((r["split"], r["task"]) for r in rows)
    assert n[("train", "derain")] == 3 and n[("test", "dehaze")] == 2  # on the fly / generated as PNG
    by_clean = {(r["split"], r["task"], (tmp_path / r["clean"]).resolve()): r for r in rows}
    pairs = {("train", "derain"): ("Train/Derain/rainy/rain-*.png", lambda p: p.parent.parent / "gt" / f"no{p.name}"),
             ("test", "derain"): ("test/derain/Rain100L/input/rain-*.png",
                                  lambda p: p.parent.parent / "target" / f"no{p.name}"),
             ("train", "dehaze"): ("Train/Dehaze/synthetic/*.png",
                                   lambda p: p.parent.parent / "original" / f"{p.name.split('_')[0]}.png"),
             ("test", "dehaze"): ("test/dehaze/input/*.png",
                                  lambda p: p.parent.parent / "target" / f"{p.name.split('_')[0]}.png")}
    for (split, task), (pattern, clean_of) in pairs.items():
        files = sorted(out.glob(pattern))
        assert len(files) == n[(split, task)], (split, task)
        for degraded in files:  # PromptIR's own name rule finds the clean image of every degraded one
            row = by_clean[(split, task, clean_of(degraded).resolve())]
            expected = S.rederive(store, row)
            assert np.array_equal(cv2.imread(str(degraded))[..., ::-1], expected), degraded
    assert len((out / "data_dir/rainy/rainTrain.txt").read_text().split()) == 3
    assert len((out / "data_dir/hazy/hazy_outside.txt").read_text().split()) == 3
    assert len((out / "data_dir/noisy/denoise.txt").read_text().split()) == 3 == len(list(out.glob("Train/Denoise/*")))
    assert len(list(out.glob("test/denoise/test/*"))) == 2
    assert '"materialized": 6' in res.output and "skipped" not in res.output.split("export promptir")[1]
    train = next(r for r in rows if r["split"] == "train" and r["task"] == "derain")
    clean = cv2.imread(str(tmp_path / train["clean"]))[..., ::-1]
    again, _ = S.derive(np.ascontiguousarray(clean), "rain", json.loads(train["params"])["args"], train["seed"])
    assert np.array_equal(again, S.rederive(store, train))  # the export's pixels are the split's own


def in_force(store: Store) -> list[dict]:
    """The synthetic pair rows in force, by pair_id."""
    return store.query("SELECT * FROM latest_pairs WHERE recipe = 'synthetic' ORDER BY pair_id").to_pylist()


def test_a_new_config_writes_a_new_set_and_the_latest_run_is_in_force(tmp_path: Path) -> None:
    store = small_store(tmp_path, 6)
    ids = [f"img{i}" for i in range(6)]
    base = ["splits", "--recipe", "synthetic", "--manifest", str(tmp_path), "--test-fraction", "0.5"]
    assert RUNNER.invoke(cli(), [*base, "--seed", "0"]).exit_code == 0
    seed0 = in_force(store)
    assert len(seed0) == 30 and splits_in_force(store) == P.assign_splits(ids, 0, 0.5)
    res = RUNNER.invoke(cli(), [*base, "--seed", "1"])  # a new seed: computed again, not skipped
    assert res.exit_code == 0 and re.search(r"skipped\s+already written\s+0", res.output), res.output
    seed1 = in_force(store)
    assert len(seed1) == 30 and {json.loads(r["params"])["global_seed"] for r in seed1} == {1}
    assert splits_in_force(store) == P.assign_splits(ids, 1, 0.5) != P.assign_splits(ids, 0, 0.5)
    assert {r["fingerprint"] for r in seed0}.isdisjoint(r["fingerprint"] for r in seed1)
    total = store.query("SELECT count(*) FROM pairs").column(0)[0].as_py()
    res = RUNNER.invoke(cli(), [*base, "--seed", "0"])  # seed 0 again: no work, and its set is in force again
    assert res.exit_code == 0 and re.search(r"skipped\s+already written\s+30", res.output), res.output
    assert store.query("SELECT count(*) FROM pairs").column(0)[0].as_py() == total == 60
    assert in_force(store) == seed0
    # seed 1's generated test files did not overwrite seed 0's (one folder per fingerprint)
    assert RUNNER.invoke(cli(), ["splits", "--manifest", str(tmp_path), "--recipe", "synthetic",
                                 "--verify"]).exit_code == 0
    assert not list((tmp_path / S.WORK).glob(f"{S.PLAN_PREFIX}*"))  # the run's plan file is gone
    res = RUNNER.invoke(cli(), [*base, "--seed", "0", "--sigmas", "15", "--export", "mioir"])
    assert res.exit_code == 0, res.output
    rows = in_force(store)
    assert len(rows) == 6 * 3 and {r["sigma"] for r in rows if r["task"] == "denoise"} == {15.0}
    exported = (tmp_path / "export/splits-synthetic/mioir/train.csv").read_text().splitlines()[1:]
    assert len(exported) == sum(r["split"] == "train" for r in rows)  # only the set in force is exported
    res = RUNNER.invoke(cli(), [*base, "--export", "mioir", "--export-dir", str(tmp_path / "pairs")])
    assert res.exit_code == 2 and "inside the store" in res.output  # never over a table of the store


def test_synthetic_split_of_patch_shards_verifies_and_exports(tmp_path: Path) -> None:
    store = small_store(tmp_path, 2)
    shards = ShardWriter(tmp_path, "files/patches/test", max_bytes=2**20)
    rows = []
    for i in range(4):  # two patches of each of two images: one image is held out with both of its patches
        m = shards.add(f"p{i}.png", encode_png(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)))
        rows.append({"patch_id": f"p{i}", "image_id": f"img{i // 2}", "x": 0, "y": 0, "size": 32, "kept": True,
                     "shard": m.shard, "member": m.member, "byte_offset": m.byte_offset, "nbytes": m.nbytes,
                     "fingerprint": "f"})
    shards.close()
    store.append("patches", pa.Table.from_pylist(rows, schema=PATCHES))
    args = ["splits", "--manifest", str(tmp_path), "--recipe", "synthetic"]
    res = RUNNER.invoke(cli(), [*args, "--export", "promptir"])
    assert res.exit_code == 0, res.output
    assert RUNNER.invoke(cli(), [*args, "--verify"]).exit_code == 0
    out = tmp_path / "export/splits-synthetic/promptir"
    denoise = sorted(p.name for p in out.glob("Train/Denoise/*"))
    assert len(denoise) == 2 and all(p.endswith(".png") and "#" not in p for p in denoise)
    clean = next(out.glob("Train/Derain/gt/*.png"))
    assert not clean.is_symlink() and cv2.imread(str(clean)) is not None  # shard members are written out as PNG
