"""Decontamination of low-structure test images (fine textures): planted rescaled, re-encoded and cropped
copies are dropped through a pixel check, while near-uniform images (solid colours, smooth gradients) are
never matched or grouped by their hash, and the test files left to byte matching are counted."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
from test_dedup import dedup, duplicates, run, write

from million_ird import phash
from million_ird.dedup import TEXTURE_MIN, pixel_thumbnails, same_pixels
from million_ird.stages.dedup import DedupConfig, closest_test_matches, find_duplicates, hash_test_sets
from million_ird.store import Store

skdata = pytest.importorskip("skimage.data")
STORE_BOXES = (1.0, phash.CENTRE)


def _jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


def _scale(image: np.ndarray, f: float) -> np.ndarray:
    return cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)


def _crop(image: np.ndarray, c: float) -> np.ndarray:
    h, w = image.shape[:2]
    return image[round(h * c):h - round(h * c), round(w * c):w - round(w * c)]


COPIES = {  # edit -> (geometry, JPEG quality or None for PNG)
    "half_q75": (lambda x: _scale(x, 0.5), 75),  # the reported case: 0.5x, then JPEG q75
    "half": (lambda x: _scale(x, 0.5), None),
    "2x": (lambda x: _scale(x, 2.0), None),
    "q75": (lambda x: x, 75),
    "crop3": (lambda x: _crop(x, 0.03), None),  # 3% off each side
    "crop3_half_q75": (lambda x: _scale(_crop(x, 0.03), 0.5), 75),
}


def _copy(image: np.ndarray, edit: str) -> np.ndarray:
    geometry, quality = COPIES[edit]
    return _jpeg(geometry(image), quality) if quality else geometry(image)


def _flattened_gravel() -> np.ndarray:
    """The gravel photo with its lighting removed: a real texture whose thumbnail is near-flat."""
    g = skdata.gravel().astype(np.float32)
    return np.clip(g - cv2.GaussianBlur(g, (0, 0), 16) + 128, 0, 255).astype(np.uint8)


def _textures() -> dict[str, np.ndarray]:
    return {"brick": skdata.brick(), "gravel_flat": _flattened_gravel()}


def _smooth() -> dict[str, np.ndarray]:
    """Near-uniform images: two solid colours, two horizontal ramps of different ranges, a vertical ramp."""
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    return {"red": np.full((240, 320, 3), (200, 30, 30), np.uint8),
            "blue": np.full((240, 320, 3), (10, 20, 220), np.uint8),
            "ramp_a": (xx / 319 * 255).astype(np.uint8),
            "ramp_b": (40 + xx / 319 * 150).astype(np.uint8),
            "vramp": (yy / 239 * 255).astype(np.uint8)}


def test_textures_are_low_structure_and_gradients_below_the_texture_floor() -> None:
    """The premise: these textures are not informative (the old rule gave them no hash), but above TEXTURE_MIN."""
    for name, image in _textures().items():
        assert TEXTURE_MIN <= phash.structure(image) < phash.STRUCTURE_MIN, name
    for name, image in _smooth().items():
        assert phash.structure(image) < TEXTURE_MIN, name


def test_pixel_check_confirms_copies_and_refuses_other_pictures() -> None:
    pool = {**_textures(), "grass": skdata.grass(), **_smooth()}
    for name, image in _textures().items():
        test = pixel_thumbnails(image, phash.TEST_REGIONS)
        for edit in COPIES:
            assert same_pixels(test, pixel_thumbnails(_copy(image, edit), STORE_BOXES)), (name, edit)
    for a, x in pool.items():
        for b, y in pool.items():
            if a != b:
                assert not same_pixels(pixel_thumbnails(x, phash.TEST_REGIONS), pixel_thumbnails(y, STORE_BOXES)), (a, b)
    red = _smooth()["red"]  # a flat thumbnail never confirms, not even against itself
    assert not same_pixels(pixel_thumbnails(red, phash.TEST_REGIONS), pixel_thumbnails(red, STORE_BOXES))


def test_near_uniform_test_images_are_byte_only_and_textures_pixel_checked(tmp_path: Path) -> None:
    folder = tmp_path / "bench"
    for name, image in {**_textures(), **_smooth(), "gravel": skdata.gravel()}.items():
        write(folder / f"{name}.png", image)
    tests = hash_test_sets((folder,))
    assert tests.byte_only == 5 and tests.not_informative == 7 and len(tests.files) == len(tests.by_sha256) == 8
    assert tests.low_structure == {str(folder / "brick.png"), str(folder / "gravel_flat.png")}
    assert set(tests.names) == {str(folder / f"{n}.png") for n in ("brick", "gravel_flat", "gravel")}


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("image_id", pa.string()), ("sha256", pa.string()), ("width", pa.int64()), ("height", pa.int64()),
        ("source", pa.string()), ("path", pa.string()), ("phash", pa.int64()), ("phash_centre", pa.int64()),
        ("informative", pa.bool_())]))


def test_a_hash_match_with_a_non_informative_side_needs_the_pixels(tmp_path: Path) -> None:
    """Forced hash collisions: only informative-with-informative is trusted; every other pair is pixel-checked."""
    bench = tmp_path / "bench"
    brick, camera = skdata.brick(), skdata.camera()
    write(bench / "brick.png", brick)
    write(bench / "camera.png", camera)
    tests = hash_test_sets((bench,))
    brick_hash, camera_hash = (int(tests.hashes[tests.names.index(str(bench / n))]) for n in ("brick.png", "camera.png"))
    rows = []

    def add(name: str, image: np.ndarray, forced: int | None = None, informative: bool | None = None) -> None:
        path = write(tmp_path / "store" / f"{name}.png", image)
        h = phash.hash_image(image)
        rows.append({"image_id": name, "sha256": name, "width": image.shape[1], "height": image.shape[0],
                     "source": "web", "path": path.name, "phash": h.phash if forced is None else forced,
                     "phash_centre": h.phash_centre if forced is None else forced,
                     "informative": h.informative if informative is None else informative})

    add("brick_half_q75", _jpeg(_scale(brick, 0.5)))  # a real copy, not informative: confirmed by pixels
    add("red_as_brick", _smooth()["red"], forced=brick_hash)  # flat, with brick's very hash: refused
    add("grass_as_brick", skdata.grass(), forced=brick_hash, informative=True)  # the test is low-structure: refused
    add("ramp_as_camera", _smooth()["ramp_a"], forced=camera_hash)  # flat store image, informative test: refused
    add("chelsea_as_camera", skdata.chelsea(), forced=camera_hash, informative=True)  # both informative: trusted
    images = _table(rows)
    found = closest_test_matches(images, tests, 10, root=tmp_path / "store")
    assert {r["image_id"]: r["matched"] for r in found.rows.to_pylist()} == {
        "brick_half_q75": str(bench / "brick.png"), "chelsea_as_camera": str(bench / "camera.png")}
    assert (found.pixel_checks, found.pixel_confirmed, found.unreadable) == (4, 1, 0)
    with pytest.raises(ValueError, match="store root"):
        find_duplicates(images, tests, DedupConfig())


def test_against_drops_copies_of_low_structure_textures_but_no_smooth_image(tmp_path: Path) -> None:
    textures, smooth = _textures(), _smooth()
    bench = tmp_path / "Textures"
    test_files = {name: write(bench / f"{name}.png", image) for name, image in textures.items()}
    ramp_test = write(bench / "ramp.png", smooth["ramp_a"])  # a gradient test image: byte copies only
    web = tmp_path / "web"
    planted = {}
    for name, image in textures.items():
        for edit, (geometry, quality) in COPIES.items():
            path = write(web / f"{name}_{edit}.{'jpg' if quality else 'png'}", geometry(image), quality)
            planted[path.stem] = test_files[name]
    for name in ("red", "blue", "ramp_b", "vramp"):  # other smooth images: never grouped, never matched
        write(web / f"{name}.png", smooth[name])
    write(web / "grass.png", skdata.grass())  # an unrelated texture
    store = Store(tmp_path / "store")
    run("ingest", "-m", str(store.root), "--folder", str(web), "--source", "web")
    run("download", "-m", str(store.root))
    ids = {Path(r["path"]).stem: r["image_id"] for r in store.query("SELECT image_id, path FROM catalog").to_pylist()}
    out = dedup(store, "--against", str(bench))
    dup = duplicates(store, ids)
    for name, test_file in planted.items():
        assert name in dup, f"{name}: a copy of {test_file.name} was not dropped"
        row = dup[name]
        assert (row["kept"], row["reason"], row["matched"], row["group_id"]) == (False, "test-set", str(test_file),
                                                                                 None), name
        assert row["distance"] <= 10, name
    assert set(dup) == set(planted)  # nothing else: no smooth image matched the ramp test image nor grouped
    flags = {r["image_id"]: r["informative"] for r in store.query("SELECT * FROM hashes").to_pylist()}
    assert not flags[ids["brick_half_q75"]]  # the reported case: a non-informative store copy
    stats = json.loads(sorted((store.root / "runs").glob("*-dedup-*.json"))[-1].read_text())["stats"]
    assert stats["test_files_low_structure"] == 2 and stats["test_files_byte_only"] == 1
    assert stats["dropped_test_set"] == len(planted) == 12 and stats["test_pixel_confirmed"] == 12
    assert stats["test_files_matched"] == 2 and "test_pixel_unreadable" not in stats
    assert "note: 1 test file(s) are near-uniform" in out and f"dropped 12 of {len(ids)} images" in out
    assert str(ramp_test) not in {r["matched"] for r in dup.values()}
