"""pHash robustness on planted copies, the informative rule, HashIndex exactness, grouping and test-set matching."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest

from million_ird import phash
from million_ird.dedup import (
    DEFAULT_MAX_DISTANCE,
    DEFAULT_TEST_DISTANCE,
    ROWS,
    connected_components,
    group_duplicates,
    match_test_sets,
)
from million_ird.hash_index import HashIndex, _bands, as_uint64, plan_bands, popcount64

skdata = pytest.importorskip("skimage.data")
K = DEFAULT_MAX_DISTANCE
DEMO = Path(__file__).resolve().parents[2] / "manifests" / "demo" / "photos"
PHOTOS = ("astronaut", "coffee", "chelsea", "camera", "rocket", "coins", "immunohistochemistry", "moon",
          "clock", "page")


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    images = {name: getattr(skdata, name)() for name in PHOTOS}
    images["hubble(demo)"] = cv2.imread(str(DEMO / "hubble_deep_field.jpg"), cv2.IMREAD_COLOR)[..., ::-1].copy()
    return images


def _jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    bgr = image[..., ::-1] if image.ndim == 3 else image
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out[..., ::-1] if out.ndim == 3 else out


def _scale(image: np.ndarray, f: float) -> np.ndarray:
    return cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)


def _crop(image: np.ndarray, top: float, left: float, bottom: float, right: float) -> np.ndarray:
    h, w = image.shape[:2]
    return image[round(h * top):h - round(h * bottom), round(w * left):w - round(w * right)]


EDITS = {
    "0.5x": lambda x: _scale(x, 0.5),
    "2x": lambda x: _scale(x, 2.0),
    "jpeg75": _jpeg,
    "crop3%": lambda x: _crop(x, 0.03, 0.03, 0.03, 0.03),
    "crop4%": lambda x: _crop(x, 0.04, 0.04, 0.04, 0.04),
    "crop5%": lambda x: _crop(x, 0.05, 0.05, 0.05, 0.05),
    "crop3-5%": lambda x: _crop(x, 0.03, 0.05, 0.04, 0.03),
    "crop5-3%": lambda x: _crop(x, 0.05, 0.03, 0.03, 0.04),
    "crop4%+0.5x+jpeg": lambda x: _jpeg(_scale(_crop(x, 0.04, 0.04, 0.04, 0.04), 0.5)),
    "crop3-5%+2x": lambda x: _scale(_crop(x, 0.04, 0.03, 0.05, 0.05), 2.0),
}


def _variants(image: np.ndarray) -> np.ndarray:
    h = phash.hash_image(image)
    return np.array([h.phash, h.phash_centre], np.int64)


def _distance(a: np.ndarray, b: np.ndarray) -> int:
    return int(popcount64(as_uint64(a)[:, None] ^ as_uint64(b)[None, :]).min())


# --- the hash itself ---------------------------------------------------------------------------------------


def test_hash_layout_and_int64_round_trip(photos: dict[str, np.ndarray]) -> None:
    for image in photos.values():
        h = phash.phash(image)
        assert 0 <= h < 2**63 and bin(h).count("1") == 31  # bit 63 clear, median split of 63 bits
        stored = np.array([phash.to_int64(h)], np.int64)
        assert phash.from_int64(int(stored[0])) == h and int(as_uint64(stored)[0]) == h
    assert phash.to_int64(2**64 - 1) == -1 and phash.from_int64(-1) == 2**64 - 1
    assert phash.hamming(-1, 0) == 64


def test_dtype_and_channel_invariance(photos: dict[str, np.ndarray]) -> None:
    rgb = photos["astronaut"]
    assert phash.hamming(phash.phash(rgb), phash.phash(rgb.astype(np.uint16) * 257)) <= 2
    gray = photos["camera"]
    assert phash.phash(gray) == phash.phash(np.dstack([gray] * 3))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    assert phash.phash(rgba) == phash.phash(rgb)
    with pytest.raises(TypeError):
        phash.phash(rgb.astype(np.float32))


@pytest.mark.parametrize("edit", list(EDITS))
def test_planted_copies_match_within_default_radius(photos: dict[str, np.ndarray], edit: str) -> None:
    for name, image in photos.items():
        copy = EDITS[edit](image)
        assert phash.informative(copy), (name, edit)
        d = _distance(_variants(image), _variants(copy))
        assert d <= K, f"{name} {edit}: distance {d} > {K}"


def test_centre_variant_is_what_rescues_crops(photos: dict[str, np.ndarray]) -> None:
    """A full-frame-only pHash misses 5% crops that the full + centre pair catches."""
    full_only = [phash.hamming(phash.phash(x), phash.phash(EDITS["crop5%"](x))) for x in photos.values()]
    assert max(full_only) > K


def test_different_photos_do_not_match(photos: dict[str, np.ndarray]) -> None:
    tiles = {f"{n}/{i}{j}": x[i * x.shape[0] // 2:(i + 1) * x.shape[0] // 2, j * x.shape[1] // 2:(j + 1) * x.shape[1] // 2]
             for n, x in photos.items() for i in range(2) for j in range(2)}
    pool = {name: _variants(x) for name, x in {**photos, **tiles}.items() if phash.informative(x)}
    assert len(pool) >= 40
    for (a, ha), (b, hb) in itertools.combinations(pool.items(), 2):
        assert _distance(ha, hb) > K, (a, b)


def _flat_images() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    rng = np.random.default_rng(0)
    return {
        "red": np.full((240, 320, 3), (200, 30, 30), np.uint8),
        "blue": np.full((100, 80, 3), (10, 20, 220), np.uint8),
        "gray": np.full((240, 320), 128, np.uint8),
        "white16": np.full((64, 64), 65535, np.uint16),
        "hramp": (xx / 319 * 255).astype(np.uint8),
        "vramp": (yy / 239 * 255).astype(np.uint8),
        "diag_rgb": np.dstack([(xx + yy) / 558 * 255, 255 - xx / 319 * 255, np.full_like(xx, 90)]).astype(np.uint8),
        "noisy_ramp": np.clip(xx / 319 * 255 + rng.normal(0, 3, xx.shape), 0, 255).astype(np.uint8),
        "radial": np.clip(np.hypot(xx - 160, yy - 120) / 200 * 255, 0, 255).astype(np.uint8),
        "ramp16": (xx / 319 * 65535).astype(np.uint16),
    }


def test_flat_images_are_not_informative_and_never_group_by_hash(photos: dict[str, np.ndarray]) -> None:
    flats = _flat_images()
    for name, image in flats.items():
        assert phash.structure(image) < phash.STRUCTURE_MIN / 3, name
        assert not phash.informative(image), name
    for name, image in photos.items():
        assert phash.informative(image), name
    hashes = [phash.hash_image(x) for x in flats.values()]
    n = len(hashes)
    table = group_duplicates([f"f{k}" for k in range(n)], [f"sha{k}" for k in range(n)],
                             np.array([[h.phash, h.phash_centre] for h in hashes]), [h.informative for h in hashes],
                             [100] * n, [100] * n, ["web"] * n, max_distance=32)
    assert table.num_rows == 0
    # the same solid colours flagged informative would collide: that is what the rule prevents
    forced = group_duplicates([f"f{k}" for k in range(n)], [f"sha{k}" for k in range(n)],
                              np.array([[h.phash, h.phash_centre] for h in hashes]), [True] * n,
                              [100] * n, [100] * n, ["web"] * n, max_distance=K)
    assert forced.num_rows > 0


# --- the index -----------------------------------------------------------------------------------------------


def _planted_hashes(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    for dst, src in zip(rng.integers(0, n, n // 10), rng.integers(0, n, n // 10), strict=True):
        value = int(h[src])
        for bit in rng.choice(64, int(rng.integers(0, k + 3)), replace=False):
            value ^= 1 << int(bit)
        h[dst] = value
    h[:4] = h[4]  # a bucket of identical hashes
    return h


def _brute_pairs(h: np.ndarray, k: int) -> np.ndarray:
    rows = []
    for i in range(len(h) - 1):
        d = popcount64(h[i] ^ h[i + 1:])
        j = np.flatnonzero(d <= k)
        rows.append(np.c_[np.full(len(j), i), j + i + 1, d[j]])
    return np.concatenate(rows).astype(np.int64)


@pytest.mark.parametrize("k,m", [(0, None), (3, None), (3, 4), (8, None), (8, 9), (8, 3), (10, None), (10, 11),
                                 (10, 3), (10, 4)])
def test_index_pairs_equal_brute_force(k: int, m: int | None) -> None:
    h = _planted_hashes(5000, k, seed=k)
    expected = _brute_pairs(h, k)
    assert len(expected) > 100  # the planted neighbours are there
    index = HashIndex(h.view(np.int64), k, bands=None if m is None else _bands(m, k, 64))
    i, j, d = index.pairs()
    np.testing.assert_array_equal(np.c_[i, j, d], expected)


@pytest.mark.parametrize("k,m", [(8, None), (10, 3), (10, 11)])
def test_index_query_equals_brute_force(k: int, m: int | None) -> None:
    h = _planted_hashes(5000, k, seed=100 + k)
    rng = np.random.default_rng(1)
    queries = h[rng.integers(0, len(h), 400)] ^ (np.uint64(1) << rng.integers(0, 64, 400).astype(np.uint64))
    queries = np.r_[queries, rng.integers(0, 2**63, 100, dtype=np.uint64)]
    d = popcount64(queries[:, None] ^ h[None, :])
    expected = np.argwhere(d <= k)
    qi, rows, dist = HashIndex(h, k, bands=None if m is None else _bands(m, k, 64)).query(queries)
    np.testing.assert_array_equal(np.c_[qi, rows], expected)
    np.testing.assert_array_equal(dist, d[expected[:, 0], expected[:, 1]])


def test_band_plans_cover_radius() -> None:
    for k in range(0, 16):
        for n in (10, 5000, 2_000_000):
            bands = plan_bands(n, k)
            assert sum(b.width for b in bands) == 64
            assert sum(b.radius + 1 for b in bands) == k + 1
    assert len(plan_bands(2_000_000, 10)) == 3  # wide bands searched within a radius, not K + 1 exact bands


def test_index_refuses_bands_that_miss_pairs() -> None:
    h = _planted_hashes(100, 4, seed=0)
    with pytest.raises(ValueError, match="cannot find"):
        HashIndex(h, 4, bands=_bands(4, 3, 64))  # radii for K = 3 only
    with pytest.raises(ValueError, match="cannot find"):
        HashIndex(h, 4, bands=_bands(5, 4, 64)[1:])  # the low bits are not covered


def test_connected_components_match_union_find() -> None:
    rng = np.random.default_rng(3)
    n = 2000
    a, b = rng.integers(0, n, 1500), rng.integers(0, n, 1500)
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a, b, strict=True):
        rx, ry = find(int(x)), find(int(y))
        parent[max(rx, ry)] = min(rx, ry)
    expected = [min(v for v in range(n) if find(v) == find(u)) for u in range(n)]
    np.testing.assert_array_equal(connected_components(n, a, b), expected)


# --- grouping and keep rule ----------------------------------------------------------------------------------


def _group(rows: list[tuple], **kwargs: object) -> dict[str, dict]:
    ids, sha, hashes, inf, w, h, src = zip(*rows, strict=True)
    table = group_duplicates(list(ids), list(sha), np.array(hashes, dtype=np.int64), list(inf), list(w), list(h),
                             list(src), **kwargs)
    assert table.schema == ROWS
    return {r["image_id"]: r for r in table.to_pylist()}


def test_keep_rule_resolution_then_priority_then_id() -> None:
    base = 0x1234_5678_9ABC_DEF0 & (2**63 - 1)
    near = base ^ 0b1011  # 3 bits away
    out = _group([("b", "s1", base, True, 100, 100, "web"), ("a", "s2", near, True, 200, 100, "web"),
                  ("c", "s3", base, True, 100, 100, "div2k")])
    assert out["a"]["kept"] and out["a"]["matched"] is None and out["a"]["group_id"] == "a"
    assert out["b"]["matched"] == "a" and out["b"]["distance"] == 3 and out["b"]["reason"] == "near"
    assert out["a"]["reason"] == "near"
    # equal resolution: source priority decides, then the smallest id
    out = _group([("b", "s1", base, True, 100, 100, "web"), ("a", "s2", near, True, 100, 100, "web"),
                  ("c", "s3", base, True, 100, 100, "div2k")], source_priority=["div2k", "web"])
    assert out["c"]["kept"] and out["a"]["matched"] == "c" and out["b"]["matched"] == "c"
    out = _group([("b", "s1", base, True, 100, 100, "web"), ("a", "s2", near, True, 100, 100, "web"),
                  ("c", "s3", base, True, 100, 100, "div2k")], source_priority=["web"])
    assert out["a"]["kept"]  # unlisted sources rank after listed ones; then "a" < "b"


def test_exact_groups_chains_and_singletons() -> None:
    h0 = 0x0F0F_0F0F_0F0F_0F0F
    rows = [
        ("x1", "same", 5, False, 50, 50, "web"),  # exact copies of a flat image: grouped by sha only
        ("x2", "same", 5, False, 50, 50, "web"),
        ("f1", "o1", 5, False, 50, 50, "web"),  # same hash, not informative, other sha: alone
        ("c1", "c1", h0, True, 300, 300, "web"),  # chain c1 ~ c2 ~ c3 (6 + 6 bits, c1..c3 are 12 apart)
        ("c2", "c2", h0 ^ 0x3F, True, 200, 200, "web"),
        ("c3", "c3", h0 ^ 0xFFF, True, 100, 100, "web"),
        ("c3copy", "c3", h0 ^ 0xFFF, True, 100, 100, "web"),
        ("u", "u", h0 ^ (2**62 - 1), True, 100, 100, "web"),  # far from everything
    ]
    out = _group(rows, max_distance=6)
    assert set(out) == {"x1", "x2", "c1", "c2", "c3", "c3copy"}
    assert out["x1"]["kept"] and out["x1"]["reason"] == "exact" and out["x2"]["matched"] == "x1"
    assert out["x2"]["distance"] == 0 and out["x2"]["reason"] == "exact"
    assert {out[k]["group_id"] for k in ("c1", "c2", "c3", "c3copy")} == {"c1"}  # the chain is one group
    assert out["c3"]["distance"] == 12 > 6 and out["c3"]["reason"] == "near"
    assert out["c3copy"]["reason"] == "near" and out["c1"]["distance"] is None


def test_group_duplicates_on_real_copies(photos: dict[str, np.ndarray]) -> None:
    ids, sha, hashes, inf, w, h = [], [], [], [], [], []
    for name, image in photos.items():
        for edit, f in [("orig", lambda x: x), *list(EDITS.items())[:6]]:
            x = f(image)
            ih = phash.hash_image(x)
            ids.append(f"{name}:{edit}")
            sha.append(f"{name}:{edit}")
            hashes.append([ih.phash, ih.phash_centre])
            inf.append(ih.informative)
            h.append(x.shape[0])
            w.append(x.shape[1])
    full = group_duplicates(ids, sha, np.array(hashes), inf, w, h, ["web"] * len(ids))
    groups = {r["image_id"]: r["group_id"] for r in full.to_pylist()}
    assert set(groups) == set(ids)
    for name in photos:
        assert {groups[i] for i in ids if i.startswith(name + ":")} == {f"{name}:2x"}  # the largest copy is kept
    # the full-frame hash alone (here as an Arrow column) misses some crops
    pairs = [k for k, i in enumerate(ids) if i.endswith((":orig", ":crop5%"))]
    alone = group_duplicates([ids[k] for k in pairs], [sha[k] for k in pairs], pa.array([hashes[k][0] for k in pairs]),
                             pa.array([inf[k] for k in pairs]), [w[k] for k in pairs], [h[k] for k in pairs],
                             pa.array(["web"] * len(pairs)))
    assert 0 < alone.num_rows < len(pairs)


# --- test-set matching ---------------------------------------------------------------------------------------


def test_match_test_sets_finds_planted_copies_only(photos: dict[str, np.ndarray]) -> None:
    tests = {f"bench/{name}.png": image for name, image in list(photos.items())[:5]}
    store_ids, store_hashes, expected = [], [], set()
    for k, (name, image) in enumerate(photos.items()):
        for edit in ("crop5%", "crop3-5%", "0.5x", "jpeg75"):
            store_ids.append(f"{name}:{edit}")
            store_hashes.append(_variants(EDITS[edit](image)))
            if k < 5:
                expected.add((f"{name}:{edit}", f"bench/{name}.png"))
    test_hashes = np.concatenate([phash.hash_variants(x) for x in tests.values()])
    test_names = np.repeat(list(tests), len(phash.TEST_REGIONS))
    table = match_test_sets(store_ids, np.array(store_hashes), test_hashes, test_names)
    assert table.schema == ROWS
    rows = table.to_pylist()
    assert {(r["image_id"], r["matched"]) for r in rows} == expected
    assert all(r["reason"] == "test-set" and not r["kept"] and r["distance"] <= DEFAULT_TEST_DISTANCE for r in rows)
    informative = [not i.startswith("astronaut") for i in store_ids]
    masked = match_test_sets(store_ids, np.array(store_hashes), test_hashes, test_names, informative=informative)
    assert masked.num_rows == len(expected) - 4


def test_rows_schema_matches_store_schema() -> None:
    from million_ird.schema import DUPLICATES

    assert ROWS == pa.schema([f for f in DUPLICATES if f.name not in ("fingerprint", "run_id")])


def test_excluded_images_link_their_group_but_are_never_kept() -> None:
    h = 0x0F0F_0F0F_0F0F_0F0F
    rows = [("big", "s1", h, True, 400, 400, "web"), ("mid", "s2", h ^ 0x3F, True, 300, 300, "web"),
            ("low", "s3", h ^ 0xFC0, True, 200, 200, "web"), ("solo", "s4", h ^ (2**62 - 1), True, 100, 100, "web"),
            ("solo2", "s5", h ^ (2**62 - 1) ^ 1, True, 50, 50, "web")]
    plain = _group(rows, max_distance=6)
    assert plain["big"]["kept"] and plain["low"]["matched"] == "big"
    # big (the best) is excluded: mid is kept; low is 12 bits from mid but still in the group through big
    out = _group(rows, max_distance=6, exclude=[True, False, False, False, True])
    assert set(out) == {"mid", "low"}  # no row for excluded images, nor for solo (left alone in its group)
    assert out["mid"]["kept"] and out["mid"]["group_id"] == "mid"
    assert (out["low"]["matched"], out["low"]["distance"], out["low"]["kept"]) == ("mid", 12, False)
