"""`splits --recipe synthetic` on real patches: the split is drawn per image (no image has pairs in both
splits), and after every run the pairs in force are exactly those of the current sources: the kept patches
of the patch settings in force, of images the latest dedup kept; whole images only while no kept patch is."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import typer
from typer.testing import CliRunner

from million_ird.cli.splits import register
from million_ird.driver import DriverConfig
from million_ird.stages import split_plan as P
from million_ird.stages.patches import PatchesConfig, run_patches
from million_ird.store import Store, new_run_id

RUNNER = CliRunner()
REF = "p.shard || '#' || p.byte_offset || '+' || p.nbytes"


def splits(store: Store, *args: str, code: int = 0) -> str:
    """Run `splits --recipe synthetic` on the store; its output (the exit code checked)."""
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps `splits` a sub-command
    res = RUNNER.invoke(app, ["splits", "--manifest", str(store.root), "--recipe", "synthetic", *args])
    assert res.exit_code == code, res.output
    return res.output


def add_photos(store: Store, ids: list[str], side: int = 128) -> None:
    """Downloaded (ok) noise photos, textured everywhere, so every patch is kept."""
    paths = []
    for image_id in ids:
        path = store.root / "files" / f"{image_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(list(image_id.encode())).integers(0, 256, (side, side, 3), dtype=np.uint8)
        cv2.imwrite(str(path), pixels)
        paths.append(path.relative_to(store.root).as_posix())
    store.append("images", pa.table({"image_id": ids, "source": ["t"] * len(ids)}))
    store.append("downloads", pa.table({"image_id": ids, "status": ["ok"] * len(ids), "attempt": [1] * len(ids),
                                        "path": paths, "width": [side] * len(ids), "height": [side] * len(ids)}))


def cut(store: Store, size: int) -> None:
    """`million-ird patches --size SIZE` (every image not cut at this size yet)."""
    run_patches(store, PatchesConfig(size=size, cell=16), DriverConfig(progress=False))


def image_of(store: Store) -> dict[str, str]:
    """Clean path (whole image, or patch-shard member of any size) -> its image."""
    rows = store.query(f"SELECT {REF} AS ref, image_id FROM patches p WHERE kept UNION ALL "
                       "SELECT path, image_id FROM catalog WHERE status = 'ok'").to_pylist()
    return {r["ref"]: r["image_id"] for r in rows}


def image_splits(store: Store) -> dict[str, set[str]]:
    """Image -> the splits of its synthetic pairs in force."""
    images = image_of(store)
    out: dict[str, set[str]] = {}
    for r in store.query("SELECT clean, split FROM latest_pairs WHERE recipe = 'synthetic'").to_pylist():
        out.setdefault(images[r["clean"]], set()).add(r["split"])
    return out


def in_force_is_current(store: Store) -> bool:
    """True when the synthetic pairs in force are 5 (3 sigmas, rain, haze) per current source, and no others."""
    sources = store.query(f"SELECT {REF} AS ref FROM latest_patches p JOIN catalog c USING (image_id) "
                          "WHERE p.kept AND NOT c.duplicate_dropped").column(0).to_pylist()
    if not store.query("SELECT count(*) FROM latest_patches WHERE kept").column(0)[0].as_py():
        sources = store.query("SELECT path FROM catalog WHERE status = 'ok' AND NOT duplicate_dropped").column(0).to_pylist()
    clean = store.query("SELECT clean FROM latest_pairs WHERE recipe = 'synthetic'").column(0).to_pylist()
    return bool(sources) and Counter(clean) == dict.fromkeys(sources, 5)


def last_splits_record(store: Store) -> dict:
    """The stage config of the latest splits run record."""
    record = sorted((store.root / "runs").glob("*-splits-*.json"))[-1]
    return json.loads(record.read_text())["config"]["stage"]


def drop(store: Store, *image_ids: str) -> None:
    """A finished dedup run that drops `image_ids` as test-set matches (and nothing else)."""
    run_id = new_run_id("dedup")
    store.append("duplicates", pa.Table.from_pylist([{
        "image_id": i, "group_id": None, "kept": False, "reason": "test-set", "matched": "BSD68/1.png",
        "distance": 3, "fingerprint": "f", "run_id": run_id} for i in image_ids]), run_id)
    store.save_run("dedup", run_id, {"stage": {"against": ["BSD68"]}}, {})


def test_every_patch_of_an_image_shares_its_split_as_the_store_grows(tmp_path: Path) -> None:
    store = Store(tmp_path)
    add_photos(store, [f"img{i}" for i in range(4)])
    cut(store, 64)  # 4 patches per image
    args = ("--seed", "1", "--test-fraction", "0.5")
    out = splits(store, *args)
    before = image_splits(store)
    assert all(len(s) == 1 for s in before.values()), before  # no image in both splits
    assert sum(s == {"test"} for s in before.values()) == P.held_out_count(4, 0.5) == 2  # over images, not patches
    assert "pairs made from 16 kept patches of 4 images" in out and re.search(r"test images\s+2", out), out
    add_photos(store, ["img4", "img5"])
    cut(store, 64)
    out = splits(store, *args)
    after = image_splits(store)
    assert all(len(s) == 1 for s in after.values()) and len(after) == 6
    # img0..img3 keep their split though a fresh draw over six images would move some of them
    assert {i: after[i] for i in before} == before
    fresh = P.assign_splits([f"img{i}" for i in range(6)], 1, 0.5)
    assert any({fresh[i]} != s for i, s in before.items())
    assert sum(s == {"test"} for s in after.values()) == 3 and re.search(r"skipped\s+already written\s+80", out)
    out = splits(store, *args, "--limit", "2")  # the first two images, with all of their patches
    assert "pairs made from 8 kept patches of 2 images" in out and image_splits(store) == {
        i: after[i] for i in ("img0", "img1")}


def test_pairs_in_force_are_those_of_the_current_sources(tmp_path: Path) -> None:
    store = Store(tmp_path)
    add_photos(store, [f"img{i}" for i in range(4)])
    legacy = [{"pair_id": f"all-in-one/train/derain/{n}", "recipe": "all-in-one", "split": "train", "task": "derain",
               "clean": "c.png", "degraded": "d.png", "fingerprint": fp} for n, fp in (("a", "old"), ("b", "older"))]
    store.append("pairs", pa.Table.from_pylist(legacy))  # a recipe whose latest run predates pair sets
    store.save_run("splits", new_run_id("splits"), {"stage": {"recipe": "all-in-one"}, "fingerprints": {"": "old"}}, {})
    out = splits(store)
    assert "pairs made from 4 whole images (no kept patches in force)" in out and in_force_is_current(store)
    assert last_splits_record(store)["source"] == P.WHOLE_IMAGES
    first = image_splits(store)
    cut(store, 64)  # now patches exist: the whole-image pairs leave
    out = splits(store)
    assert in_force_is_current(store), "whole-image pairs still in force beside the patch pairs"
    assert "pairs made from 16 kept patches of 4 images" in out and image_splits(store) == first
    record = last_splits_record(store)
    assert (record["source"], record["sources"], record["source_images"]) == (P.KEPT_PATCHES, 16, 4)
    cut(store, 32)  # smaller patches; the ids of the 4 corner patches of each image are the same as at 64
    splits(store)
    assert in_force_is_current(store), "pairs of 64-px patches still in force"
    assert image_splits(store) == first
    dropped = min(i for i, s in first.items() if s == {"train"})
    drop(store, dropped)  # e.g. a test-set match found after the split was written
    out = splits(store)
    assert in_force_is_current(store) and dropped not in image_splits(store), "pairs of a dropped image in force"
    assert image_splits(store) == {i: s for i, s in first.items() if i != dropped}
    assert "pairs made from 48 kept patches of 3 images" in out and re.search(r"skipped\s+already written\s+240", out)
    rows = store.query("SELECT pair_id FROM latest_pairs WHERE recipe = 'all-in-one'").column(0).to_pylist()
    assert rows == ["all-in-one/train/derain/a"]  # the older recipe keeps its fingerprint rule


def test_kept_patches_only_of_dropped_images_is_a_one_line_error(tmp_path: Path) -> None:
    store = Store(tmp_path)
    add_photos(store, ["img0", "img1"])
    cut(store, 64)
    drop(store, "img0", "img1")  # the error says so (not "no kept patches and no downloaded images")
    lines = [x for x in splits(store, code=2).splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and str(tmp_path) in lines[0], lines
    assert "every kept patch in force is of an image the latest dedup dropped" in lines[0]
    assert "million-ird patches" in lines[0] and not (tmp_path / "pairs").exists()


def test_an_image_recut_at_another_size_gets_new_pairs_while_others_keep_the_old_size(tmp_path: Path) -> None:
    """Patch ids of 64- and 128-px cuts collide (img_0_0); the settings in force stay {64, 128} while images
    move from one to the other, so only the size in the pair id keeps a stale 64-px pair out of force."""
    store = Store(tmp_path / "s")
    add_photos(store, [f"img{i}" for i in range(4)])
    cut(store, 64)

    def cut_128(limit: int) -> None:  # `patches --size 128 --limit N`: the next N images only
        run_patches(store, PatchesConfig(size=128, cell=16), DriverConfig(progress=False, limit=limit))

    cut_128(2)
    splits(store)
    assert in_force_is_current(store)
    cut_128(1)  # one more image moves to 128 px; the last stays at 64: the same settings in force as before
    splits(store)
    assert in_force_is_current(store)
