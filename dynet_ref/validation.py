"""Fixed validation sets held out of the training data (never the test split) and PSNR per set and variant.

Held-out images are chosen by a seeded hash of their clean file as the store records it (store-relative,
so the choice does not depend on where the store lives), the first `per_task` per task; a clean
image held out for one task leaves training for every task. Validation inputs are fixed: on-the-fly
pairs use their stored seed, pre-training patches a corruption seeded by (seed, patch id, "val").
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import degradations
from degradations.recipes import PretrainConfig, pretrain
from dynet_ref.data import pad_to, to_tensor
from dynet_ref.index import PairRow, PatchRow, degraded_of, read_rgb8
from dynet_ref.metrics import psnr

PRETRAIN_SET = "pretrain"


@dataclass(frozen=True)
class ValSample:
    """One fixed validation input/target pair and the set it counts towards."""

    set_name: str
    degraded: torch.Tensor
    clean: torch.Tensor


def _rank(seed: int, key: str) -> str:
    return hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).hexdigest()


def holdout_pairs(rows: list[PairRow], per_task: int, seed: int,
                  holdout: bool) -> tuple[list[PairRow], list[PairRow]]:
    """(train rows, validation rows); without `holdout`, validation images stay in training."""
    by_task: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        by_task[row.task].add(row.clean_ref)
    chosen: dict[str, set[str]] = {t: set(sorted(c, key=lambda p: _rank(seed, p))[:per_task])
                                   for t, c in by_task.items()}
    held = set().union(*chosen.values()) if chosen else set()
    val = [r for r in rows if r.clean_ref in chosen[r.task]]
    train = [r for r in rows if r.clean_ref not in held] if holdout else list(rows)
    return train, val


def holdout_patches(patches: list[PatchRow], per_task: int, seed: int,
                    holdout: bool) -> tuple[list[PatchRow], list[PatchRow]]:
    """(train patches, validation patches) chosen by a seeded hash of the patch id."""
    val_ids = set(sorted((p.patch_id for p in patches), key=lambda i: _rank(seed, i))[:per_task])
    val = [p for p in patches if p.patch_id in val_ids]
    train = [p for p in patches if p.patch_id not in val_ids] if holdout else list(patches)
    return train, val


def _center(img: np.ndarray, size: int | None, multiple: int = 16) -> np.ndarray:
    h, w = img.shape[:2]
    th, tw = (min(h, size), min(w, size)) if size else (h, w)
    th, tw = th - th % multiple, tw - tw % multiple
    y, x = (h - th) // 2, (w - tw) // 2
    return img[y:y + th, x:x + tw]


def pair_samples(rows: list[PairRow], crop: int | None) -> list[ValSample]:
    """Validation samples of pair rows, centre-cropped to `crop` and a multiple of 16."""
    out = []
    for row in rows:
        clean = read_rgb8(row.clean)
        degraded = degraded_of(row, clean)
        out.append(ValSample(row.set_name, to_tensor(_center(degraded, crop)), to_tensor(_center(clean, crop))))
    return out


def patch_samples(patches: list[PatchRow], seed: int, corruption: PretrainConfig) -> list[ValSample]:
    """Validation samples of pre-training patches with a fixed corruption."""
    out = []
    for patch in patches:
        rng = degradations.sample_rng(seed, patch.patch_id, "val")
        inp, target, _ = pretrain(pad_to(read_rgb8(patch.path), corruption.crop), rng, corruption)
        out.append(ValSample(PRETRAIN_SET, to_tensor(inp), to_tensor(target)))
    return out


@torch.no_grad()
def validate(model: nn.Module, samples: list[ValSample], device: torch.device) -> dict[str, float]:
    """Mean PSNR (RGB, data range 1, output clamped) per set, plus 'mean' over the sets."""
    was_training = model.training
    model.eval()
    per_set: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        out = model(s.degraded.unsqueeze(0).to(device)).float().clamp_(0, 1)
        per_set[s.set_name].append(float(psnr(out, s.clean.unsqueeze(0).to(device))[0]))
    model.train(was_training)
    result = {name: float(np.mean(v)) for name, v in sorted(per_set.items())}
    if result:
        result["mean"] = float(np.mean(list(result.values())))
    return result
