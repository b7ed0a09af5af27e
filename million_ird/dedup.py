"""Near-duplicate grouping and test-set decontamination over 64-bit perceptual hashes (store-independent).

The pair search is `million_ird.hash_index.HashIndex` (banded, never pairwise).

Grouping (`group_duplicates`): images are nodes; edges join images with the same sha256 (exact copies)
and images whose hashes (any variant of one against any variant of the other: full frame and centre box,
see `million_ird.phash`) are within `max_distance`, among informative images only. Groups are the
connected components, so chaining happens: A~B and B~C put A, B, C in one group even when A and C are far
apart. That is accepted (a chain of near copies is one family of edits), and `distance` reports each
member's distance to the kept image, which may then exceed `max_distance`.

Default radii, from measured distances (63-bit hashes, so distances are always even; `python
benchmarks/bench_dedup.py --distances`, 17 informative scikit-image/demo photos): 0.5x and 2x rescales and
JPEG q75 re-encodes <= 4; symmetric crops of 2-5% per side <= 6 (full frame only: up to 20); 8 random
crops of 3-5% per side per photo, alone or followed by 0.5x + JPEG q75 or by 2x: <= 8 (mean 2.3); crops of
6-7% per side 12-14 (the test-side ladder of boxes brings those to <= 2); a 5% corner crop (a shift, not a
zoom) up to 18, which no centred box repairs. Unrelated pairs (3,084 pairs of the photos and their
quadrants, different sources): minimum 16, 0.1% quantile 18, 1% quantile 20, median 30.

The tail matters more than that minimum at scale. Two unrelated hashes drawn at random among the 63-bit
words with 31 ones are within 8 bits with probability 1.3e-9, within 10 with 3.9e-8 (uniform 64-bit: 2.8e-10
and 1.0e-8; the benchmark finds the predicted ~20,000 chance pairs among 2M uniform hashes at K = 10).
Among 1M images (5e11 pairs, 4 variant comparisons each) that is ~2,500 chance pairs at 8 and ~77,000 at
10, and union-find chains them into groups, so grouping uses `DEFAULT_MAX_DISTANCE` = 8: it keeps every
measured planted copy up to 3-5% crops and loses ~0.3% of a million images to chance at worst. Test-set
matching compares 1M x 2 store hashes with a few thousand test hashes (x 8 boxes): ~600 chance matches at
10, each costing one dropped training image, against a leaked test image for a miss, so it uses
`DEFAULT_TEST_DISTANCE` = 10 (2 bits of margin over the worst planted crop). Real photographs are more
alike than random words, so these counts are lower bounds.

Pixel check (`same_pixels`). A hash match is trusted alone only between two informative images. A test
image whose structure is below `phash.STRUCTURE_MIN` but at least `TEXTURE_MIN` (a fine texture: brick 1.6,
gravel with its lighting flattened 0.85; the thumbnail is near-flat, but its bits are set by the image,
and 0.5x/2x/JPEG q75/3%-crop copies stay within 8 bits) is still hashed, and so is every store image, flat
or not; a hash match with a non-informative side counts only when the pixels agree too: some test box and
some store box (full frame, centre box) have blurred 64x64 luma thumbnails with a normalised
cross-correlation >= `PIXEL_MIN_NCC` over shifts of up to 6%, means within `PIXEL_MAX_MEAN` grey levels and
contrasts (std) within a factor `PIXEL_MAX_CONTRAST`. Measured on 17 scikit-image/demo photos and textures
(brick, gravel, grass, uniform noise): copies (0.5x, 2x, JPEG q75, crops of 2-5% per side, crop + 0.5x +
q75, crop + 0.25x + q50) correlate at >= 0.94 (uniform noise: 0.88 after an off-centre crop); among 2,978
ordered pairs of unrelated images, their quadrants and ramps, those that pass the mean/contrast test
correlate at <= 0.69, except two horizontal ramps of nearly the same range (1.0: one reason near-uniform
test images are never hashed). Test images below `TEXTURE_MIN` (solid colours, linear, radial and noisy
ramps measure <= 0.3) have hashes set by rounding noise: they match byte copies only, and the run reports
how many there are. Pixel checks decode only the store images of the hash matches that need them (few per
test file at 2M images: the search itself stays the banded index), and each such test file once.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import pyarrow as pa

from million_ird import phash
from million_ird.hash_index import HashIndex, as_uint64, expand, popcount64, run_starts

DEFAULT_MAX_DISTANCE = 8  # grouping (see the module docstring)
DEFAULT_TEST_DISTANCE = 10  # test-set matching
TEXTURE_MIN = 0.5  # a test image below this structure is matched by its bytes only (flat images: <= 0.3)
PIXEL_SIDE = 64  # side of the pixel-check thumbnails
PIXEL_BLUR = 1.0  # their Gaussian blur (thumbnail pixels): tolerance to sub-pixel misalignment
PIXEL_SHIFT = 4  # shifts searched each way (thumbnail pixels, ~6%: an off-centre crop)
PIXEL_MIN_NCC = 0.9  # normalised cross-correlation of a confirmed pair
PIXEL_MAX_MEAN = 10.0  # largest difference of mean luma (grey levels)
PIXEL_MAX_CONTRAST = 1.25  # largest ratio of the luma standard deviations
PIXEL_MIN_STD = 1.0  # a thumbnail flatter than this (grey levels) never confirms a match

ROWS = pa.schema(  # million_ird.schema.DUPLICATES without the run columns (fingerprint, run_id)
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("group_id", pa.string()),
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("matched", pa.string()),
        pa.field("distance", pa.int32()),
    ]
)


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The component of each of n nodes joined by edges (a[k], b[k]), labelled by its smallest node."""
    label = np.arange(n, dtype=np.int64)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    while len(a):
        la, lb = label[a], label[b]
        diff = la != lb
        if not diff.any():
            break
        a, b, la, lb = a[diff], b[diff], la[diff], lb[diff]
        np.minimum.at(label, np.maximum(la, lb), np.minimum(la, lb))  # hook the larger root under the smaller
        while True:  # pointer jumping until every node points at its root
            nxt = label[label]
            if np.array_equal(nxt, label):
                break
            label = nxt
    return label


