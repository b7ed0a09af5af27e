"""Speed of the patches stage: tiling + flat ratio alone, and the whole stage against decode + PNG encode alone.

    python -m benchmarks.bench_patches [--images 24] [--width 2048 --height 1536] [--size 512] [--repeats 3]

Targets (issue #11, one core): tiling + flat ratio <= 10 ms per 1024² of image, decode excluded; the whole
stage (`run_patches` through the driver: decode, grid, flat ratio, PNG encode into tar shards, Parquet rows)
within 1.5x of decode + PNG encode of the same kept patches alone. The images are scikit-image photos
resized to WIDTHxHEIGHT with mild noise, saved as JPEG q95 (what most LAION-HR originals are), verified
in place by `million-ird download` first (not timed). One thread everywhere, best of --repeats.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from million_ird.driver import DriverConfig  # noqa: E402
from million_ird.flat import flat_ratio, gray  # noqa: E402
from million_ird.images import encode_png, read_image  # noqa: E402
from million_ird.stages.patches import PatchesConfig, grid, run_patches  # noqa: E402
from million_ird.store import Store  # noqa: E402

cv2.setNumThreads(1)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def make_images(folder: Path, count: int, width: int, height: int) -> list[Path]:
    """`count` JPEG q95 photos of width x height (scikit-image photos, resized, mild noise)."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for k in range(count):
        photo = getattr(skimage.data, PHOTOS[k % len(PHOTOS)])()
        img = cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img + rng.normal(0, 3.0, img.shape), 0, 255).astype(np.uint8)
        path = folder / f"img{k:04d}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        paths.append(path)
    return paths


def best(fn, repeats: int) -> float:  # noqa: ANN001 - any callable
    """Best wall seconds of `repeats` calls of fn()."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def tiling_ms_per_mpix(images: list[np.ndarray], size: int, repeats: int) -> float:
    """Gray conversion, grid and flat ratio of every cell as the stage does them, decode excluded: ms per 1024²."""
    def run() -> None:
        for img in images:
            luma = gray(img)
            for x, y in grid(img.shape[1], img.shape[0], size):
                flat_ratio(luma[y:y + size, x:x + size])

    pixels = sum(img.shape[0] * img.shape[1] for img in images)
    return best(run, repeats) * 1000 / (pixels / 1024**2)


def decode_encode_s(paths: list[Path], size: int, keep: set[tuple[str, int, int]], repeats: int) -> float:
    """Decode every image and PNG-encode the patches the stage kept: the stage's unavoidable work."""
    def run() -> None:
        for path in paths:
            img = read_image(path, rgb=True)
            for x, y in grid(img.shape[1], img.shape[0], size):
                if (path.stem, x, y) in keep:
                    encode_png(img[y:y + size, x:x + size])

    return best(run, repeats)


def stage_s(src: Path, work: Path, size: int, repeats: int) -> tuple[float, set[tuple[str, int, int]], int]:
    """Wall seconds of `run_patches` on a fresh copy of the verified store; the kept (stem, x, y); cells."""
    times, kept, cells = [], set(), 0
    for _ in range(repeats):
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(src, work)
        store = Store(work)
        start = time.perf_counter()
        stats = run_patches(store, PatchesConfig(size=size), DriverConfig(progress=False))
        times.append(time.perf_counter() - start)
        cells = stats["patches"]
        rows = store.query("SELECT c.path, p.x, p.y FROM latest_patches p JOIN catalog c USING (image_id) "
                           "WHERE p.kept").to_pylist()
        kept = {(Path(r["path"]).stem, r["x"], r["y"]) for r in rows}
    return min(times), kept, cells


def main() -> None:
    """Build the images and a verified store, then print the three figures and the ratio."""
    from million_ird.cli import app

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24, help="how many images")
    parser.add_argument("--width", type=int, default=2048, help="image width in px")
    parser.add_argument("--height", type=int, default=1536, help="image height in px")
    parser.add_argument("--size", type=int, default=512, help="patch side")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (best is printed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_images(root / "photos", args.images, args.width, args.height)
        base = root / "verified"
        app(["ingest", "-m", str(base), "--folder", str(root / "photos"), "--source", "bench"], standalone_mode=False)
        app(["download", "-m", str(base)], standalone_mode=False)
        decoded = [read_image(p, rgb=True) for p in paths]
        tiling = tiling_ms_per_mpix(decoded, args.size, args.repeats)
        stage, kept, cells = stage_s(base, root / "work", args.size, args.repeats)
        alone = decode_encode_s(paths, args.size, kept, args.repeats)
    mpix = args.images * args.width * args.height / 1024**2
    print(f"{args.images} images of {args.width}x{args.height} (JPEG q95), {args.size}² patches: {cells} cells, "
          f"{len(kept)} kept; one thread; cores {os.cpu_count()}")
    print(f"tiling + flat ratio (decode excluded): {tiling:.2f} ms per 1024² (target <= 10)  "
          f"{'OK' if tiling <= 10 else 'MISSED'}")
    print(f"decode + PNG encode of the kept patches alone: {alone:.2f} s ({alone * 1000 / mpix:.1f} ms per 1024²)")
    print(f"whole patches stage (driver, shards, Parquet): {stage:.2f} s ({stage * 1000 / mpix:.1f} ms per 1024²)")
    ratio = stage / alone
    print(f"stage / (decode + encode) = {ratio:.2f} (target <= 1.5)  {'OK' if ratio <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
