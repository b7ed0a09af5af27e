"""Download benchmark on loopback: our `download` (img2dataset + verify) vs a bare img2dataset call.

    python -m benchmarks.bench_download [--images 500] [--processes 2] [--threads 16]

Serves >= 500 JPEG/PNG/WebP images of 2-12 MP from 127.0.0.1, then, in the same run and on the same
input, times (a) img2dataset with resize_mode="no", skip_reencode=True (it decodes every image) and
(b) `million-ird ingest` + `download` (originals kept byte-for-byte, every file decoded and hashed).
Target on 2 cores: (b) >= 0.9x the images/s of (a). Prints img/s, MB/s and peak RSS of each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from million_ird.httpserver import LocalServer, Response

FORMATS = ((".jpg", [cv2.IMWRITE_JPEG_QUALITY, 92], "image/jpeg"), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 90],
           "image/webp"), (".png", [cv2.IMWRITE_PNG_COMPRESSION, 1], "image/png"))


def photo_like(rng: np.random.Generator, megapixels: float) -> np.ndarray:
    """A natural-looking test image: upsampled low-frequency noise plus fine texture."""
    aspect = rng.uniform(1.2, 1.6)
    height = int((megapixels * 1e6 / aspect) ** 0.5)
    width = int(height * aspect)
    low = rng.integers(0, 255, (height // 64 + 2, width // 64 + 2, 3)).astype(np.uint8)
    img = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.add(img, rng.integers(0, 20, (height, width, 3), dtype=np.uint8))


def make_routes(count: int, distinct: int, seed: int = 0) -> dict[str, Response]:
    """`count` URLs over `distinct` encoded images (80% JPEG, 15% WebP, 5% PNG), 2-12 MP each."""
    rng = np.random.default_rng(seed)
    bodies = []
    for i in range(distinct):
        ext, params, mime = FORMATS[0] if i % 20 < 16 else FORMATS[1] if i % 20 < 19 else FORMATS[2]
        ok, buf = cv2.imencode(ext, photo_like(rng, rng.uniform(2, 12)), params)
        assert ok
        bodies.append((ext, buf.tobytes(), mime))
    return {f"/img/{i:05d}{bodies[i % distinct][0]}": Response(bodies[i % distinct][1], content_type=bodies[i % distinct][2])
            for i in range(count)}


def run_child(code: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB, the largest process of the tree) of a Python child."""
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"benchmark child failed with status {status}: {code}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024**2


def bare_img2dataset(url_list: Path, out: Path, args: argparse.Namespace) -> str:
    """The reference: img2dataset decoding every image (skip_reencode keeps JPEG bytes, not PNG)."""
    return (f"from img2dataset import download; download(url_list={str(url_list)!r}, input_format='parquet', "
            f"url_col='url', output_folder={str(out)!r}, output_format='files', resize_mode='no', skip_reencode=True, "
            f"processes_count={args.processes}, thread_count={args.threads}, "
            f"number_sample_per_shard={args.shard_size}, timeout=30)")


def ours(url_list: Path, store: Path, args: argparse.Namespace) -> str:
    """Ingest the same URLs, then our download with verification."""
    return ("from million_ird.cli import app; import sys; "
            f"app(['ingest', '-m', {str(store)!r}, '--parquet', {str(url_list)!r}], standalone_mode=False); "
            f"app(['download', '-m', {str(store)!r}, '--processes', '{args.processes}', '--threads', '{args.threads}', "
            f"'--shard-size', '{args.shard_size}', '--timeout', '30', '--allow-private'], standalone_mode=False)")


def main() -> None:
    """Serve the images, run both downloaders on the same input, print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="URLs to download (>= 500 for the target)")
    parser.add_argument("--distinct", type=int, default=32, help="distinct encoded images behind the URLs")
    parser.add_argument("--processes", type=int, default=2, help="img2dataset processes (both runs)")
    parser.add_argument("--threads", type=int, default=16, help="threads per process (both runs)")
    parser.add_argument("--shard-size", type=int, default=100, help="rows per shard (both runs)")
    args = parser.parse_args()
    t = time.perf_counter()
    routes = make_routes(args.images, args.distinct)
    total_mb = sum(len(r.body) for r in routes.values()) / 1e6
    print(f"generated {args.images} URLs / {args.distinct} distinct images, {total_mb:.0f} MB, "
          f"in {time.perf_counter() - t:.0f} s")
    with LocalServer(routes) as server, tempfile.TemporaryDirectory() as tmp:
        url_list = Path(tmp) / "urls.parquet"
        pq.write_table(pa.table({"url": [server.url(p) for p in routes]}), url_list)
        results = {}
        for name, code in (("img2dataset skip_reencode", bare_img2dataset(url_list, Path(tmp) / "bare", args)),
                           ("million-ird download", ours(url_list, Path(tmp) / "store", args))):
            wall, rss = run_child(code)
            results[name] = args.images / wall
            print(f"{name:28s} {args.images / wall:6.1f} img/s  {total_mb / wall:6.1f} MB/s  "
                  f"wall {wall:5.1f} s  peak RSS {rss:.2f} GB")
        ratio = results["million-ird download"] / results["img2dataset skip_reencode"]
        print(f"ratio ours / bare = {ratio:.2f} (target >= 0.9) {'OK' if ratio >= 0.9 else 'MISSED'}")


if __name__ == "__main__":
    main()
