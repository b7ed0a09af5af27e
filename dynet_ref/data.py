"""The training data stream: a pure function of (seed, step), for any worker count or world size.

An epoch is a list of items (kept patches; or pair rows, each repeated by its task's factor). Step t of a
stage covers the global sample positions [p(t), p(t) + batch(t)); position p is item
`permutation(seed, epoch)[p mod E]` of epoch p // E. Each sample's crop, flip, degradation and mask come
from `degradations.sample_rng(seed, item key, operation, epoch)`. Rank r of W takes the r-th slice of the
global batch. Nothing here keeps state between steps, so resuming at step t replays exactly.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import Dataset, Sampler

import degradations
from degradations.recipes import PretrainConfig, pretrain
from dynet_ref.config import StageConfig, with_crop
from dynet_ref.index import PairRow, PatchRow, degraded_of, read_rgb8

Index = tuple[int, int, int]  # (global position, crop, sequential stage)


@dataclass(frozen=True)
class Phase:
    """A run of steps with one batch size and crop, starting at a sample position."""

    first_step: int
    position: int
    batch: int
    crop: int


def phases(cfg: StageConfig, epoch_size: int) -> list[Phase]:
    """The stage's (progressive) phases as step/position ranges; one phase when not progressive."""
    plan = [(0.0, cfg.crop, cfg.batch_size)] + [p for p in cfg.progressive if p[0] > 0]
    if cfg.progressive and cfg.progressive[0][0] == 0:
        plan[0] = cfg.progressive[0]
    out = [Phase(0, 0, int(plan[0][2]), int(plan[0][1]))]
    for epoch, crop, batch in plan[1:]:
        prev = out[-1]
        n_steps = max(0, math.ceil((epoch * epoch_size - prev.position) / prev.batch))
        out.append(Phase(prev.first_step + n_steps, prev.position + n_steps * prev.batch, int(batch), int(crop)))
    return out


class Stream:
    """Maps a step to its global sample positions, batch and crop (pure functions of the step)."""

    def __init__(self, cfg: StageConfig, epoch_size: int) -> None:
        if epoch_size < 1:
            raise ValueError("a stream needs at least one item per epoch")
        self.epoch_size = epoch_size
        self.phases = phases(cfg, epoch_size)
        self._starts = [p.first_step for p in self.phases]

    def phase(self, step: int) -> Phase:
        """The phase step `step` belongs to."""
        return self.phases[bisect.bisect_right(self._starts, step) - 1]

    def position(self, step: int) -> int:
        """Global position of the first sample of `step`."""
        ph = self.phase(step)
        return ph.position + (step - ph.first_step) * ph.batch

    def epoch(self, step: int) -> float:
        """Fractional epoch at the start of `step`."""
        return self.position(step) / self.epoch_size

    def steps_for(self, epochs: float) -> int:
        """Number of steps until `epochs` passes are consumed."""
        target = epochs * self.epoch_size
        ph = next((p for p in reversed(self.phases) if p.position < target), self.phases[0])
        return ph.first_step + max(0, math.ceil((target - ph.position) / ph.batch))


@lru_cache(maxsize=4)
def permutation(seed: int, key: str, epoch: int, size: int) -> np.ndarray:
    """The item order of one epoch."""
    return degradations.sample_rng(seed, key, "order", epoch).permutation(size)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float32 3xHxW in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)


def augment(images: Sequence[np.ndarray], mode: int) -> list[np.ndarray]:
    """Flip/rot90 mode 0..7 (0 = identity) applied identically to every image."""
    out = []
    for img in images:
        if mode & 4:
            img = img[::-1]
        out.append(np.ascontiguousarray(np.rot90(img, mode & 3)))
    return out


