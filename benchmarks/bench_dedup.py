"""Near-duplicate detection: pHash distances on planted copies, hashing speed, HashIndex all-pairs at scale.

Usage: python benchmarks/bench_dedup.py [--distances] [--hash] [--index N] [--k 10] [--workers 1]
(no section flag: all three, with --index 2000000). Distances use the scikit-image photos and the demo
photos (manifests/demo/photos); the index uses uniform random 64-bit hashes with ~1% planted near-duplicates
(copies of another hash with 1..K bits flipped), and compares with a brute-force scan timed on a sample.
"""

from __future__ import annotations

import argparse
import itertools
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from million_ird import phash
from million_ird.dedup import DEFAULT_MAX_DISTANCE, DEFAULT_TEST_DISTANCE
from million_ird.hash_index import HashIndex, popcount64

DEMO = Path(__file__).resolve().parents[1] / "manifests" / "demo" / "photos"
PHOTOS = ("astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass", "gravel",
          "immunohistochemistry", "moon", "page", "retina", "rocket", "text", "cell", "logo")


def photos() -> dict[str, np.ndarray]:
    """The scikit-image photos (RGBA flattened to RGB) and the demo photos not already among them."""
    import skimage.data

    images = {n: getattr(skimage.data, n)() for n in PHOTOS}
    images = {n: x[..., :3] if x.ndim == 3 else x for n, x in images.items()}
    for path in sorted(DEMO.glob("*.*")):
        if path.stem not in images:
            images[path.stem] = cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1].copy()
    return images


def jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    """A JPEG re-encode at `quality`."""
    bgr = np.ascontiguousarray(image[..., ::-1] if image.ndim == 3 else image)
    out = cv2.imdecode(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_UNCHANGED)
    return out[..., ::-1] if out.ndim == 3 else out


def scale(image: np.ndarray, f: float) -> np.ndarray:
    """A rescale by f (area when shrinking, bicubic when enlarging)."""
    return cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)


def crop(image: np.ndarray, sides: tuple[float, float, float, float]) -> np.ndarray:
    """Cut fractions (top, left, bottom, right) off the sides."""
    h, w = image.shape[:2]
    t, left, b, r = sides
    return image[round(h * t):h - round(h * b), round(w * left):w - round(w * r)]


def variants(image: np.ndarray) -> np.ndarray:
    """The stored pair: full-frame and centre-box hashes."""
    h = phash.hash_image(image)
    return np.array([h.phash, h.phash_centre], np.uint64)


def distance(a: np.ndarray, b: np.ndarray) -> int:
    """Smallest distance between any variant of a and any of b."""
    return int(popcount64(a[:, None] ^ b[None, :]).min())


