"""One training stage: model, optimiser, EMA, the step loop, logs, validation and checkpoints.

The learning rate and the L/S choice of every step are pure functions of the step; the data stream is
(dynet_ref.data), so a resumed run replays the uninterrupted one. Under `torchrun` every rank runs this
same code: DDP averages gradients over ranks, rank 0 alone writes files.
"""

from __future__ import annotations

import copy
import csv
import logging
import math
import time
from array import array
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import degradations
from dynet_ref.checkpoints import config_hash, save_checkpoint
from dynet_ref.config import StageConfig, TrainConfig
from dynet_ref.data import StepSampler, Stream
from dynet_ref.model import DyNet
from dynet_ref.runstate import RunFolder
from dynet_ref.validation import ValSample, validate
from million_ird.atomic import atomic_path

log = logging.getLogger(__name__)
LOSS_WINDOW = 20


@dataclass(frozen=True)
class Dist:
    """This process's place in a (possibly single-process) run."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """True on the process that writes files and logs."""
        return self.rank == 0


@dataclass
class StageData:
    """What a stage trains and validates on."""

    dataset: Dataset
    epoch_size: int
    val: list[ValSample]
    fingerprint: str
    n_stages: int = 1


@dataclass
class StageResult:
    """A stage's outcome for the summary."""

    name: str
    step: int
    total: int
    seconds: float
    steps_run: int
    first_loss: dict[str, float] = field(default_factory=dict)
    last_loss: dict[str, float] = field(default_factory=dict)
    first_val: dict[str, dict[str, float]] = field(default_factory=dict)
    last_val: dict[str, dict[str, float]] = field(default_factory=dict)
    final: Path | None = None
    folder: Path | None = None

    @property
    def complete(self) -> bool:
        """True when the stage reached its budget."""
        return self.step >= self.total


def variant_at(cfg: StageConfig, seed: int, step: int) -> str:
    """The depth step `step` runs: fixed, or L with probability p_large from a (seed, step) generator."""
    if cfg.variant != "dynamic":
        return cfg.variant
    return "L" if degradations.sample_rng(seed, "variant", "dynamic", epoch=step).random() < cfg.p_large else "S"


def val_variants(cfg: StageConfig) -> list[str]:
    """Variants validated: both for a dynamic run, else the trained one."""
    return ["S", "L"] if cfg.variant == "dynamic" else [cfg.variant]


def total_steps(cfg: StageConfig, stream: Stream) -> int:
    """The stage's budget in steps."""
    return int(cfg.steps) if cfg.steps is not None else stream.steps_for(float(cfg.epochs))


def lr_at(cfg: StageConfig, stream: Stream, step: int) -> float:
    """Learning rate of `step`: constant, or linear warm-up then cosine to 0 (epochs measured in samples)."""
    if cfg.schedule == "constant":
        return cfg.lr
    warm = stream.steps_for(cfg.warmup_epochs)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    end = stream.steps_for(cfg.cosine_epochs)
    if end <= warm:
        return cfg.lr
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / (end - warm))))


class EMA:
    """Exponential moving average of a model's weights (kept as a second model)."""

    def __init__(self, model: DyNet, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: DyNet) -> None:
        """ema = decay * ema + (1 - decay) * weights."""
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1.0 - self.decay)


