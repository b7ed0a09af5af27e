"""Training configuration: frozen dataclasses filled from built-in defaults, then YAML files, then flags.

Defaults are the paper's settings (specs/dynet.md): dynamic pre-training with Adam 1e-4, batch 32,
128² crops, 1M iterations, L or S with probability 0.5 per iteration; fine-tuning as the reference
code: AdamW 2e-4 (wd 0.01), warm-up 15 epochs then cosine to epoch 150, stopped at 120, L1 on the
clamped output, batch 32 (8 per GPU × 4), one of 7 flip/rot modes, the all-in-one epoch built with the
reference's repetition factors (denoise ×3, derain ×120, dehaze ×1).
YAML: top-level keys are `TrainConfig` fields; `pretrain:`, `finetune:` and `corruption:` are sections.
`--set section.key=value` sets any field from the command line (values parsed as YAML).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from degradations.recipes import PretrainConfig
from million_ird.store import plain

STAGES = ("pretrain", "finetune")
TASKS = ("denoise", "derain", "dehaze")
VARIANT_CHOICES = ("L", "S", "dynamic")


class ConfigError(ValueError):
    """A configuration value or file is invalid (the message names it)."""


@dataclass(frozen=True)
class StageConfig:
    """Optimisation, data and schedule of one training stage."""

    optimizer: str = "adam"  # adam | adamw
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    batch_size: int = 32  # global batch (split evenly over DDP ranks)
    crop: int = 128
    steps: int | None = 1_000_000  # budget in iterations (exactly one of steps / epochs)
    epochs: float | None = None  # budget in passes over the stage's epoch
    schedule: str = "constant"  # constant | warmup_cosine
    warmup_epochs: float = 0.0
    cosine_epochs: float = 0.0  # cosine reaches 0 here (may lie past the stop, as in the reference)
    variant: str = "dynamic"  # L | S | dynamic (one of the two per iteration, same weights)
    p_large: float = 0.5  # dynamic: probability that an iteration runs L
    clamp_output: bool = False  # L1 on clamp(output, 0, 1) (the reference fine-tuning does)
    augment: bool = False  # one of the 7 non-identity flip/rot90 modes per sample
    tasks: tuple[str, ...] = TASKS  # fine-tuning tasks (all-in-one = all three)
    mix: str = "mixed"  # mixed | sequential (MiOIR curriculum: stage k trains tasks[:k+1])
    repeat: tuple[tuple[str, int], ...] = (("denoise", 3), ("derain", 120), ("dehaze", 1))
    progressive: tuple[tuple[float, int, int], ...] = ()  # (from epoch, crop, batch), DSRIR-style

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.epochs is None):
            raise ConfigError(f"stage budget: set exactly one of steps ({self.steps}) and epochs ({self.epochs})")
        checks = [(self.optimizer in ("adam", "adamw"), f"optimizer={self.optimizer!r}: use adam or adamw"),
                  (self.schedule in ("constant", "warmup_cosine"),
                   f"schedule={self.schedule!r}: use constant or warmup_cosine"),
                  (self.variant in VARIANT_CHOICES, f"variant={self.variant!r}: use one of {VARIANT_CHOICES}"),
                  (0.0 <= self.p_large <= 1.0, f"p_large={self.p_large}: must be in [0, 1]"),
                  (self.mix in ("mixed", "sequential"), f"mix={self.mix!r}: use mixed or sequential"),
                  (self.batch_size >= 1 and self.crop >= 16 and self.crop % 8 == 0,
                   f"batch_size={self.batch_size}, crop={self.crop}: need batch ≥ 1 and crop a multiple of 8 ≥ 16"),
                  (set(self.tasks) <= set(TASKS) and len(self.tasks) > 0,
                   f"tasks={list(self.tasks)}: use a non-empty subset of {TASKS}"),
                  (all(c % 8 == 0 and b >= 1 for _, c, b in self.progressive),
                   "progressive: every (epoch, crop, batch) needs crop a multiple of 8 and batch ≥ 1"),
                  (list(self.progressive) == sorted(self.progressive), "progressive: list phases by start epoch")]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def repeats(self) -> dict[str, int]:
        """Repetition factor per task in one epoch (tasks not listed: 1)."""
        return dict(self.repeat)


PRETRAIN = StageConfig()
FINETUNE = StageConfig(optimizer="adamw", lr=2e-4, weight_decay=0.01, steps=None, epochs=120.0,
                       schedule="warmup_cosine", warmup_epochs=15.0, cosine_epochs=150.0, variant="L",
                       clamp_output=True, augment=True)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run uses; `stream_fields` lists what fixes the data stream."""

    seed: int = 0
    width: int = 48
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 (autocast, CUDA only)
    compile: bool = False
    ema: float = 0.0  # EMA decay of the weights (0: off)
    grad_clip: float = 0.0  # max gradient norm (0: off)
    workers: int = 2  # DataLoader worker processes per rank
    threads: int = 0  # torch CPU threads per rank (0: torch's default)
    log_every: int = 50
    val_every: int = 5000
    val_per_task: int = 8  # held-out images per task (pre-training: held-out patches)
    val_holdout: bool = True  # False: validate on training images (an overfitting check), nothing held out
    val_crop: int | None = 256  # centre crop of validation images (multiple of 16), None: whole image
    ckpt_every: int = 5000
    keep_last: int = 3
    pretrain: StageConfig = PRETRAIN
    finetune: StageConfig = FINETUNE
    corruption: PretrainConfig = field(default_factory=PretrainConfig)

    def __post_init__(self) -> None:
        if self.width % 8 or self.width < 8:
            raise ConfigError(f"width={self.width}: must be a multiple of 8")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision={self.precision!r}: use fp32 or bf16")
        for key in ("log_every", "val_every", "ckpt_every", "keep_last"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)}: must be at least 1 (use a large number to do it rarely)")
        if self.val_crop is not None and self.val_crop % 16:
            raise ConfigError(f"val_crop={self.val_crop}: must be a multiple of 16 (or null)")

    def stage(self, name: str) -> StageConfig:
        """The StageConfig of `name` (pretrain or finetune)."""
        return getattr(self, name)

    def stream_fields(self, name: str) -> dict[str, Any]:
        """The settings that fix stage `name`'s data stream and model shape (resume must not change them)."""
        fields = {"seed": self.seed, "width": self.width, "val_per_task": self.val_per_task,
                  "val_holdout": self.val_holdout, "stage": plain(self.stage(name))}
        if name == "pretrain":
            fields["corruption"] = plain(self.corruption)
        return fields