def pad_to(img: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad an image smaller than `size` on either side up to `size`."""
    h, w = img.shape[:2]
    if h >= size and w >= size:
        return img
    return np.pad(img, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="reflect")


def aligned_crop(images: Sequence[np.ndarray], rng: np.random.Generator, size: int) -> list[np.ndarray]:
    """The same random size x size window of every image (padded first when smaller)."""
    images = [pad_to(i, size) for i in images]
    h, w = images[0].shape[:2]
    y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return [i[y:y + size, x:x + size] for i in images]


class StreamDataset(Dataset):
    """Map-style dataset indexed by (global position, crop, sequential stage)."""

    key = "stream"

    def __init__(self, seed: int, n_items: int) -> None:
        self.seed, self.n_items = seed, n_items

    def locate(self, position: int, n_items: int, stage: int = 0) -> tuple[int, int]:
        """(epoch, item) of a global position among the first `n_items` items."""
        epoch, offset = divmod(position, n_items)
        return epoch, int(permutation(self.seed, f"{self.key}/{stage}", epoch, n_items)[offset])

    def __len__(self) -> int:
        return self.n_items


class PretrainDataset(StreamDataset):
    """Kept patches -> (corrupted crop, clean crop) from degradations.recipes.pretrain."""

    key = "pretrain"

    def __init__(self, patches: list[PatchRow], seed: int, corruption: PretrainConfig) -> None:
        super().__init__(seed, len(patches))
        # two Arrow string columns, not 8M Python objects: cheap to send to workers, no copy-on-read
        self.ids = pa.array([p.patch_id for p in patches], pa.string())
        self.paths = pa.array([str(p.path) for p in patches], pa.string())
        self.corruption = corruption

    def __getitem__(self, index: Index) -> tuple[torch.Tensor, torch.Tensor]:
        position, crop, _ = index
        epoch, item = self.locate(position, self.n_items)
        rng = degradations.sample_rng(self.seed, self.ids[item].as_py(), "pretrain", epoch)
        patch = read_rgb8(Path(self.paths[item].as_py()))
        inp, target, _ = pretrain(pad_to(patch, crop), rng, with_crop(self.corruption, crop))
        return to_tensor(inp), to_tensor(target)


def expand(rows: list[PairRow], tasks: Sequence[str], repeats: dict[str, int]) -> list[tuple[int, int]]:
    """Epoch items (row index, repetition) for `tasks` in order, each row repeated by its task's factor."""
    items = []
    for task in tasks:
        for i, row in enumerate(rows):
            if row.task == task:
                items += [(i, r) for r in range(repeats.get(task, 1))]
    return items


class PairDataset(StreamDataset):
    """Train pairs -> aligned (degraded crop, clean crop); on-the-fly degradations seeded per (pair, epoch)."""

    key = "finetune"

    def __init__(self, rows: list[PairRow], seed: int, cfg: StageConfig) -> None:
        self.rows, self.cfg = rows, cfg
        order = tuple(cfg.tasks)
        # sequential stage k draws from tasks[:k+1]; its items are the first `sizes[k]` of `items`
        self.items = expand(rows, order, cfg.repeats)
        self.sizes = [len(expand(rows, order[:k + 1], cfg.repeats)) for k in range(len(order))]
        super().__init__(seed, len(self.items))

    def __getitem__(self, index: Index) -> tuple[torch.Tensor, torch.Tensor]:
        position, crop, stage = index
        epoch, item = self.locate(position, self.sizes[stage] if self.cfg.mix == "sequential" else self.n_items,
                                  stage)
        row_index, rep = self.items[item]
        row = self.rows[row_index]
        key = f"{row.pair_id}#{rep}"
        clean = read_rgb8(row.clean)
        degraded = degraded_of(row, clean, None if row.degraded else
                               degradations.sample_rng(self.seed, key, "degrade", epoch))
        if degraded.shape != clean.shape:
            raise ValueError(f"pair {row.pair_id}: degraded {degraded.shape} and clean {clean.shape} differ in size")
        rng = degradations.sample_rng(self.seed, key, "crop", epoch)
        pair = aligned_crop([degraded, clean], rng, crop)
        if self.cfg.augment:
            pair = augment(pair, int(rng.integers(1, 8)))
        return to_tensor(pair[0]), to_tensor(pair[1])


class StepSampler(Sampler[list[Index]]):
    """Yields, for steps [start, stop), this rank's slice of the global batch as dataset indices."""

    def __init__(self, stream: Stream, start: int, stop: int, rank: int = 0, world: int = 1,
                 n_stages: int = 1, total: int = 1) -> None:
        self.stream, self.start, self.stop = stream, start, stop
        self.rank, self.world, self.n_stages, self.total = rank, world, n_stages, max(1, total)

    def stage_of(self, step: int) -> int:
        """Sequential curriculum stage of a step (0 when tasks are mixed)."""
        return min(self.n_stages - 1, step * self.n_stages // self.total)

    def __iter__(self) -> Iterator[list[Index]]:
        for step in range(self.start, self.stop):
            ph = self.stream.phase(step)
            if ph.batch % self.world:
                raise ValueError(f"global batch {ph.batch} is not divisible by the {self.world} ranks")
            stage = self.stage_of(step)
            base = self.stream.position(step) - self.stream.position(self.stage_start(stage))
            local = ph.batch // self.world
            yield [(base + self.rank * local + i, ph.crop, stage) for i in range(local)]

    def stage_start(self, stage: int) -> int:
        """First step of a sequential stage."""
        return 0 if stage == 0 else -(-stage * self.total // self.n_stages)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
