"""`million-ird dedup` end to end: planted copies grouped, flat images apart, test-set decontamination,
resume by config, the latest run in force, patches skipping dropped images, one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from million_ird import phash
from million_ird.cli import app
from million_ird.stages.dedup import DedupConfig, HashedTestSets, find_duplicates
from million_ird.store import Store

skdata = pytest.importorskip("skimage.data")
RUNNER = CliRunner()


def run(*args: str, code: int = 0) -> tuple[str, str]:
    """The real `million-ird` app in process; asserts the exit code."""
    res = RUNNER.invoke(app, list(args))
    assert res.exit_code == code, f"{args}: exit {res.exit_code}\n{res.stdout}\n{res.stderr}\n{res.exception!r}"
    return res.stdout, res.stderr


def write(path: Path, rgb: np.ndarray, quality: int | None = None) -> Path:
    """Write an RGB or gray array (PNG, or JPEG at `quality`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = np.ascontiguousarray(rgb[..., ::-1] if rgb.ndim == 3 else rgb)
    ok = cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, quality] if quality else [])
    assert ok
    return path


def scale(x: np.ndarray, f: float) -> np.ndarray:
    return cv2.resize(x, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)


def crop(x: np.ndarray, c: float) -> np.ndarray:
    h, w = x.shape[:2]
    return x[round(h * c):h - round(h * c), round(w * c):w - round(w * c)]


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {"astronaut": skdata.astronaut(), "coffee": skdata.coffee(), "chelsea": skdata.chelsea(),
            "camera": skdata.camera()}


def build_store(root: Path, photos: dict[str, np.ndarray]) -> tuple[Store, dict[str, str]]:
    """Two source folders with planted copies, ingested and verified through the CLI; name -> image_id."""
    yy, xx = np.mgrid[0:200, 0:300].astype(np.float32)
    div2k, web = root / "DIV2K", root / "web"
    astro, coffee = photos["astronaut"], photos["coffee"]
    write(div2k / "astronaut.png", astro)
    write(div2k / "coffee.png", coffee)
    write(div2k / "chelsea.png", photos["chelsea"])
    write(div2k / "camera.png", photos["camera"])
    write(div2k / "red.png", np.full((200, 300, 3), (200, 30, 30), np.uint8))
    write(div2k / "ramp.png", (xx / 299 * 255).astype(np.uint8))
    write(web / "blue.png", np.full((200, 300, 3), (10, 20, 220), np.uint8))
    write(web / "vramp.png", (yy / 199 * 255).astype(np.uint8))
    shutil.copy(div2k / "red.png", web / "red_copy.png")  # byte copy of a flat image: grouped by sha256
    shutil.copy(div2k / "astronaut.png", web / "astronaut_copy.png")  # byte-identical copy
    write(web / "astronaut_half.png", scale(astro, 0.5))
    write(web / "astronaut_2x.png", scale(astro, 2.0))  # the highest resolution: the one kept
    write(web / "astronaut_q75.jpg", astro, quality=75)
    write(web / "astronaut_crop3.png", crop(astro, 0.03))
    write(web / "coffee_half.png", scale(coffee, 0.5))
    write(web / "coffee_2x.png", scale(coffee, 2.0))
    write(web / "coffee_crop3.jpg", crop(coffee, 0.03), quality=75)  # cropped and re-encoded
    store = Store(root / "store")
    for folder in (div2k, web):
        run("ingest", "-m", str(store.root), "--folder", str(folder), "--source", folder.name)
    run("download", "-m", str(store.root))
    rows = store.query("SELECT image_id, path, status FROM catalog").to_pylist()
    assert all(r["status"] == "ok" for r in rows) and len(rows) == 17
    return store, {Path(r["path"]).stem: r["image_id"] for r in rows}


def duplicates(store: Store, ids: dict[str, str]) -> dict[str, dict]:
    """latest_duplicates by file name."""
    names = {v: k for k, v in ids.items()}
    rows = store.query("SELECT * FROM latest_duplicates").to_pylist()
    assert len({r["image_id"] for r in rows}) == len(rows)  # one row per image, or catalog rows would repeat
    return {names[r["image_id"]]: r for r in rows}


def dedup(store: Store, *args: str) -> str:
    return run("dedup", "-m", str(store.root), *args)[0]


