"""Near-duplicate grouping and test-set decontamination over 64-bit perceptual hashes (store-independent).

`HashIndex` finds every pair of hashes within Hamming distance K without a quadratic scan, by the
pigeonhole principle: split the 64 bits into m bands with radii r_b such that sum(r_b + 1) = K + 1. If two
hashes differed by more than r_b in every band they would differ by at least K + 1 bits, so every pair
within K is within r_b of each other in some band b. The plain scheme is m = K + 1 bands with r_b = 0 (the
pair agrees exactly on one band). It is the cheapest for small sets, but at K = 8-10 its bands are 6-7 bits
wide: at 2M hashes a bucket holds ~30,000 of them and the candidates are a fifth of all pairs. Wider bands
searched within a small radius (2M hashes, K = 10: 3 bands of 22/21/21 bits, radii 3/3/2) cut the
candidates ~400x, so `plan_bands` picks m from a cost model (probes + candidates). Each band is sorted once
(np.argsort); the partners of a key are found by XOR-ing it with every mask of at most r_b bits and looking
the result up (a dense count table up to 2**24 keys, else np.searchsorted). Candidates are verified with a
popcount (np.bitwise_count, or a byte table on numpy < 2). A verified pair is reported only by the first
band in which it is within radius, so no pair comes out twice. Results are exact: the same pairs as a
brute-force scan (tested).

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
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

DEFAULT_MAX_DISTANCE = 8  # grouping (see the module docstring)
DEFAULT_TEST_DISTANCE = 10  # test-set matching
_DENSE_MAX_WIDTH = 24  # bands up to this width use dense start/count tables (2 x 2**24 int32 = 128 MiB)
_CHUNK = 1 << 21  # candidate pairs verified per numpy pass
_LOOP_MAX = 16  # partner buckets up to this size are paired member by member; larger ones are expanded
_U64 = np.uint64
_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)

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


def as_uint64(hashes: Sequence[int] | np.ndarray) -> np.ndarray:
    """The uint64 bit patterns of hashes given as int64 (signed storage), uint64 or Python ints."""
    arr = np.asarray(hashes)
    if arr.dtype == np.uint64:
        return arr
    if arr.dtype == object:
        return np.array([int(v) & 0xFFFF_FFFF_FFFF_FFFF for v in arr.ravel()], _U64).reshape(arr.shape)
    if arr.size == 0:
        return arr.astype(_U64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"hashes must be integers, got {arr.dtype}")
    return arr.astype(np.int64).view(_U64)


def popcount64(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint64 (uint8 array)."""
    x = np.ascontiguousarray(x, _U64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _BYTE_POPCOUNT[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1, dtype=np.uint8)


@dataclass(frozen=True)
class Band:
    """Bits [shift, shift + width) of a hash, searched within `radius` bits."""

    shift: int
    width: int
    radius: int

    def keys(self, hashes: np.ndarray) -> np.ndarray:
        """The band's value for each uint64 hash."""
        keys = (hashes >> _U64(self.shift)) & _U64((1 << self.width) - 1)
        return keys.astype(np.uint32) if self.width <= 32 else keys

    def flips(self) -> np.ndarray:
        """Every XOR mask of at most `radius` bits within the band, 0 first."""
        masks = [sum(1 << b for b in bits) for r in range(self.radius + 1)
                 for bits in itertools.combinations(range(self.width), r)]
        return np.array(masks, np.uint32 if self.width <= 32 else _U64)


def _run_starts(x: np.ndarray) -> np.ndarray:
    """True at the first element of each run of equal values."""
    return np.r_[np.ones(min(len(x), 1), bool), x[1:] != x[:-1]]


def _volume(width: int, radius: int) -> int:
    return sum(math.comb(width, r) for r in range(radius + 1))


def _bands(m: int, max_distance: int, bits: int) -> tuple[Band, ...]:
    """m bands over `bits` bits, wider bands first, radii summing (plus one each) to max_distance + 1."""
    widths = [bits // m + (1 if b < bits % m else 0) for b in range(m)]
    radii = [(max_distance + 1) // m - 1 + (1 if b < (max_distance + 1) % m else 0) for b in range(m)]
    shifts = np.cumsum([0, *widths[:-1]])
    return tuple(Band(int(s), w, r) for s, w, r in zip(shifts, widths, radii, strict=True))


def plan_bands(n: int, max_distance: int, bits: int = 64, queries: int | None = None) -> tuple[Band, ...]:
    """The band split with the lowest estimated cost for all pairs of n hashes (or `queries` lookups)."""
    if not 0 <= max_distance < bits:
        raise ValueError(f"max_distance must be in [0, {bits}), got {max_distance}")
    best, best_cost = None, math.inf
    for m in range(1, min(max_distance + 1, bits) + 1):
        bands = _bands(m, max_distance, bits)
        volumes = [_volume(band.width, band.radius) for band in bands]
        if max(volumes) > 5_000_000:
            continue
        cost = 0.0
        for band, flips in zip(bands, volumes, strict=True):
            lookup = 1.0 if band.width <= _DENSE_MAX_WIDTH else 4.0
            if queries is None:  # per flip: Python overhead, probes over the present keys, candidate pairs
                cost += flips * (2000 + lookup * min(n, 2.0 ** band.width) + 3.0 * n * n / 2.0 ** (band.width + 1))
            else:
                cost += flips * (2000 + queries * (4.0 + 3.0 * n / 2.0 ** band.width))
        if cost < best_cost:
            best, best_cost = bands, cost
    assert best is not None
    return best


class _Table:
    """One band of an index: hashes sorted by band key, with the start and size of each distinct key."""

    def __init__(self, band: Band, hashes: np.ndarray) -> None:
        keys = band.keys(hashes)
        index = np.int32 if len(keys) < 2**31 else np.int64
        self.order = np.argsort(keys, kind="stable").astype(index)
        self.sorted = keys[self.order]
        self.ustart = np.flatnonzero(_run_starts(self.sorted)).astype(index)
        self.ucount = np.diff(np.r_[self.ustart, len(keys)]).astype(index)
        self.ukeys = self.sorted[self.ustart]
        self.hashes = hashes[self.order]  # the hashes in band order: candidates are read sequentially
        self.dense: tuple[np.ndarray, np.ndarray] | None = None
        self.present: np.ndarray | None = None  # uint8 per key: a cache-friendly first test
        if band.width <= _DENSE_MAX_WIDTH:
            start, count = np.zeros(1 << band.width, index), np.zeros(1 << band.width, index)
            start[self.ukeys], count[self.ukeys] = self.ustart, self.ucount
            self.dense = (start, count)
            self.present = (count > 0).view(np.uint8)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(start, count) in sorted order of the hashes whose band key equals each of `keys`."""
        if self.dense is not None:
            return self.dense[0][keys], self.dense[1][keys]
        if len(self.ukeys) == 0:
            return np.zeros(len(keys), np.int64), np.zeros(len(keys), np.int64)
        i = np.minimum(np.searchsorted(self.ukeys, keys), len(self.ukeys) - 1)
        hit = self.ukeys[i] == keys
        return np.where(hit, self.ustart[i], 0), np.where(hit, self.ucount[i], 0)

    def hits(self, keys: np.ndarray) -> np.ndarray:
        """Indices of the `keys` that are present in the band."""
        if self.present is not None:
            return np.flatnonzero(self.present[keys])
        return np.flatnonzero(self.lookup(keys)[1])


def _expand(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, position): every position in [starts[k], starts[k] + counts[k]) with its k."""
    counts = counts.astype(np.int64)
    owner = np.repeat(np.arange(len(counts)), counts)
    offsets = np.cumsum(counts) - counts
    return owner, np.arange(len(owner), dtype=np.int64) - offsets[owner] + starts.astype(np.int64)[owner]


def _range_pairs(left: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(left item, right position) pairs for ranges [starts, starts + counts), at most ~_CHUNK at a time."""
    keep = counts > 0
    left, starts, counts = left[keep], starts[keep], counts[keep]
    cum = np.cumsum(counts, dtype=np.int64)
    lo = 0
    while lo < len(counts):
        base = cum[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(cum, base + _CHUNK, side="right")))
        owner, pos = _expand(starts[lo:hi], counts[lo:hi])
        yield left[lo:hi][owner], pos
        lo = hi


class HashIndex:
    """Multi-index hashing of N 64-bit hashes for exact Hamming-radius queries (see the module docstring).

    `bands` overrides the plan (it must cover the bits in use and have sum(radius + 1) > max_distance);
    `queries`, the expected number of query hashes, plans the bands for `query` instead of `pairs`.
    """

    def __init__(self, hashes: Sequence[int] | np.ndarray, max_distance: int = DEFAULT_MAX_DISTANCE,
                 bands: tuple[Band, ...] | None = None, queries: int | None = None) -> None:
        self.hashes = np.ascontiguousarray(as_uint64(hashes).ravel())
        self.max_distance = max_distance
        if not 0 <= max_distance < 64:
            raise ValueError(f"max_distance must be in [0, 64), got {max_distance}")
        # bands cover only the bits some hash sets (bit 63 of a pHash is always 0); still exact for queries
        top = int(self.hashes.max()).bit_length() if len(self.hashes) else 0
        self.bands = bands or plan_bands(len(self.hashes), max_distance, max(top, max_distance + 1), queries)
        covered = sorted((band.shift, band.width) for band in self.bands)
        if (sum(band.radius + 1 for band in self.bands) <= max_distance or covered[0][0] != 0
                or any(s + w != s2 for (s, w), (s2, _) in itertools.pairwise(covered))
                or sum(w for _, w in covered) < top):
            raise ValueError(f"bands {self.bands} cannot find every pair within {max_distance} bits")
        self._tables = [_Table(band, self.hashes) for band in self.bands]

    def __len__(self) -> int:
        return len(self.hashes)

    def _first_band(self, b: int, xor: np.ndarray) -> np.ndarray:
        """True where no band before b is within its radius (so band b is the one that reports the pair)."""
        ok = np.ones(len(xor), bool)
        for band in self.bands[:b]:
            ok &= popcount64(band.keys(xor).astype(_U64)) > band.radius
        return ok

    def _check(self, b: int, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(indices, distances) of the candidate pairs within max_distance that band b reports."""
        xor = left ^ right
        dist = popcount64(xor)
        keep = np.flatnonzero(dist <= self.max_distance)
        if len(keep):
            keep = keep[self._first_band(b, xor[keep])]
        return keep, dist[keep]

    def _emit(self, b: int, lp: np.ndarray, rp: np.ndarray, out: list[tuple[np.ndarray, ...]]) -> None:
        """Verify candidate pairs given as band-sorted positions; append the (i, j, d) found."""
        table = self._tables[b]
        keep, dist = self._check(b, table.hashes[lp], table.hashes[rp])
        if len(keep):
            out.append((table.order[lp[keep]], table.order[rp[keep]], dist))

    def _ranges(self, b: int, left: np.ndarray, start: np.ndarray, count: np.ndarray,
                out: list[tuple[np.ndarray, ...]]) -> None:
        """Verify each band-sorted position left[k] against positions [start[k], start[k] + count[k])."""
        big = count > _LOOP_MAX
        if big.any():  # large buckets (skewed data): explicit expansion, chunked
            for lp, rp in _range_pairs(left[big], start[big], count[big]):
                self._emit(b, lp, rp, out)
            keep = np.flatnonzero(~big)
            left, start, count = left[keep], start[keep], count[keep]
        c = 0
        while len(left):  # the c-th member of every partner range at once
            self._emit(b, left, start + c, out)
            c += 1
            more = np.flatnonzero(count > c)
            left, start, count = left[more], start[more], count[more]

    def _jobs(self) -> list[tuple[int, int, np.ndarray]]:
        """(band, top bit, flips) work items: flips grouped by their highest bit (-1: flip 0), <= 64 a job."""
        jobs = []
        for b, band in enumerate(self.bands):
            flips = band.flips()
            tops = np.array([int(f).bit_length() - 1 for f in flips], np.int64)
            for top in np.unique(tops):
                group = flips[tops == top]
                jobs += [(b, int(top), group[k:k + 64]) for k in range(0, len(group), 64)]
        return jobs

    def _run(self, job: tuple[int, int, np.ndarray]) -> list[tuple[np.ndarray, ...]]:
        """The pairs of one work item: flip 0 pairs a bucket with itself, a flip f != 0 with bucket key ^ f."""
        b, top, flips = job
        table, out = self._tables[b], []
        if top < 0:  # each member against the later members of its own bucket
            pos = np.arange(len(table.sorted), dtype=np.int64)
            ends = np.repeat((table.ustart + table.ucount).astype(np.int64), table.ucount)
            more = np.flatnonzero(ends - pos > 1)
            self._ranges(b, more, more + 1, ends[more] - more - 1, out)
            return out
        # only keys with the top bit clear: their partner is the larger key, so each pair is seen once
        pos = np.flatnonzero(((table.sorted >> table.sorted.dtype.type(top)) & 1) == 0)
        keys = table.sorted[pos]
        for flip in flips:
            partner = keys ^ flip
            hit = table.hits(partner)
            start, count = table.lookup(partner[hit])
            self._ranges(b, pos[hit], start, count, out)
        return out

    def pairs(self, workers: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (i, j, distance) with i < j and distance <= max_distance, sorted by (i, j); `workers` threads."""
        jobs = self._jobs()
        if workers > 1:  # numpy releases the GIL in the gathers and ufuncs that dominate
            with ThreadPoolExecutor(workers) as pool:
                results = list(pool.map(self._run, jobs))
        else:
            results = [self._run(job) for job in jobs]
        out = [part for result in results for part in result]
        if not out:
            return (np.zeros(0, np.int64),) * 3
        i, j, d = (np.concatenate(parts).astype(np.int64) for parts in zip(*out, strict=True))
        i, j = np.minimum(i, j), np.maximum(i, j)
        order = np.lexsort((j, i))
        return i[order], j[order], d[order]

    def query(self, others: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All (query index, index row, distance) with distance <= max_distance, sorted by both indices."""
        q = np.ascontiguousarray(as_uint64(others).ravel())
        out: list[tuple[np.ndarray, ...]] = []
        for b, (band, table) in enumerate(zip(self.bands, self._tables, strict=True)):
            qkeys = band.keys(q)
            flips = band.flips()
            step = max(1, _CHUNK // max(len(q), 1))
            for f0 in range(0, len(flips), step):
                probe = (qkeys[None, :] ^ flips[f0:f0 + step, None]).ravel()
                qi = np.tile(np.arange(len(q), dtype=np.int64), len(flips[f0:f0 + step]))
                start, count = table.lookup(probe)
                for lq, rp in _range_pairs(qi, start, count):
                    keep, dist = self._check(b, q[lq], table.hashes[rp])
                    out.append((lq[keep], table.order[rp[keep]], dist))
        if not out:
            return (np.zeros(0, np.int64),) * 3
        qi, rows, d = (np.concatenate(parts).astype(np.int64) for parts in zip(*out, strict=True))
        order = np.lexsort((rows, qi))
        return qi[order], rows[order], d[order]


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
    first = _run_starts(lab)
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
    hit, pos = _expand(starts, counts)
    image, name_code = owner[by_value[pos]], np.unique(names, return_inverse=True)[1].ravel()[qi[hit]]
    order = np.lexsort((dist[hit], name_code, image))
    image, name_code, d = image[order], name_code[order], dist[hit][order]
    first = _run_starts(image) | _run_starts(name_code)
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