def _array(values: Sequence | np.ndarray | pa.Array | pa.ChunkedArray, fill: object = None) -> np.ndarray:
    """A numpy array from a sequence or an Arrow array; nulls become `fill` (an object array if fill is None)."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        if fill is None:
            return np.array(values.to_pylist(), dtype=object)
        return values.fill_null(fill).to_numpy(zero_copy_only=False)
    arr = np.asarray(values, dtype=object if fill is None else None)
    if fill is not None and arr.dtype == object:
        arr = np.array([fill if v is None else v for v in arr.ravel()]).reshape(arr.shape)
    return arr


def _variants(phash: Sequence | np.ndarray, n: int) -> np.ndarray:
    """The (n, V) uint64 hashes of n images: a (n,) array is one variant, a (n, V) array V variants."""
    if isinstance(phash, pa.Array | pa.ChunkedArray):
        phash = _array(phash, 0)
    hashes = as_uint64(np.asarray(phash))
    if hashes.ndim == 1:
        hashes = hashes[:, None]
    if hashes.ndim != 2 or hashes.shape[0] != n:
        raise ValueError(f"phash must have shape ({n},) or ({n}, V), got {hashes.shape}")
    return hashes


def _hash_nodes(hashes: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct hash values, their owner images, the value index of each owner) over the usable rows."""
    rows = np.flatnonzero(usable)
    flat = hashes[rows].ravel()
    values, inverse = np.unique(flat, return_inverse=True)
    return values, np.repeat(rows, hashes.shape[1]), inverse.ravel()