@pytest.fixture(scope="module")
def deduped(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, np.ndarray]) -> tuple[Store, dict, str]:
    """A store deduplicated once with the defaults (shared by the read-only tests)."""
    store, ids = build_store(tmp_path_factory.mktemp("dedup"), photos)
    return store, ids, dedup(store)


def test_planted_copies_grouped_and_highest_resolution_kept(deduped: tuple[Store, dict, str]) -> None:
    store, ids, out = deduped
    dup = duplicates(store, ids)
    astro = {"astronaut", "astronaut_copy", "astronaut_half", "astronaut_2x", "astronaut_q75", "astronaut_crop3"}
    assert {n for n, r in dup.items() if r["group_id"] == ids["astronaut_2x"]} == astro
    assert dup["astronaut_2x"]["kept"] and [n for n in astro if dup[n]["kept"]] == ["astronaut_2x"]
    assert all(dup[n]["matched"] == ids["astronaut_2x"] and dup[n]["distance"] <= 8 for n in astro - {"astronaut_2x"})
    assert dup["astronaut_copy"]["reason"] == dup["astronaut_half"]["reason"] == "near"  # vs the 2x, not its twin
    assert {n for n, r in dup.items() if r["group_id"] == ids["coffee_2x"]} == {"coffee", "coffee_half", "coffee_2x",
                                                                               "coffee_crop3"}
    assert "chelsea" not in dup and "camera" not in dup
    catalog = {r["image_id"]: r for r in store.query("SELECT image_id, duplicate_dropped FROM catalog").to_pylist()}
    assert sum(r["duplicate_dropped"] for r in catalog.values()) == 9 and not catalog[ids["astronaut_2x"]]["duplicate_dropped"]
    assert "dropped 9 of 17 images (1 exact, 8 near, 0 test-set)" in out
    record = json.loads(sorted((store.root / "runs").glob("*-dedup-*.json"))[-1].read_text())
    assert record["stats"]["dropped_by_source"] == {"DIV2K": 3, "web": 6}
    assert record["stats"]["hashed"] == 17 and record["stats"]["groups"] == 3


def test_flat_images_are_not_grouped_by_hash_but_byte_copies_are(deduped: tuple[Store, dict, str]) -> None:
    store, ids, _ = deduped
    dup = duplicates(store, ids)
    assert not {"blue", "ramp", "vramp"} & set(dup)  # flat images are never grouped by hash alone
    assert dup["red"]["group_id"] == dup["red_copy"]["group_id"] and dup["red"]["kept"] != dup["red_copy"]["kept"]
    assert {dup["red"]["reason"], dup["red_copy"]["reason"]} == {"exact"}
    assert {dup["red"]["distance"], dup["red_copy"]["distance"]} == {None, 0}
    flags = {r["image_id"]: r["informative"] for r in store.query("SELECT * FROM hashes").to_pylist()}
    assert {n for n, i in ids.items() if not flags[i]} == {"red", "red_copy", "blue", "ramp", "vramp"}
    # what the rule prevents: the solid colours do have colliding hashes
    red, blue = (store.query(f"SELECT phash FROM hashes WHERE image_id = '{ids[n]}'").column(0)[0].as_py()
                 for n in ("red", "blue"))
    assert phash.hamming(red, blue) <= 8


def test_against_drops_planted_copies_of_test_images(tmp_path: Path, deduped: tuple[Store, dict, str],
                                                     photos: dict[str, np.ndarray]) -> None:
    store, ids, _ = deduped
    bench = write(tmp_path / "BSD68" / "sub" / "test_coffee.png", photos["coffee"])
    write(tmp_path / "Urban100" / "img001.png", skdata.rocket())  # a test image the store has no copy of
    flat = shutil.copy(store.query(f"SELECT path FROM catalog WHERE image_id = '{ids['red']}'").column(0)[0].as_py(),
                       tmp_path / "Urban100" / "img002.png")  # a flat test image: matched by its bytes only
    out = dedup(store, "--against", str(tmp_path / "BSD68"), "--against", str(tmp_path / "Urban100"))
    dup = duplicates(store, ids)
    coffee = {"coffee", "coffee_half", "coffee_2x", "coffee_crop3"}
    for name in coffee:
        row = dup[name]
        assert (row["kept"], row["reason"], row["matched"], row["group_id"]) == (False, "test-set", str(bench), None)
        assert row["distance"] <= 10
    for name in ("red", "red_copy"):
        assert (dup[name]["reason"], dup[name]["matched"], dup[name]["distance"]) == ("test-set", str(flat), 0)
    assert not {"blue", "ramp", "vramp"} & set(dup)  # other flat images do not match the flat test image
    assert dup["astronaut_2x"]["kept"] and dup["astronaut_half"]["reason"] == "near"  # other groups unchanged
    assert "6 test-set" in out
    assert "note: 1 test file(s) are near-uniform" in out  # the flat test image: byte copies only, and said so
    assert store.query("SELECT count(*) FROM catalog WHERE duplicate_reason = 'test-set' AND duplicate_dropped"
                       ).column(0)[0].as_py() == 6
    dedup(store)  # without --against: the test-set drops are no longer in force
    assert duplicates(store, ids)["coffee_2x"]["kept"]


