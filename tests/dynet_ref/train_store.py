"""A small real dataset store for training tests: smooth textured PNG patches in a tar shard, and pair rows."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

import degradations
from million_ird.images import encode_png
from million_ird.schema import PAIRS, PATCHES
from million_ird.shards import ShardWriter
from million_ird.store import Store

TRAIN_ARGS = ["--workers", "0", "--threads", "1", "--width", "8", "--crop", "32", "--batch-size", "4", "--device", "cpu",
              "--no-store-config", "--tasks", "denoise,derain", "--set", "val_crop=32", "--set", "val_per_task=1", "--set", "log_every=1"]


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth colour texture with a few edges (uint8 RGB)."""
    low = rng.uniform(0, 255, (6, 6, 3)).astype(np.float32)
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    y, x = np.mgrid[:size, :size]
    img += 40 * np.sign(np.sin(x / rng.uniform(3, 9)))[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def write_png(root: Path, rel: str, rgb: np.ndarray) -> str:
    """Write RGB as PNG at root/rel; returns `rel` (stores record their own files store-relative)."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return rel


def build_store(root: Path, n_patches: int = 6, n_pairs: int = 4, tasks: tuple[str, ...] = ("denoise", "derain"),
                seed: int = 0) -> Store:
    """Kept patches plus train pairs: on-the-fly denoise rows, file-backed derain and dehaze rows."""
    store = Store(root)
    rng = np.random.default_rng(seed)
    patches = []
    shards = ShardWriter(root, "files/patches/test", max_bytes=2**30)
    for i in range(n_patches):
        m = shards.add(f"img{i}_0_0.png", encode_png(texture(rng, 64)))
        patches.append({"patch_id": f"img{i}_0_0", "image_id": f"img{i}", "x": 0, "y": 0, "size": 64,
                        "flat_ratio": 0.0, "kept": True, "shard": m.shard, "member": m.member,
                        "byte_offset": m.byte_offset, "nbytes": m.nbytes, "fingerprint": "test"})
    shards.close()
    store.append("patches", pa.Table.from_pylist(patches, schema=PATCHES))
    pairs = []
    for i in range(n_pairs):
        clean = texture(rng, 48)
        clean_path = write_png(root, f"files/clean/c{i}.png", clean)
        if "denoise" in tasks:
            pid = f"t/train/denoise/s25/c{i}"
            pairs.append({"pair_id": pid, "recipe": "t", "split": "train", "task": "denoise", "clean": clean_path,
                          "degradation": "gaussian_noise", "sigma": 25.0,
                          "seed": degradations.sample_seed(0, pid, "gaussian_noise"),
                          "params": json.dumps({"args": {"sigma": 25.0, "rounding": "truncate"}}), "degraded": None})
        for task, name, args in (("derain", "rain", {"preset": "heavy"}), ("dehaze", "haze", {"A": 0.9, "beta": 0.2})):
            if task in tasks:
                out, _ = degradations.get(name)(clean, degradations.sample_rng(0, i, name), **args)
                pairs.append({"pair_id": f"t/train/{task}/c{i}", "recipe": "t", "split": "train", "task": task,
                              "clean": clean_path, "degraded": write_png(root, f"files/{task}/d{i}.png", out),
                              "params": json.dumps({"source": "test"})})
    store.append("pairs", pa.Table.from_pylist(pairs, schema=PAIRS))
    return store
