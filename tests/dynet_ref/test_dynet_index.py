"""What pre-training reads from a store: kept patches, never those of images the latest dedup run dropped."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from dynet_ref.index import read_patches
from million_ird.store import Store, new_run_id
from tests.dynet_ref.train_store import build_store


def dedup_run(store: Store, dropped: dict[str, str]) -> None:
    """Record a finished dedup run that drops `dropped` (image_id -> reason) and keeps nothing else."""
    run_id = new_run_id("dedup")
    rows = [{"image_id": i, "group_id": None, "kept": False, "reason": reason, "matched": "BSD68/0001.png",
             "distance": 2, "fingerprint": "f", "run_id": run_id} for i, reason in dropped.items()]
    if rows:
        store.append("duplicates", pa.Table.from_pylist(rows), run_id)
    store.save_run("dedup", run_id, {"stage": {"against": ["BSD68"]}}, {})


def test_patches_of_images_the_latest_dedup_dropped_are_not_read(tmp_path: Path) -> None:
    store = build_store(tmp_path / "s", n_patches=4, n_pairs=1)
    every = [f"img{i}_0_0" for i in range(4)]
    assert [p.patch_id for p in read_patches([store])] == every
    dedup_run(store, {"img1": "test-set", "img3": "near"})  # img1 matches a test image: it must not train
    assert [p.patch_id for p in read_patches([store])] == ["img0_0_0", "img2_0_0"]
    dedup_run(store, {})  # a later run that drops nothing is the one in force: every patch is back
    assert [p.patch_id for p in read_patches([store])] == every


def test_pairs_of_an_image_dropped_after_splits_ran_are_not_read(demo_build: tuple[Path, str], tmp_path: Path) -> None:
    """A dedup run after `splits` (pairs still in force) must not let fine-tuning or evaluation use that image."""
    import json
    import shutil

    from dynet_ref.index import read_pairs

    store = Store(shutil.copytree(demo_build[0], tmp_path / "store"))
    train = read_pairs([store], "train")
    by_image: dict[str, set[str]] = {}
    for p in train:
        by_image.setdefault(json.loads(store.query("SELECT params FROM latest_pairs WHERE pair_id = ?", [p.pair_id])
                                       .column(0)[0].as_py())["image_id"], set()).add(p.pair_id)
    victim = sorted(by_image)[0]
    dedup_run(store, {victim: "test-set"})
    assert {p.pair_id for p in read_pairs([store], "train")} == {p.pair_id for p in train} - by_image[victim]
    assert len(by_image) > 1 and by_image[victim]