def make_optimizer(model: nn.Module, cfg: StageConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over the parameters that receive gradients."""
    params = [p for p in model.parameters() if p.requires_grad]
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


class Logs:
    """log.csv (every step), val.csv, TensorBoard and running losses per variant (rank 0 only)."""

    FIELDS = ("step", "epoch", "variant", "loss", "lr", "seconds")

    def __init__(self, folder: Path, start: int, enabled: bool) -> None:
        self.enabled = enabled
        self.losses: dict[str, array] = defaultdict(lambda: array("f"))  # this run's losses, for the summary
        if not enabled:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.path, self.val_path = folder / "log.csv", folder / "val.csv"
        for path in (self.path, self.val_path):
            _truncate_after(path, start)
        self.fh = open(self.path, "a", newline="")
        self.writer = csv.writer(self.fh)
        if self.fh.tell() == 0:
            self.writer.writerow(self.FIELDS)
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(folder / "tb"), purge_step=start)

    def step(self, step: int, epoch: float, variant: str, loss: float, lr: float, seconds: float) -> None:
        """Record one optimiser step."""
        self.losses[variant].append(loss)
        if self.enabled:
            self.writer.writerow((step, f"{epoch:.5f}", variant, f"{loss:.6f}", f"{lr:.3e}", f"{seconds:.2f}"))
            self.tb.add_scalar(f"loss/{variant}", loss, step)
            self.tb.add_scalar("lr", lr, step)

    def val(self, step: int, variant: str, psnrs: dict[str, float]) -> None:
        """Record validation PSNR per set for one variant."""
        if not self.enabled:
            return
        new = not self.val_path.exists()
        with open(self.val_path, "a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(("step", "variant", "set", "psnr"))
            for name, value in psnrs.items():
                writer.writerow((step, variant, name, f"{value:.4f}"))
                self.tb.add_scalar(f"val_psnr/{variant}/{name}", value, step)

    def first_last(self) -> tuple[dict[str, float], dict[str, float]]:
        """Mean loss per variant over the first and the last min(20, n // 2) steps of this run."""
        first, last = {}, {}
        for v, values in self.losses.items():
            k = max(1, min(LOSS_WINDOW, len(values) // 2))
            first[v], last[v] = sum(values[:k]) / k, sum(values[-k:]) / k
        return first, last

    def postfix(self) -> dict[str, str]:
        """Running mean loss per variant for the progress bar."""
        recent = {v: values[-LOSS_WINDOW:] for v, values in sorted(self.losses.items()) if values}
        return {f"loss_{v}": f"{sum(q) / len(q):.4f}" for v, q in recent.items()}

    def close(self) -> None:
        """Flush and close the log files."""
        if self.enabled:
            self.fh.close()
            self.tb.close()


def _truncate_after(path: Path, step: int) -> None:
    """Drop rows a killed run logged after the checkpoint it resumes from (atomic rewrite)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [ln for ln in lines[1:] if ln.split(",", 1)[0].isdigit() and int(ln.split(",", 1)[0]) <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(kept))


def _worker_init(_: int) -> None:
    """One OpenCV thread per loader worker (the workers are the parallelism)."""
    import cv2

    cv2.setNumThreads(1)


def make_loader(dataset: Dataset, stream: Stream, start: int, stop: int, total: int, ctx: Dist, workers: int,
                n_stages: int = 1) -> DataLoader:
    """The DataLoader of steps [start, stop): this rank's slice of every global batch, in step order."""
    sampler = StepSampler(stream, start, stop, ctx.rank, ctx.world, n_stages, total)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, worker_init_fn=_worker_init if workers else None,
                      multiprocessing_context="spawn" if workers else None, pin_memory=ctx.device.type == "cuda")


def prepare_model(model: DyNet) -> DyNet:
    """Freeze the three reduce_noise_channel_* convs (unused in forward: no gradient, no DDP hook)."""
    for pname, p in model.named_parameters():
        p.requires_grad_(not pname.startswith("reduce_noise_channel_"))
    return model


def train_step(model: DyNet, fwd: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, torch.Tensor],
               scfg: StageConfig, grad_clip: float, bf16: bool) -> torch.Tensor:
    """One optimiser step: forward (bf16 autocast on CUDA if asked), L1 (on the clamped output if the stage
    says so), backward, optional clipping; returns the detached loss (no device sync)."""
    inp, target = batch
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        out = fwd(inp)
    out = out.float().clamp(0, 1) if scfg.clamp_output else out.float()
    loss = F.l1_loss(out, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    optimizer.step()
    return loss.detach()


def _mean_loss(loss: torch.Tensor, ctx: Dist) -> torch.Tensor:
    if ctx.world > 1:
        loss = loss.clone()
        dist.all_reduce(loss)
        loss /= ctx.world
    return loss


def run_stage(name: str, cfg: TrainConfig, data: StageData, model: DyNet, folder: RunFolder, ctx: Dist,
              max_steps: int | None) -> StageResult:
    """Train stage `name` in `folder` (resuming from its newest checkpoint if any, else from `model`'s weights)
    until its budget or `max_steps`."""
    scfg = cfg.stage(name)
    stream = Stream(scfg, data.epoch_size)
    total = total_steps(scfg, stream)
    model.to(ctx.device)
    prepare_model(model)
    optimizer = make_optimizer(model, scfg)
    resumed = folder.resume(model)
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
    start = 0
    if resumed is not None:
        start = resumed.step
        optimizer.load_state_dict(resumed.state["optimizer"])
        if ema is not None and resumed.state.get("ema") is not None:
            ema.model.load_state_dict(resumed.state["ema"])
        torch.set_rng_state(resumed.state["torch_rng"])
    stop = total if max_steps is None else min(total, max_steps)
    if scfg.schedule == "warmup_cosine" and stream.steps_for(scfg.cosine_epochs) < total and ctx.main:
        log.warning("%s: the cosine schedule reaches lr 0 at step %d of %d (cosine_epochs=%g < the budget); "
                    "set %s.cosine_epochs to at least the budget to train at lr > 0 throughout", name,
                    stream.steps_for(scfg.cosine_epochs), total, scfg.cosine_epochs, name)
    torch.backends.cudnn.benchmark = ctx.device.type == "cuda"
    result = StageResult(name, start, total, 0.0, 0, folder=folder.root)
    if start >= stop:
        result.final = folder.final if folder.final.exists() else None
        return result
    net: nn.Module = model
    if ctx.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                                  else None)
    fwd = torch.compile(net) if cfg.compile else net
    logs = Logs(folder.root, start, ctx.main)
    meta = {"stage": name, "trained_variant": scfg.variant, "config_hash": config_hash(cfg),
            "data_fingerprint": data.fingerprint}
    eval_model = ema.model if ema is not None else model

    def state() -> dict[str, Any]:
        return {"optimizer": optimizer.state_dict(), "ema": ema.model.state_dict() if ema else None,
                "torch_rng": torch.get_rng_state()}

    def run_validation(step: int) -> None:
        if not (ctx.main and data.val):
            return
        for variant in val_variants(scfg):
            psnrs = validate(eval_model.set_variant(variant), data.val, ctx.device)
            logs.val(step, variant, psnrs)
            result.first_val.setdefault(variant, psnrs)
            result.last_val[variant] = psnrs

    started = time.time()
    model.train()
    if start == 0:
        run_validation(0)
    bar = tqdm(total=total, initial=start, desc=name, unit="it", disable=not ctx.main, dynamic_ncols=True)
    step, pending = start, []
    for inp, target in make_loader(data.dataset, stream, start, stop, total, ctx, cfg.workers, data.n_stages):
        variant = variant_at(scfg, cfg.seed, step)
        model.set_variant(variant)
        lr = lr_at(scfg, stream, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = inp.to(ctx.device, non_blocking=True), target.to(ctx.device, non_blocking=True)
        loss = train_step(model, fwd, optimizer, batch, scfg, cfg.grad_clip, cfg.precision == "bf16")
        if ema is not None:
            ema.update(model)
        step += 1
        pending.append((step, stream.epoch(step), variant, _mean_loss(loss, ctx), lr, time.time() - started))
        bar.update(1)
        if step % cfg.log_every == 0 or step == stop:  # one device sync per log interval, every step logged
            for row in pending:
                logs.step(*row[:3], float(row[3]), *row[4:])
            pending = []
            bar.set_postfix(logs.postfix(), refresh=False)
        if step % cfg.val_every == 0 or step == total:
            run_validation(step)
        if ctx.main and (step % cfg.ckpt_every == 0 or step == stop):
            folder.save(model, state(), step, cfg.keep_last, {**meta, "step": str(step)})
        if step == total and ctx.main:
            eval_model.set_variant("S" if scfg.variant == "S" else "L")
            save_checkpoint(eval_model, folder.final, config_hash=meta["config_hash"], extra={**meta, "step": str(step)})
    bar.close()
    logs.close()
    if ctx.world > 1:
        dist.barrier()
    result.step, result.steps_run, result.seconds = step, step - start, time.time() - started
    result.first_loss, result.last_loss = logs.first_last()
    result.final = folder.final if folder.final.exists() else None
    return result
