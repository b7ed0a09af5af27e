"""All pairs of 64-bit hashes within Hamming distance K, without a quadratic scan (`HashIndex`).

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
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

_DENSE_MAX_WIDTH = 24  # bands up to this width use dense start/count tables (2 x 2**24 int32 = 128 MiB)
_CHUNK = 1 << 21  # candidate pairs verified per numpy pass
_LOOP_MAX = 16  # partner buckets up to this size are paired member by member; larger ones are expanded
_U64 = np.uint64
_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


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


def run_starts(x: np.ndarray) -> np.ndarray:
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
        self.ustart = np.flatnonzero(run_starts(self.sorted)).astype(index)
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


def expand(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        owner, pos = expand(starts[lo:hi], counts[lo:hi])
        yield left[lo:hi][owner], pos
        lo = hi


class HashIndex:
    """Multi-index hashing of N 64-bit hashes for exact Hamming-radius queries (see the module docstring).

    `bands` overrides the plan (it must cover the bits in use and have sum(radius + 1) > max_distance);
    `queries`, the expected number of query hashes, plans the bands for `query` instead of `pairs`.
    """

    def __init__(self, hashes: Sequence[int] | np.ndarray, max_distance: int,
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