def edits(seed: int = 0) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The planted edits: rescales, JPEG, symmetric crops, random 3-5% crops (alone and post-processed)."""
    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "0.5x": lambda x: scale(x, 0.5), "2x": lambda x: scale(x, 2.0), "jpeg q75": jpeg,
        "0.5x + jpeg q75": lambda x: jpeg(scale(x, 0.5)),
    }
    for c in (0.02, 0.03, 0.04, 0.05, 0.06, 0.07):
        out[f"crop {c:.0%} each side"] = lambda x, c=c: crop(x, (c, c, c, c))
    rng = np.random.default_rng(seed)
    randoms = [tuple(rng.uniform(0.03, 0.05, 4)) for _ in range(8)]
    out["8 random crops 3-5%/side"] = lambda x: [crop(x, s) for s in randoms]
    out["  ... then 0.5x + jpeg q75"] = lambda x: [jpeg(scale(crop(x, s), 0.5)) for s in randoms]
    out["  ... then 2x"] = lambda x: [scale(crop(x, s), 2.0) for s in randoms]
    out["crop 5% one corner (top+left)"] = lambda x: crop(x, (0.05, 0.05, 0, 0))
    return out


def bench_distances() -> None:
    """Print the distances of planted copies and of unrelated photos."""
    images = photos()
    structure = {n: phash.hash_image(x).structure for n, x in images.items()}
    print(f"structure (informative >= {phash.STRUCTURE_MIN:.1f}): "
          + ", ".join(f"{n} {s:.1f}" for n, s in sorted(structure.items(), key=lambda kv: kv[1])))
    yy, xx = np.mgrid[0:400, 0:600].astype(np.float32)
    flats = {"solid colour": np.full((400, 600, 3), (200, 30, 30), np.uint8), "ramp": np.uint8(xx / 599 * 255),
             "ramp + noise 3": np.uint8(np.clip(xx / 599 * 255 + np.random.default_rng(0).normal(0, 3, xx.shape), 0, 255)),
             "radial": np.uint8(np.clip(np.hypot(xx - 300, yy - 200) / 360 * 255, 0, 255)),
             "uniform noise": np.random.default_rng(1).integers(0, 256, (400, 600), dtype=np.uint8)}
    print("synthetic: " + ", ".join(f"{n} {phash.structure(x):.2f}" for n, x in flats.items()))
    usable = {n: x for n, x in images.items() if structure[n] >= phash.STRUCTURE_MIN}
    base = {n: variants(x) for n, x in usable.items()}
    print(f"\nplanted copies of {len(usable)} informative photos: max / mean distance, full+centre (4 comparisons)"
          " vs full frame only; test ladder = a store copy against the test image's TEST_REGIONS")
    for name, edit in edits().items():
        both, full, ladder = [], [], []
        for n, x in usable.items():
            copies = edit(x)
            for y in copies if isinstance(copies, list) else [copies]:
                vy = variants(y)
                both.append(distance(base[n], vy))
                full.append(phash.hamming(int(base[n][0]), int(vy[0])))
                ladder.append(distance(phash.hash_variants(x).view(np.uint64), vy))
        print(f"  {name:32s} {max(both):2d} / {statistics.mean(both):4.1f}   full only {max(full):2d} / "
              f"{statistics.mean(full):4.1f}   test ladder {max(ladder):2d} / {statistics.mean(ladder):4.1f}")
    tiles = {f"{n}[{i}{j}]": x[i * x.shape[0] // 2:(i + 1) * x.shape[0] // 2, j * x.shape[1] // 2:(j + 1) * x.shape[1] // 2]
             for n, x in usable.items() for i in range(2) for j in range(2)}
    pool = {**base, **{n: variants(x) for n, x in tiles.items() if phash.informative(x)}}
    dists = sorted((distance(pool[a], pool[b]), a, b) for a, b in itertools.combinations(pool, 2)
                   if a.split("[")[0] != b.split("[")[0])
    values = np.array([d for d, _, _ in dists])
    print(f"\nunrelated: {len(values)} pairs of {len(pool)} informative photos and quadrants (different sources): "
          f"min {values.min()}, 0.1% {np.percentile(values, 0.1):.0f}, 1% {np.percentile(values, 1):.0f}, "
          f"5% {np.percentile(values, 5):.0f}, median {np.median(values):.0f}; closest: "
          + ", ".join(f"{a}~{b} {d}" for d, a, b in dists[:4]))


def bench_hash(reps: int = 30) -> None:
    """Print the time of hash_image on 1024x1024 RGB uint8 and uint16 images."""
    import skimage.data

    rgb = cv2.resize(skimage.data.astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    for label, image in (("uint8", rgb), ("uint16", rgb.astype(np.uint16) * 257)):
        phash.hash_image(image)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            phash.hash_image(image)
            times.append(time.perf_counter() - t)
        ms = statistics.median(times) * 1000
        print(f"hash_image 1024x1024 RGB {label}: {ms:.2f} ms median ({1000 / ms:.0f} images/s per core)")


def planted_hashes(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """n uniform random hashes, ~1% replaced by copies of another hash with 1..k bits flipped."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    m = n // 100
    pos = rng.permutation(n)[:2 * m]
    src, dst = pos[:m], pos[m:]
    flips = np.zeros(m, np.uint64)
    for row, count in enumerate(rng.integers(1, k + 1, m)):
        for bit in rng.choice(64, int(count), replace=False):
            flips[row] |= np.uint64(1) << np.uint64(bit)
    h[dst] = h[src] ^ flips
    return h, {(int(min(a, b)), int(max(a, b))) for a, b in zip(src, dst, strict=True)}


def brute_force_ns_per_pair(h: np.ndarray, k: int, rows: int = 64, cols: int = 1 << 15) -> float:
    """Time per pair of a blocked numpy scan (rows x cols tiles: xor, popcount, compare), on a sample."""
    sample = h[:rows]
    t = time.perf_counter()
    for c in range(0, len(h), cols):
        np.flatnonzero(popcount64(sample[:, None] ^ h[None, c:c + cols]) <= k)
    return (time.perf_counter() - t) / (rows * len(h)) * 1e9


def bench_index(n: int, k: int, workers: int) -> None:
    """Print build and all-pairs time, peak memory and the brute-force estimate for n planted hashes."""
    h, planted = planted_hashes(n, k)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, cpu = time.perf_counter(), time.process_time()
    index = HashIndex(h, k)
    built = time.perf_counter() - wall
    i, j, d = index.pairs(workers=workers)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    bands = ", ".join(f"{b.width}b r{b.radius}" for b in index.bands)
    ns = brute_force_ns_per_pair(h, k)
    brute = ns * n * (n - 1) / 2 / 1e9
    print(f"HashIndex n={n:,} K={k} bands [{bands}] workers={workers}: build {built:.1f} s, build+pairs {wall:.1f} s "
          f"wall / {cpu:.1f} s CPU; {len(i):,} pairs, planted {len(planted):,} all found: {planted <= found}; "
          f"peak RSS {rss / 1024:.0f} MiB (+{(rss - rss0) / 1024:.0f} MiB for the index)")
    print(f"  brute force: {ns:.2f} ns/pair measured on a sample -> {n * (n - 1) / 2:.2e} pairs = {brute:.0f} s "
          f"per core ({brute / max(cpu, 1e-9):.0f}x the index's CPU time)")


def main() -> None:
    """Run the selected sections."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distances", action="store_true")
    parser.add_argument("--hash", action="store_true")
    parser.add_argument("--index", type=int, default=0, metavar="N")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    everything = not (args.distances or args.hash or args.index)
    if args.distances or everything:
        bench_distances()
    if args.hash or everything:
        bench_hash()
    if args.index or everything:
        bench_index(args.index or 2_000_000, args.k, args.workers)
    print(f"(default radius: grouping {DEFAULT_MAX_DISTANCE}, test-set matching {DEFAULT_TEST_DISTANCE})")


if __name__ == "__main__":
    main()