def _tupled(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value) and value and \
            all(isinstance(v, int) for v in value.values()):
        return tuple(value.items())  # {task: factor} mapping for `repeat`
    return value


def _coerce(annotation: Any, value: Any, where: str) -> Any:
    """Numbers given as text (YAML reads 2e-3 as a string) or ints for float fields, per the annotation."""
    kind = str(annotation).split(" ")[0]
    if value is None or kind not in ("int", "float") or isinstance(value, bool):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {value!r} is not a number") from err
    if kind == "int":
        if not number.is_integer():
            raise ConfigError(f"{where}: {value!r} is not a whole number")
        return int(number)
    return number


def update(obj: Any, values: dict[str, Any], where: str) -> Any:
    """dataclasses.replace with nested sections and a clear error for unknown keys."""
    names = {f.name: f for f in dataclasses.fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(sorted(names))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = update(current, value, f"{where}.{key}")
        else:
            changes[key] = _coerce(names[key].type, _tupled(value), f"{where}.{key}")
    try:
        return dataclasses.replace(obj, **changes)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def apply_yaml(cfg: TrainConfig, path: Path) -> TrainConfig:
    """Apply the YAML file at `path` over `cfg`."""
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot be read as YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return update(cfg, values, str(path))


def apply_sets(cfg: TrainConfig, assignments: list[str]) -> TrainConfig:
    """Apply `section.key=value` assignments (values parsed as YAML) together, as one layer."""
    nested: dict[str, Any] = {}
    for text in assignments:
        key, sep, raw = text.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {text!r}: write KEY=VALUE, e.g. --set finetune.lr=1e-4")
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw)
    return update(cfg, nested, "--set") if nested else cfg


def with_crop(corruption: PretrainConfig, crop: int) -> PretrainConfig:
    """The corruption config for another crop size, keeping the masked/degraded block fractions."""
    if crop == corruption.crop:
        return corruption
    if crop % corruption.block:
        raise ConfigError(f"pretrain crop {crop} must be a multiple of the corruption block {corruption.block}")
    n = (crop // corruption.block) ** 2
    scale = n / corruption.n_blocks
    return dataclasses.replace(corruption, crop=crop, n_masked=round(corruption.n_masked * scale),
                               n_degraded=round(corruption.n_degraded * scale))