def test_rerun_is_a_noop_for_hashing_and_latest_run_is_in_force(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    store, ids = build_store(tmp_path, photos)
    dedup(store)
    first = store.query("SELECT * EXCLUDE (run_id) FROM latest_duplicates ORDER BY image_id").to_pylist()
    hashes = store.query("SELECT count(*) FROM hashes").column(0)[0].as_py()
    dedup(store)
    last_hash_run = json.loads(sorted((store.root / "runs").glob("*-hashes-*.json"))[-1].read_text())
    assert last_hash_run["stats"]["pending"] == 0
    assert store.query("SELECT count(*) FROM hashes").column(0)[0].as_py() == hashes == 17
    assert store.query("SELECT * EXCLUDE (run_id) FROM latest_duplicates ORDER BY image_id").to_pylist() == first
    dedup(store, "--max-distance", "0")  # identical hashes (the rescales here) and byte copies only: no crop
    dup = duplicates(store, ids)
    assert not {"astronaut_crop3", "coffee_crop3"} & set(dup) and dup["astronaut_half"]["distance"] == 0
    assert store.query("SELECT count(*) FROM catalog WHERE duplicate_dropped").column(0)[0].as_py() == 7
    for priority, kept in (("web,DIV2K", "red_copy"), ("DIV2K", "red")):  # a tie in resolution: source priority
        dedup(store, "--max-distance", "0", "--source-priority", priority)
        assert duplicates(store, ids)[kept]["kept"]
    dedup(store, "--max-distance", "12")
    latest = store.latest_run("dedup")
    assert store.query("SELECT DISTINCT run_id FROM latest_duplicates").column(0).to_pylist() == [latest]
    assert duplicates(store, ids)["astronaut_crop3"]["matched"] == ids["astronaut_2x"]
    assert store.query("SELECT count(*) FROM catalog WHERE duplicate_dropped").column(0)[0].as_py() == 9


def test_patches_skip_dropped_images(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    store, ids = build_store(tmp_path, photos)
    dedup(store)
    run("patches", "-m", str(store.root), "--size", "96")
    cut = set(store.query("SELECT DISTINCT image_id FROM patches").column(0).to_pylist())
    dropped = set(store.query("SELECT image_id FROM catalog WHERE duplicate_dropped").column(0).to_pylist())
    assert len(dropped) == 9 and not cut & dropped
    assert cut == set(ids.values()) - dropped


def test_splits_skip_images_dropped_after_their_patches_were_cut(tmp_path: Path,
                                                                 photos: dict[str, np.ndarray]) -> None:
    store, _ = build_store(tmp_path, photos)
    run("patches", "-m", str(store.root), "--size", "96")  # before dedup: every image is cut
    dedup(store)
    run("splits", "-m", str(store.root), "--recipe", "synthetic")
    refs = store.query("SELECT p.shard || '#' || p.byte_offset || '+' || p.nbytes AS ref, c.duplicate_dropped "
                       "FROM latest_patches p JOIN catalog c USING (image_id) WHERE p.kept").to_pylist()
    dropped = {r["ref"] for r in refs if r["duplicate_dropped"]}
    clean = set(store.query("SELECT DISTINCT clean FROM latest_pairs").column(0).to_pylist())
    assert dropped and clean  # the test needs both sides
    assert not clean & dropped and clean <= {r["ref"] for r in refs}


def test_missing_or_empty_against_folder_is_one_line_and_writes_nothing(tmp_path: Path,
                                                                         photos: dict[str, np.ndarray]) -> None:
    store, _ = build_store(tmp_path, photos)
    before = sorted(p.relative_to(store.root) for p in store.root.rglob("*") if p.is_file())
    _, err = run("dedup", "-m", str(store.root), "--against", str(tmp_path / "BSD68"), code=2)
    assert err.strip() == f"error: --against {tmp_path / 'BSD68'}: no such test-set folder"
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    _, err = run("dedup", "-m", str(store.root), "--against", str(tmp_path / "empty"), code=2)
    assert err.count("\n") == 1 and "no image files" in err and str(tmp_path / "empty") in err
    after = sorted(p.relative_to(store.root) for p in store.root.rglob("*") if p.is_file())
    assert after == before and not (store.root / "hashes").exists()


def _images(rows: list[tuple]) -> pa.Table:
    names = ("image_id", "sha256", "width", "height", "source", "phash", "phash_centre", "informative")
    return pa.table({n: list(col) for n, col in zip(names, zip(*rows, strict=True), strict=True)})


def test_a_test_set_drop_passes_the_keep_to_the_next_best_member() -> None:
    h = 0x0123_4567_89AB_CDEF & (2**63 - 1)
    far = h ^ (2**62 - 1)
    images = _images([
        ("big", "s1", 400, 400, "web", h, h, True),  # would be kept, but matches the test image
        ("mid", "s2", 300, 300, "web", h ^ 0b11 << 40, h ^ 0b11 << 40, True),  # 2 bits from big, 12 from the test
        ("small", "s3", 100, 100, "web", h ^ 0b1111 << 50, h ^ 0b1111 << 50, True),
        ("pair", "s4", 100, 100, "web", far, far, True),  # a group of two in which one matches the test
        ("pair2", "s5", 50, 50, "web", far ^ 1, far ^ 1, True),
    ])
    test_hash = h ^ 0b1111111111  # 10 bits from big, 12 from mid, 14 from small
    tests = HashedTestSets(["T/a.png"] * 2, np.array([test_hash, far ^ 0b111 << 8], np.int64), {"s5": "T/b.png"})
    table = find_duplicates(images, tests, DedupConfig())
    rows = {r["image_id"]: r for r in table.to_pylist()}
    assert table.num_rows == len(rows) == 5
    assert rows["big"] == {"image_id": "big", "group_id": None, "kept": False, "reason": "test-set",
                           "matched": "T/a.png", "distance": 10}
    assert rows["mid"]["kept"] and rows["mid"]["group_id"] == "mid"
    assert (rows["small"]["matched"], rows["small"]["distance"], rows["small"]["kept"]) == ("mid", 6, False)
    # pair: its best member near-matches T/a.png's second hash, the other is a byte copy of T/b.png (distance 0)
    assert rows["pair"]["reason"] == rows["pair2"]["reason"] == "test-set"
    assert rows["pair2"]["matched"] == "T/b.png" and rows["pair2"]["distance"] == 0
    # a group left with one eligible member writes no row for it
    lone = {r["image_id"]: r for r in find_duplicates(images.slice(0, 2), tests, DedupConfig()).to_pylist()}
    assert set(lone) == {"big"}


def test_selection_limits_the_images_and_a_run_that_finds_nothing_clears_the_last(
        tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    folder = tmp_path / "DIV2K"
    write(folder / "chelsea.png", photos["chelsea"])
    shutil.copy(folder / "chelsea.png", folder / "chelsea_copy.png")
    write(folder / "camera.png", photos["camera"])
    store = Store(tmp_path / "store")
    run("ingest", "-m", str(store.root), "--folder", str(folder))
    run("download", "-m", str(store.root))
    assert "dropped 1 of 3 images (1 exact, 0 near, 0 test-set)" in dedup(store)
    _, err = run("dedup", "-m", str(store.root), "--selection", "one", code=2)
    assert "no selection 'one'" in err
    chelsea = store.query("SELECT image_id FROM catalog WHERE path LIKE '%/chelsea.png'").column(0)[0].as_py()
    (store.root / "selections" / "one").mkdir(parents=True)
    pq.write_table(pa.table({"image_id": [chelsea], "selection": ["one"]}),
                   store.root / "selections" / "one" / "part-0.parquet")
    assert "dropped 0 of 1 images" in dedup(store, "--selection", "one")
    assert store.query("SELECT count(*) FROM latest_duplicates").column(0)[0].as_py() == 0
    assert store.query("SELECT count(*) FROM catalog WHERE duplicate_dropped").column(0)[0].as_py() == 0
    assert store.query("SELECT count(*) FROM duplicates").column(0)[0].as_py() == 2  # the first run's rows stay
