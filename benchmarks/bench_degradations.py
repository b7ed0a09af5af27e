"""Speed of the degradations: ms per 512x512 image per degradation, and pre-training crops/s.

Usage: python benchmarks/bench_degradations.py [--reps 20] [--crops 2000] [--workers 2]
Target: >= 200 pre-training crops/s per core, so data never limits a GPU step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from multiprocessing import get_context

import cv2
import numpy as np

import degradations
from degradations.recipes import PretrainConfig, pretrain

CASES = {
    "gaussian_noise": {"sigma": 25}, "impulse_noise": {"p": 0.1}, "jpeg": {"quality": 50},
    "mask": {"ratio": 0.3}, "rain": {"preset": "rain100l"}, "rain(heavy)": {"preset": "heavy"},
    "haze": {"A": 0.9, "beta": 0.12},
    "compose": {"steps": [{"name": "haze", "params": {}}, {"name": "jpeg", "params": {"quality": 60}}]},
}


def test_image() -> np.ndarray:
    """A 512x512 natural photograph when scikit-image is present, else a textured synthetic image."""
    try:
        import skimage.data

        return skimage.data.astronaut()
    except ImportError:
        return np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)


def time_degradations(image: np.ndarray, reps: int) -> list[tuple[str, float, float]]:
    """(name, median ms, min ms) per case on one image."""
    rows = []
    for label, params in CASES.items():
        fn = degradations.get(label.split("(")[0])
        times = []
        for i in range(reps):
            rng = degradations.sample_rng(0, i, label)
            t0 = time.perf_counter()
            fn(image, rng, **params)
            times.append((time.perf_counter() - t0) * 1000)
        rows.append((label, statistics.median(times), min(times)))
    return rows


def _crops(args: tuple[int, int]) -> int:
    worker, n = args
    cv2.setNumThreads(1)
    image, cfg = test_image(), PretrainConfig()
    for i in range(n):
        pretrain(image, degradations.sample_rng(0, f"{worker}-{i}", "pretrain"), cfg)
    return n


def crops_per_second(n: int, workers: int) -> float:
    """Pre-training crops/s with `workers` processes (1 = in this process)."""
    if workers <= 1:
        t0 = time.perf_counter()
        _crops((0, n))
        return n / (time.perf_counter() - t0)
    with get_context("fork").Pool(workers) as pool:
        pool.map(_crops, [(w, 5) for w in range(workers)])  # warm-up: start-up cost is not throughput
        t0 = time.perf_counter()
        done = sum(pool.map(_crops, [(w, n // workers) for w in range(workers)]))
        return done / (time.perf_counter() - t0)


def main() -> None:
    """Parse flags, run the timings, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20, help="timed repetitions per degradation (median reported)")
    ap.add_argument("--crops", type=int, default=2000, help="pre-training crops per throughput measurement")
    ap.add_argument("--workers", type=int, default=2, help="worker processes for the parallel crops/s figure")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    image = test_image()
    print(f"cores: {os.cpu_count()}, OpenCV {cv2.__version__}, numpy {np.__version__}, image {image.shape}")
    print(f"{'degradation':16s} {'median ms':>10s} {'min ms':>8s}   (512x512, 1 thread)")
    for label, med, low in time_degradations(image, args.reps):
        print(f"{label:16s} {med:10.2f} {low:8.2f}")
    one = crops_per_second(args.crops, 1)
    many = crops_per_second(args.crops, args.workers)
    print(f"pretrain crops/s, 1 process : {one:8.0f}")
    print(f"pretrain crops/s, {args.workers} workers : {many:8.0f}  ({many / args.workers:.0f} per worker; "
          f"target >= 200 per core: {'met' if many / args.workers >= 200 else 'NOT met'})")


if __name__ == "__main__":
    main()
