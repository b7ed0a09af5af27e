"""Patches: centred 512 grid, flat-region detector per spec, lossless patch files, resume, selections."""

from __future__ import annotations

import tarfile
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from million_ird.driver import DriverConfig
from million_ird.flat import flat_ratio
from million_ird.images import read_image
from million_ird.stages.patches import SHARD_DIR, PatchesConfig, grid, run_patches
from million_ird.store import Store, StoreError

QUIET = DriverConfig(progress=False)


def _texture(h: int, w: int, seed: int = 0, dtype: type = np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = 255 if dtype == np.uint8 else 65535
    return rng.integers(0, top, (h, w, 3)).astype(dtype)


def test_flat_ratio_follows_the_spec() -> None:
    ramp = np.tile(np.linspace(0, 255, 512, dtype=np.float32), (512, 1)).astype(np.uint8)
    assert flat_ratio(ramp) == 1.0  # a smooth ramp is flat even though its intensity std is large
    assert flat_ratio(_texture(512, 512)) == 0.0
    half = _texture(512, 512)
    half[:, :256] = 90
    assert flat_ratio(half) == 3 / 8  # 4 flat cell columns, but the one touching the texture sees its edge
    faint = (np.random.default_rng(1).normal(128, 1.0, (512, 512))).clip(0, 255).astype(np.uint8)
    assert flat_ratio(faint) == 1.0 and flat_ratio(faint, threshold=1e-3) == 0.0


def test_grid_is_centred_and_non_overlapping() -> None:
    assert grid(1100, 600, 512) == [(38, 44), (550, 44)]
    assert grid(511, 4000, 512) == []
    boxes = grid(2048, 1536, 512)
    assert len(boxes) == 12 and len(set(boxes)) == 12


def _store_with(tmp_path: Path, images: dict[str, np.ndarray]) -> Store:
    store = Store(tmp_path / "store")
    rows, outcomes = [], []
    for image_id, pixels in images.items():
        path = tmp_path / f"{image_id}.png"
        cv2.imwrite(str(path), pixels)
        rows.append({"image_id": image_id, "source": "test", "path": str(path)})
        outcomes.append({"image_id": image_id, "status": "ok", "path": str(path), "width": pixels.shape[1],
                         "height": pixels.shape[0], "attempt": 1})
    store.append("images", pa.Table.from_pylist(rows))
    store.append("downloads", pa.Table.from_pylist(outcomes))
    return store


def _pixels(store: Store, row: dict) -> np.ndarray:
    """A kept patch read back by seeking to its bytes (BGR, like cv2.imread), checked against tarfile too."""
    with tarfile.open(store.root / row["shard"]) as tar:
        info = tar.getmember(row["member"])
        assert (info.offset_data, info.size) == (row["byte_offset"], row["nbytes"])
    rgb = read_image(f"{store.root / row['shard']}#{row['byte_offset']}+{row['nbytes']}")
    return np.ascontiguousarray(rgb[..., ::-1])


def test_patches_drop_flat_keep_pixels_and_resume(tmp_path: Path) -> None:
    left_flat = _texture(600, 1100, seed=2)
    left_flat[:, :560] = 77
    deep = _texture(520, 530, seed=3, dtype=np.uint16)
    store = _store_with(tmp_path, {"aa01": left_flat, "bb02": deep, "cc03": _texture(400, 900)})
    counts = run_patches(store, PatchesConfig(), QUIET)
    assert (counts["images"], counts["patches"], counts["kept"], counts["dropped_flat"]) == (2, 3, 2, 1)
    assert counts["shards"] == 1 and counts["parts"] == 1
    rows = {r["patch_id"]: r for r in store.query("SELECT * FROM patches").to_pylist()}
    assert not rows["aa01_44_38"]["kept"] and rows["aa01_44_38"]["shard"] is None
    assert np.array_equal(_pixels(store, rows["aa01_44_550"]), left_flat[44:556, 550:1062])
    saved16 = _pixels(store, rows["bb02_4_9"])
    assert saved16.dtype == np.uint16 and np.array_equal(saved16, deep[4:516, 9:521])
    again = run_patches(store, PatchesConfig(), QUIET)
    assert again["pending"] == 0 and store.query("SELECT count(*) FROM patches").column(0)[0].as_py() == 3


def test_a_new_size_cuts_again_and_the_latest_config_is_in_force(tmp_path: Path) -> None:
    store = _store_with(tmp_path, {"aa01": _texture(600, 1100, seed=2)})
    run_patches(store, PatchesConfig(), QUIET)
    small = run_patches(store, PatchesConfig(size=256), QUIET)
    assert small["pending"] == 1 and small["patches"] == 2 * 4
    latest = store.query("SELECT DISTINCT size FROM latest_patches").column(0).to_pylist()
    assert latest == [256]
    back = run_patches(store, PatchesConfig(), QUIET)  # the 512 config again: nothing to cut, but back in force
    assert back["pending"] == 0
    assert store.query("SELECT DISTINCT size FROM latest_patches").column(0).to_pylist() == [512]
    assert run_patches(store, PatchesConfig(max_flat=0.9), QUIET)["pending"] == 1  # detector settings count too


def test_undecodable_image_gets_one_error_row_and_is_not_retried(tmp_path: Path) -> None:
    store = _store_with(tmp_path, {"aa01": _texture(512, 512)})
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    store.append("images", pa.Table.from_pylist([{"image_id": "zz09", "source": "test", "path": str(bad)}]))
    store.append("downloads", pa.Table.from_pylist([{"image_id": "zz09", "status": "ok", "path": str(bad),
                                                     "width": 600, "height": 600, "attempt": 1}]))
    stats = run_patches(store, PatchesConfig(), QUIET)
    assert stats["pending"] == 2 and stats["errors"] == 1
    err = store.query("SELECT * FROM patches WHERE image_id = 'zz09'").to_pylist()
    assert len(err) == 1 and "cannot decode" in err[0]["error"] and not err[0]["kept"] and err[0]["patch_id"] is None
    assert run_patches(store, PatchesConfig(), QUIET)["pending"] == 0
    assert run_patches(store, PatchesConfig(), DriverConfig(progress=False, retry_errors=True))["pending"] == 1


def test_orphan_shards_of_a_killed_run_are_removed(tmp_path: Path) -> None:
    store = _store_with(tmp_path, {"aa01": _texture(512, 512)})
    orphan = store.root / SHARD_DIR / "x" / "dead.tar"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"\0" * 1024)
    stats = run_patches(store, PatchesConfig(), QUIET)
    assert stats["orphan_shards_removed"] == 1 and not orphan.exists()
    kept = store.query("SELECT shard FROM patches WHERE kept").column(0).to_pylist()
    assert all((store.root / s).is_file() for s in kept)