def _min_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest Hamming distance between any variant of a[k] and any variant of b[k] ((n, V) arrays)."""
    return popcount64(a[:, :, None] ^ b[:, None, :]).reshape(len(a), -1).min(axis=1).astype(np.int64)


def group_duplicates(ids: Sequence[str], sha256: Sequence[str | None], phash: np.ndarray,
                     informative: Sequence[bool], width: Sequence[int], height: Sequence[int],
                     source: Sequence[str | None], *, max_distance: int = DEFAULT_MAX_DISTANCE,
                     source_priority: Sequence[str] = (), exclude: Sequence[bool] | None = None,
                     workers: int = 1) -> pa.Table:
    """Group exact (sha256) and near (pHash within max_distance) copies; one row per grouped image (ROWS).

    `exclude` marks images that must not be kept (test-set matches): they still link the other members of
    their group, but get no row, and a group keeps the best of its other members (no row either when fewer
    than two of those remain). `workers`: threads of the pair search (`HashIndex.pairs`).
    """
    ids_ = _array(ids)
    n = len(ids_)
    sha = _array(sha256)
    hashes, usable = _variants(phash, n), _array(informative, False).astype(bool)
    present = np.flatnonzero(sha != None)  # noqa: E711 (element-wise)
    sha_values, sha_code = np.unique(sha[present].astype(str), return_inverse=True)
    values, owner, value_of = _hash_nodes(hashes, usable)
    base = n + len(sha_values)
    i, j, _ = HashIndex(values, max_distance).pairs(workers)
    a = np.concatenate([present, owner, base + i])
    b = np.concatenate([n + sha_code.ravel(), base + value_of, base + j])
    label = connected_components(base + len(values), a, b)[:n]
    pixels = _array(width, 0).astype(np.int64) * _array(height, 0).astype(np.int64)
    eligible = np.ones(n, bool) if exclude is None else ~_array(exclude, False).astype(bool)
    return _keep(ids_, sha, hashes, usable, pixels, _array(source), label, tuple(source_priority), eligible)


def _keep(ids: np.ndarray, sha: np.ndarray, hashes: np.ndarray, usable: np.ndarray, pixels: np.ndarray,
          source: np.ndarray, label: np.ndarray, priority: tuple[str, ...], eligible: np.ndarray) -> pa.Table:
    """Rows of the eligible members of groups with >= 2 of them: the kept one (most pixels, then source
    priority, then id) first."""
    size = np.bincount(label[eligible], minlength=len(label))
    member = np.flatnonzero(eligible & (size[label] >= 2))
    rank = {name: k for k, name in enumerate(priority)}
    prio = np.array([rank.get(s, len(rank)) for s in source[member]], np.int64)
    id_rank = np.argsort(np.argsort(ids[member].astype(str), kind="stable"), kind="stable")
    member = member[np.lexsort((id_rank, prio, -pixels[member], label[member]))]
    lab = label[member]
    first = run_starts(lab)
    kept = member[first][np.cumsum(first) - 1]
    is_kept = member == kept
    exact = (sha[member] != None) & (sha[member] == sha[kept])  # noqa: E711
    near_group = np.bincount(np.cumsum(first) - 1, weights=~exact & ~is_kept)[np.cumsum(first) - 1] > 0
    near = usable[member] & usable[kept] & ~exact
    dist = np.where(exact, 0, -1)
    if near.any():
        dist[near] = _min_distance(hashes[member[near]], hashes[kept[near]])
    reason = np.where(is_kept, np.where(near_group, "near", "exact"), np.where(exact, "exact", "near"))
    return pa.table({
        "image_id": pa.array(ids[member].astype(str), pa.string()),
        "group_id": pa.array(ids[kept].astype(str), pa.string()),
        "kept": pa.array(is_kept, pa.bool_()),
        "reason": pa.array(reason.astype(str), pa.string()),
        "matched": pa.array(np.where(is_kept, None, ids[kept]).tolist(), pa.string()),
        "distance": pa.array(dist, pa.int32(), mask=is_kept | (dist < 0)),
    }, schema=ROWS)


def match_test_sets(ids: Sequence[str], phash_variants: np.ndarray, test_hashes: Sequence[int] | np.ndarray,
                    test_names: Sequence[str], *, max_distance: int = DEFAULT_TEST_DISTANCE,
                    informative: Sequence[bool] | None = None) -> pa.Table:
    """Store images whose hashes are within max_distance of a test image: one row per (image, test file)."""
    ids_ = _array(ids)
    hashes = _variants(phash_variants, len(ids_))
    usable = np.ones(len(ids_), bool) if informative is None else _array(informative, False).astype(bool)
    values, owner, value_of = _hash_nodes(hashes, usable)
    test = as_uint64(np.asarray(test_hashes)).ravel()
    names = _array(test_names).astype(str)
    if len(names) != len(test):
        raise ValueError(f"{len(test)} test hashes but {len(names)} test names")
    qi, row, dist = HashIndex(values, max_distance, queries=len(test)).query(test)
    by_value = np.argsort(value_of, kind="stable")  # owners of each distinct value, contiguous
    starts = np.searchsorted(value_of[by_value], row)
    counts = np.searchsorted(value_of[by_value], row, side="right") - starts
    hit, pos = expand(starts, counts)
    image, name_code = owner[by_value[pos]], np.unique(names, return_inverse=True)[1].ravel()[qi[hit]]
    order = np.lexsort((dist[hit], name_code, image))
    image, name_code, d = image[order], name_code[order], dist[hit][order]
    first = run_starts(image) | run_starts(name_code)
    image, d = image[first], d[first]
    matched = np.unique(names)[name_code[first]]
    return pa.table({
        "image_id": pa.array(ids_[image].astype(str), pa.string()),
        "group_id": pa.nulls(len(image), pa.string()),
        "kept": pa.array(np.zeros(len(image), bool), pa.bool_()),
        "reason": pa.array(["test-set"] * len(image), pa.string()),
        "matched": pa.array(matched.astype(str), pa.string()),
        "distance": pa.array(d, pa.int32()),
    }, schema=ROWS)


def pixel_thumbnails(image: np.ndarray, regions: Sequence[float]) -> np.ndarray:
    """(len(regions), PIXEL_SIDE, PIXEL_SIDE) float32 blurred luma thumbnails of the image's central boxes."""
    gray = phash.luma(image)
    out = np.empty((len(regions), PIXEL_SIDE, PIXEL_SIDE), np.float32)
    for k, region in enumerate(regions):
        box = np.ascontiguousarray(phash.centre_box(gray, region))
        thumb = cv2.resize(box, (PIXEL_SIDE, PIXEL_SIDE), interpolation=cv2.INTER_AREA)
        out[k] = cv2.GaussianBlur(thumb, (0, 0), PIXEL_BLUR)
    return out


def same_pixels(test: np.ndarray, store: np.ndarray) -> bool:
    """Whether some test thumbnail and some store thumbnail (`pixel_thumbnails`) show the same picture."""
    m = PIXEL_SHIFT
    for s in store:
        template = np.ascontiguousarray(s[m:-m, m:-m])
        if template.std() < PIXEL_MIN_STD:
            continue
        for t in test:
            if t.std() < PIXEL_MIN_STD or abs(float(t.mean()) - float(s.mean())) > PIXEL_MAX_MEAN:
                continue
            if max(t.std(), s.std()) > PIXEL_MAX_CONTRAST * min(t.std(), s.std()):
                continue
            if float(np.nanmax(cv2.matchTemplate(t, template, cv2.TM_CCOEFF_NORMED))) >= PIXEL_MIN_NCC:
                return True
    return False
