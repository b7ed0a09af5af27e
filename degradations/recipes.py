"""Pre-training corruption (DyNet paper, no released code): a 128 crop, 16-px blocks masked/degraded/clean.

Our defaults (the paper gives only the fractions): 19 masked, 32 degraded, 13 clean blocks of 64, chosen
by a seeded permutation; degraded blocks are cut from a fully degraded copy of the crop so the JPEG 8x8
grid stays real; one degradation per sample: JPEG q U{30..95}, Gaussian noise sigma U[5, 50] (40% grey),
or random-valued impulse noise p U[0.05, 0.3]; masked blocks are filled with white.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from degradations.registry import DegradationError, check_image, get

CLEAN, DEGRADED, MASKED = 0, 1, 2
PRETRAIN_KINDS = ("jpeg", "gaussian_noise", "impulse_noise")


@dataclass(frozen=True)
class PretrainConfig:
    """Every choice of the pre-training corruption (defaults are ours; see the module docstring)."""

    crop: int = 128
    block: int = 16
    n_masked: int = 19
    n_degraded: int = 32
    mask_fill: float = 1.0
    kinds: tuple[str, ...] = PRETRAIN_KINDS
    kind_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    jpeg_quality: tuple[int, int] = (30, 95)
    sigma: tuple[float, float] = (5.0, 50.0)
    gray_prob: float = 0.4
    impulse_p: tuple[float, float] = (0.05, 0.3)
    noise_rounding: str = "truncate"

    def __post_init__(self) -> None:
        if self.crop % self.block:
            raise DegradationError(f"PretrainConfig: crop={self.crop} must be a multiple of block={self.block}")
        total = (self.crop // self.block) ** 2
        if self.n_masked < 0 or self.n_degraded < 0 or self.n_masked + self.n_degraded > total:
            raise DegradationError(f"PretrainConfig: n_masked={self.n_masked} + n_degraded={self.n_degraded} "
                                   f"must be within the {total} blocks of a {self.crop} crop")
        if len(self.kinds) != len(self.kind_weights) or min(self.kind_weights, default=0) < 0 or not self.kinds:
            raise DegradationError("PretrainConfig: give one non-negative weight per entry of `kinds`")
        unknown = set(self.kinds) - set(PRETRAIN_KINDS)
        if unknown:
            raise DegradationError(f"PretrainConfig: kinds {sorted(unknown)} unsupported; use {PRETRAIN_KINDS}")

    @property
    def n_blocks(self) -> int:
        """Blocks per crop."""
        return (self.crop // self.block) ** 2

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PretrainConfig:
        """Build from a plain mapping (e.g. YAML); unknown keys are an error that lists the valid ones."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - valid
        if unknown:
            raise DegradationError(f"PretrainConfig: unknown keys {sorted(unknown)}; valid keys: {sorted(valid)}")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**fixed)


def draw_degradation(rng: np.random.Generator, cfg: PretrainConfig) -> tuple[str, dict[str, Any]]:
    """Pick the sample's degradation and its parameters."""
    w = np.asarray(cfg.kind_weights, np.float64)
    kind = cfg.kinds[int(rng.choice(len(cfg.kinds), p=w / w.sum()))]
    if kind == "jpeg":
        return kind, {"quality": int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))}
    if kind == "gaussian_noise":
        return kind, {"sigma": float(rng.uniform(*cfg.sigma)), "gray": bool(rng.random() < cfg.gray_prob),
                      "rounding": cfg.noise_rounding}
    return kind, {"p": float(rng.uniform(*cfg.impulse_p))}


def random_crop(patch: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """A size x size crop at a random position (the patch must be at least that large)."""
    h, w = patch.shape[:2]
    if h < size or w < size:
        raise DegradationError(f"pretrain: patch {h}x{w} is smaller than the {size} crop; use larger patches")
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return patch[y:y + size, x:x + size]


def block_labels(rng: np.random.Generator, cfg: PretrainConfig) -> np.ndarray:
    """A crop x crop uint8 map of CLEAN / DEGRADED / MASKED from a seeded block permutation."""
    order = rng.permutation(cfg.n_blocks)
    cells = np.full(cfg.n_blocks, CLEAN, np.uint8)
    cells[order[:cfg.n_masked]] = MASKED
    cells[order[cfg.n_masked:cfg.n_masked + cfg.n_degraded]] = DEGRADED
    side = cfg.crop // cfg.block
    return np.kron(cells.reshape(side, side), np.ones((cfg.block, cfg.block), np.uint8))


def pretrain_detailed(patch: np.ndarray, rng: np.random.Generator,
                      cfg: PretrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Like `pretrain`, plus a dict of the degradation drawn and its parameters."""
    check_image(patch, "pretrain")
    target = np.ascontiguousarray(random_crop(patch, rng, cfg.crop))
    kind, params = draw_degradation(rng, cfg)
    degraded, used = get(kind)(target, rng, **params)
    labels = block_labels(rng, cfg)
    out = np.where((labels == DEGRADED)[..., None], degraded, target)
    out[labels == MASKED] = np.uint8(round(cfg.mask_fill * 255))
    return out, target, labels, {"degradation": kind, "params": used}


def pretrain(patch: np.ndarray, rng: np.random.Generator,
             cfg: PretrainConfig | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input, target, mask) for one pre-training sample: uint8 crops and a uint8 CLEAN/DEGRADED/MASKED map."""
    inp, target, labels, _ = pretrain_detailed(patch, rng, cfg or PretrainConfig())
    return inp, target, labels