def test_selection_limits_the_images(tmp_path: Path) -> None:
    store = _store_with(tmp_path, {"aa01": _texture(512, 512), "bb02": _texture(512, 512, seed=5)})
    with pytest.raises(StoreError, match="no selection 'keep'"):
        run_patches(store, PatchesConfig(selection="keep"), QUIET)
    sel = store.root / "selections" / "keep"
    sel.mkdir(parents=True)
    pq.write_table(pa.table({"image_id": ["bb02"], "selection": ["keep"]}), sel / "part-0.parquet")
    assert run_patches(store, PatchesConfig(selection="keep"), QUIET)["images"] == 1
    assert store.query("SELECT DISTINCT image_id FROM patches").column(0).to_pylist() == ["bb02"]


def test_a_batch_holds_about_one_shard_of_patches(tmp_path: Path) -> None:
    """Batches close once their grid cells would fill --shard-mb as PNG; each batch writes its own shard."""
    stripes = lambda phase: np.repeat(((np.arange(512) + phase) // 4 % 2 * 200)[None, :, None], 512, 0).repeat(3, 2)  # noqa: E731
    ids = [f"{c}{c}0{i}" for i, c in enumerate("abcdefg")]
    store = _store_with(tmp_path, {k: stripes(i).astype(np.uint8) for i, k in enumerate(ids)})
    cfg = PatchesConfig(size=128, shard_mb=1)  # 1 MiB / (128² x 3 x 0.5) = 42.7 cells: 3 images of 16 cells a batch
    stats = run_patches(store, cfg, QUIET)
    assert stats["kept"] == 7 * 16 and stats["shards"] == 3
    pairs = store.query("SELECT DISTINCT image_id, shard FROM patches").to_pylist()
    shard_of = {r["image_id"]: r["shard"] for r in pairs}
    assert len(shard_of) == len(pairs) == 7  # one shard per image
    groups = sorted(sorted(k for k in ids if shard_of[k] == s) for s in set(shard_of.values()))
    assert groups == [ids[:3], ids[3:6], ids[6:]]
    assert run_patches(store, PatchesConfig(size=128, images_per_batch=2, shard_mb=64), QUIET)["shards"] == 0  # same cut


@pytest.mark.parametrize("bad", [{"size": 0}, {"size": 256, "cell": 512}, {"max_flat": 1.5}, {"shard_mb": 0}])
def test_bad_settings_are_one_line_errors_before_any_work(bad: dict) -> None:
    with pytest.raises(StoreError, match="--") as info:
        PatchesConfig(**bad)
    assert "\n" not in str(info.value)


def test_cli_refuses_bad_settings_in_one_line_without_touching_the_store(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from million_ird.cli import app

    store = _store_with(tmp_path, {"aa01": _texture(512, 512)})
    before = sorted(p.name for p in store.root.rglob("*"))
    res = CliRunner().invoke(app, ["patches", "-m", str(store.root), "--size", "256", "--cell", "512"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "--cell 512" in res.output
    assert sorted(p.name for p in store.root.rglob("*") if p.name != ".lock") == before  # the lock is taken first
