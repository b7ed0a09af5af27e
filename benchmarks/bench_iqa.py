"""CPU time per image of NIQE and BRISQUE (single thread) at 512², 1024², 2048²; pyiqa side by side if installed.

Usage: python -m benchmarks.bench_iqa [--sizes 512,1024,2048] [--repeats 5] [--distribution]

Single-thread setup: OMP/MKL/OPENBLAS threads = 1 and cv2.setNumThreads(1), set before numpy loads.
Timings are process CPU time (time.process_time), best of --repeats. "both (shared gray)" is what the
score stage does: one rgb2gray, then both metrics. --distribution prints the score table behind
the filter's default thresholds (scikit-image photos, clean and degraded).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from million_ird.iqa import brisque, niqe, nss  # noqa: E402

cv2.setNumThreads(1)


def test_image(size: int, seed: int = 0) -> np.ndarray:
    """A natural photo (scikit-image astronaut) resized to size², with mild noise so it is not too smooth."""
    import skimage.data

    img = cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_CUBIC)
    noise = np.random.default_rng(seed).normal(0, 2.0, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def cpu_ms(fn: Callable[[], object], repeats: int) -> float:
    """Best-of-`repeats` CPU milliseconds of fn() after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best * 1000


def pyiqa_side_by_side(img: np.ndarray, repeats: int) -> dict[str, tuple[float, float]] | None:
    """(ms, score) per metric from pyiqa on the same image, or None when pyiqa is not installed."""
    try:
        import pyiqa
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()[None] / 255.0
    out = {}
    for name in ("niqe", "brisque"):
        metric = pyiqa.create_metric(name, device="cpu")
        out[name] = (cpu_ms(lambda m=metric: m(x), repeats), float(metric(x).item()))
    return out


def bench(sizes: list[int], repeats: int) -> None:
    """Print the timing table."""
    p, m = niqe.load_niqe_params(), brisque.load_brisque_model()
    print(f"{'size':>6} {'niqe ms':>9} {'brisque ms':>11} {'both ms':>9} {'both (shared gray) ms':>22} "
          f"{'niqe':>8} {'brisque':>8}")
    for size in sizes:
        img = test_image(size)
        t_n = cpu_ms(lambda img=img: niqe.niqe(img, p), repeats)
        t_b = cpu_ms(lambda img=img: brisque.brisque(img, m), repeats)

        def both(img: np.ndarray = img) -> tuple[float, float]:
            gray = nss.to_gray(img)
            return niqe.niqe(gray, p), brisque.brisque(gray, m)

        t_both = cpu_ms(both, repeats)
        s_n, s_b = both()
        print(f"{size:>5}² {t_n:>9.1f} {t_b:>11.1f} {t_n + t_b:>9.1f} {t_both:>22.1f} {s_n:>8.3f} {s_b:>8.3f}")
        ref = pyiqa_side_by_side(img, repeats)
        if ref is not None:
            for name, ours_ms, ours in (("niqe", t_n, s_n), ("brisque", t_b, s_b)):
                ms, score = ref[name]
                print(f"       pyiqa {name}: {ms:.1f} ms (ratio pyiqa/ours {ms / ours_ms:.1f}x), "
                      f"score {score:.4f}, |diff| {abs(score - ours):.4f}")
    if pyiqa_side_by_side(test_image(64), 1) is None:
        print("pyiqa not installed: no side-by-side (pip install 'million-ird[pyiqa]')")


def distribution() -> None:
    """Scores of scikit-image photos, clean and degraded (the data behind the filter defaults)."""
    import skimage.data

    rng = np.random.default_rng(0)
    print(f"{'image':22s} {'variant':9s} {'niqe':>7} {'brisque':>8}")
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "immunohistochemistry", "cat"):
        im = getattr(skimage.data, name)()
        variants = {
            "clean": im,
            "noise10": np.clip(im + rng.normal(0, 10, im.shape), 0, 255).astype(np.uint8),
            "noise25": np.clip(im + rng.normal(0, 25, im.shape), 0, 255).astype(np.uint8),
            "blur2": cv2.GaussianBlur(im, (0, 0), 2),
            "jpeg10": cv2.imdecode(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, 10])[1], cv2.IMREAD_UNCHANGED),
        }
        for variant, v in variants.items():
            print(f"{name:22s} {variant:9s} {niqe.niqe(v):7.2f} {brisque.brisque(v):8.2f}")


def main() -> None:
    """Parse flags and run."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="512,1024,2048", help="Comma list of square image sizes in pixels.")
    ap.add_argument("--repeats", type=int, default=5, help="Timed repetitions per measurement (best is kept).")
    ap.add_argument("--distribution", action="store_true", help="Also print the score distribution table.")
    args = ap.parse_args()
    bench([int(s) for s in args.sizes.split(",")], args.repeats)
    if args.distribution:
        distribution()


if __name__ == "__main__":
    main()
