"""Training speed: seconds per iteration of DyNet-L, DyNet-S and the dynamic schedule on one set of
weights, and the trainer's loader throughput (crops/s per worker) for pre-training and fine-tuning.

    python -m benchmarks.bench_train                          # CPU: width 16, batch 4, crop 64; loader 0,1,2 workers
    python -m benchmarks.bench_train --device cuda --compile  # the paper's batch 32 at 128², width 48, fp32 + bf16
    python -m benchmarks.bench_train --data STORE             # loader over a real store (else a temporary one
                                                              # of realistic 512² PNG patches)

Part a mirrors the body of `dynet_ref.loop.run_stage` (set_variant, autocast around the forward only, L1 in
float, zero_grad, backward, Adam step, the per-step loss read) on random tensors already on the device; the
dynamic run draws L or S per step with `dynet_ref.loop.variant_at` (p = 0.5). Part b iterates a real
DataLoader built by `dynet_ref.loop.make_loader` (the trainer's StepSampler, spawn context when workers > 0)
over PretrainDataset (corruption from `with_crop`) and PairDataset (the fine-tuning StageConfig).
Nothing is asserted; the targets are printed beside the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pickle
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import torch

import degradations
from dynet_ref.config import FINETUNE, PRETRAIN, StageConfig, TrainConfig, update, with_crop
from dynet_ref.data import PairDataset, PretrainDataset, Stream
from dynet_ref.index import find_stores, read_pairs, read_patches, read_rgb8
from dynet_ref.loop import Dist, make_loader, make_optimizer, prepare_model, train_step, variant_at
from dynet_ref.model import DyNet
from million_ird.schema import PAIRS, PATCHES
from million_ird.store import Store

STEP_STAGE = StageConfig(clamp_output=False)  # pre-training's loss: L1 on the raw output

GOAL_ITS = 11.6  # dynamic it/s on one H100/H200 for 1M iterations in ~24 h
GOAL_LOADER = 150.0  # pre-training crops/s per worker on this CPU
PAPER_ITERS = 1_000_000
PAIR_SIZES = {"denoise": (320, 480), "derain": (321, 481), "dehaze": (413, 550)}  # (h, w): BSD/WED, Rain100L, SOTS


@dataclass(frozen=True)
class StepBench:
    """What part a times."""

    device: str
    width: int
    batch: int
    crop: int
    steps: int
    warmup: int
    seed: int = 0


@dataclass(frozen=True)
class Timing:
    """Per-step seconds of one schedule, and the variant of each timed step."""

    seconds: tuple[float, ...]
    variants: tuple[str, ...]

    @property
    def median(self) -> float:
        """Median seconds per iteration."""
        return statistics.median(self.seconds)

    @property
    def mean(self) -> float:
        """Mean seconds per iteration (what a run's wall time is made of)."""
        return statistics.fmean(self.seconds)

    def of(self, variant: str) -> list[float]:
        """Seconds of the steps that ran `variant`."""
        return [s for s, v in zip(self.seconds, self.variants, strict=True) if v == variant]


def header(title: str, argv: Sequence[str], threads: int) -> None:
    """Print a part's title, the command line, threads and machine load."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n== {title}")
    print(f"command: python -m benchmarks.bench_train {' '.join(argv)}".rstrip())
    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()} (--threads {threads}), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, cv2 threads {cv2.getNumThreads()}, "
          f"{os.cpu_count()} CPUs, load average {load}")


def fresh_model(width: int, device: torch.device, seed: int) -> DyNet:
    """A DyNet with the trainer's trainable set (the three unused reduce_noise_channel_* frozen)."""
    torch.manual_seed(seed)
    return prepare_model(DyNet("L", width=width).to(device)).train()


def time_schedule(model: DyNet, fwd: torch.nn.Module, optimizer: torch.optim.Optimizer, pick: list[str],
                  batch: tuple[torch.Tensor, torch.Tensor], precision: str, warmup: int) -> Timing:
    """Run the trainer's `train_step` once per entry of `pick` (L or S); time all but the first `warmup`."""
    cuda = batch[0].device.type == "cuda"
    seconds = []
    for variant in pick:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        model.set_variant(variant)
        loss = train_step(model, fwd, optimizer, batch, STEP_STAGE, 0.0, precision == "bf16")
        float(loss)  # a device sync, as the trainer does once per log interval
        seconds.append(time.perf_counter() - start)
    return Timing(tuple(seconds[warmup:]), tuple(pick[warmup:]))


def bench_steps(cfg: StepBench, precision: str, compiled: bool) -> dict[str, Timing]:
    """Timings of L, S and the dynamic schedule (p = 0.5), all on the same weights and optimiser."""
    device = torch.device(cfg.device)
    model = fresh_model(cfg.width, device, cfg.seed)
    fwd = torch.compile(model) if compiled else model
    optimizer = make_optimizer(model, PRETRAIN)
    gen = torch.Generator().manual_seed(cfg.seed)
    batch = tuple(torch.rand(cfg.batch, 3, cfg.crop, cfg.crop, generator=gen).to(device) for _ in range(2))
    dynamic = dataclasses.replace(PRETRAIN, variant="dynamic", p_large=0.5)
    n = cfg.warmup + cfg.steps
    out = {v: time_schedule(model, fwd, optimizer, [v] * n, batch, precision, cfg.warmup) for v in ("L", "S")}
    # both graphs are warm now (and compiled, with --compile): one untimed step, then the drawn schedule
    pick = [variant_at(dynamic, cfg.seed, t) for t in range(cfg.steps + 1)]
    out["dynamic"] = time_schedule(model, fwd, optimizer, pick, batch, precision, 1)
    return out


def memory_note(device: torch.device) -> str:
    """Peak GPU memory (CUDA) or peak RSS of this process (CPU)."""
    if device.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"


def dynamic_estimate(t: Timing, p_large: float) -> float:
    """Seconds per dynamic iteration at L-probability `p_large`, from the medians of its L and S steps."""
    med = {v: statistics.median(t.of(v)) if t.of(v) else float("nan") for v in ("L", "S")}
    return p_large * med["L"] + (1 - p_large) * med["S"]


def print_steps(label: str, t: dict[str, Timing]) -> float:
    """One block of part a: per-schedule figures, the dynamic-vs-static comparisons; returns dynamic it/s."""
    lm, sm, dyn = t["L"].median, t["S"].median, t["dynamic"]
    frac = len(dyn.of("L")) / len(dyn.seconds)
    drawn, half = dynamic_estimate(dyn, frac), dynamic_estimate(dyn, 0.5)
    print(f"{label}")
    print(f"  {'schedule':<9} {'s/it':>8} {'mean s/it':>10} {'min s/it':>9} {'it/s':>7} {'steps':>6} {'1M it, h':>9}")
    for name, x, sec in (("L", t["L"], lm), ("S", t["S"], sm), ("dynamic", dyn, half)):
        print(f"  {name:<9} {sec:8.4f} {x.mean:10.4f} {min(x.seconds):9.4f} {1 / sec:7.2f} {len(x.seconds):6d}"
              f" {PAPER_ITERS * sec / 3600:9.1f}")
        print(f"  {'':<9} raw s: {' '.join(f'{v}{s:.3f}' if name == 'dynamic' else f'{s:.3f}' for s, v in zip(x.seconds, x.variants, strict=True))}")
    print("  (L, S: median; dynamic: 0.5·median(its L steps) + 0.5·median(its S steps), robust to load spikes)")
    in_dyn = {v: statistics.median(dyn.of(v)) if dyn.of(v) else float("nan") for v in ("L", "S")}
    print(f"  dynamic drew L on {frac:.0%} of {len(dyn.seconds)} steps; its L steps {in_dyn['L']:.4f} s "
          f"({in_dyn['L'] / lm - 1:+.1%} vs pure L), S steps {in_dyn['S']:.4f} s ({in_dyn['S'] / sm - 1:+.1%} vs pure S); "
          f"as drawn {drawn:.4f} s/it (mean {dyn.mean:.4f}) vs {frac:.2f}·L + {1 - frac:.2f}·S = "
          f"{frac * lm + (1 - frac) * sm:.4f}: {drawn / (frac * lm + (1 - frac) * sm) - 1:+.1%}")
    print(f"  dynamic (p = 0.5) vs mean(L, S) = {(lm + sm) / 2:.4f} s: {half / ((lm + sm) / 2) - 1:+.1%} "
          "(target within ±10%)")
    print(f"  dynamic vs training L and S separately (L + S = {lm + sm:.4f} s per pair of iterations): "
          f"{half / (lm + sm) - 1:+.1%} (paper: -50%); S/L time ratio {sm / lm:.2f} (FLOPs: 5.7/8.3 = 0.69)")
    lo = {v: min(dyn.of(v)) if dyn.of(v) else float("nan") for v in ("L", "S")}
    lo_half, lo_l, lo_s = (lo["L"] + lo["S"]) / 2, min(t["L"].seconds), min(t["S"].seconds)
    print(f"  on per-step minima (least disturbed by other load): dynamic (p = 0.5) {lo_half:.4f} s vs mean(L, S) "
          f"{(lo_l + lo_s) / 2:.4f}: {lo_half / ((lo_l + lo_s) / 2) - 1:+.1%}; vs L + S: {lo_half / (lo_l + lo_s) - 1:+.1%}; "
          f"S/L {lo_s / lo_l:.2f}")
    print(f"  dynamic {1 / half:.2f} it/s -> 1M dynamic iterations in {PAPER_ITERS * half / 3600:.1f} h "
          f"(goal ≥ {GOAL_ITS} it/s, i.e. ≤ {PAPER_ITERS / GOAL_ITS / 3600:.1f} h, on one H100/H200)")
    return 1 / half


def part_a(cfg: StepBench, compiled: bool, argv: Sequence[str], threads: int) -> float | None:
    """Print the iteration timings; return the measured dynamic it/s of the fastest CUDA setting, if any."""
    header("a) seconds per training iteration (forward + backward + Adam, L1, random tensors)", argv, threads)
    print(f"width {cfg.width}, batch {cfg.batch}, crop {cfg.crop}², median of {cfg.steps} steps after {cfg.warmup} "
          f"warm-up (dynamic: mean of {cfg.steps} drawn steps), one set of weights, device {cfg.device}")
    cuda_ok = torch.cuda.is_available()
    best: float | None = None
    if cfg.device == "cuda" and cuda_ok:
        print(f"GPU {torch.cuda.get_device_name()}")
        for precision in ("fp32", "bf16"):
            for comp in (False, True) if compiled else (False,):
                torch.cuda.reset_peak_memory_stats()
                t = bench_steps(cfg, precision, comp)
                mode = f"{precision}, {'torch.compile' if comp else 'eager'}"
                its = print_steps(f"{mode} ({memory_note(torch.device('cuda'))})", t)
                best = max(best or 0.0, its)
        return best
    if cfg.device == "cpu":
        for comp in (False, True) if compiled else (False,):
            t = bench_steps(cfg, "fp32", comp)
            print_steps(f"fp32, {'torch.compile' if comp else 'eager'} ({memory_note(torch.device('cpu'))})", t)
    reason = "no CUDA device visible to torch" if not cuda_ok else "not run (pass --device cuda)"
    print(f"GPU figures (width 48, batch 32, 128², fp32 and bf16 autocast, eager and torch.compile; "
          f"goal ≥ {GOAL_ITS} dynamic it/s): unmeasured, {reason}")
    for precision in ("fp32", "bf16"):
        for mode in ("eager", "torch.compile"):
            print(f"  {precision:<5} {mode:<14} L s/it unmeasured, S s/it unmeasured, dynamic it/s unmeasured, "
                  "1M-iteration hours unmeasured")
    return None


def photo_like(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A uint8 RGB image with smooth multi-scale structure and grain (PNG ~1.75 B/px, like the demo's photos)."""
    img = np.zeros((h, w, 3), np.float32)
    for cells, amp in ((4, 1.0), (16, 0.35), (64, 0.15)):
        low = rng.uniform(0, 255, (cells, cells, 3)).astype(np.float32)
        img += amp * cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    img = img / 1.5 + rng.normal(0, 4.0, (h, w, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _png(root: Path, rel: str, rgb: np.ndarray) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise SystemExit(f"cannot write {path}")
    return rel


def build_temp_store(root: Path, n_patches: int, n_pairs: int, seed: int = 0) -> Store:
    """Kept 512² PNG patches; train pairs: on-the-fly denoise, file-backed derain and dehaze."""
    store, rng = Store(root), np.random.default_rng(seed)
    patches = [{"patch_id": f"img{i}_0_0", "image_id": f"img{i}", "x": 0, "y": 0, "size": 512, "flat_ratio": 0.0,
                "kept": True, "path": _png(root, f"files/patches/p{i}.png", photo_like(rng, 512, 512))}
               for i in range(n_patches)]
    store.append("patches", pa.Table.from_pylist(patches, schema=PATCHES))
    pairs = []
    for task, (h, w) in PAIR_SIZES.items():
        for i in range(n_pairs):
            clean = photo_like(rng, h, w)
            row = {"pair_id": f"bench/train/{task}/{i}", "recipe": "bench", "split": "train", "task": task,
                   "clean": _png(root, f"files/clean/{task}{i}.png", clean), "degraded": None}
            if task == "denoise":
                sigma = (15.0, 25.0, 50.0)[i % 3]
                row.update(degradation="gaussian_noise", sigma=sigma, seed=degradations.sample_seed(0, row["pair_id"], "n"),
                           params=json.dumps({"args": {"sigma": sigma, "rounding": "truncate"}}))
            else:
                name, args = ("rain", {"preset": "rain100l"}) if task == "derain" else ("haze", {"A": 0.9, "beta": 0.2})
                out, _ = degradations.get(name)(clean, degradations.sample_rng(0, row["pair_id"], name), **args)
                row.update(degraded=_png(root, f"files/{task}/{i}.png", out), params=json.dumps({"source": "bench"}))
            pairs.append(row)
    store.append("pairs", pa.Table.from_pylist(pairs, schema=PAIRS))
    return store


@dataclass(frozen=True)
class LoaderRun:
    """One DataLoader pass: samples after warm-up, their seconds, and the time to the first batch."""

    workers: int
    samples: int
    seconds: float
    startup: float

    @property
    def rate(self) -> float:
        """Steady crops/s (first round of batches excluded)."""
        return self.samples / self.seconds if self.seconds > 0 else float("nan")

    @property
    def per_worker(self) -> float:
        """Crops/s per loading process (the main process when workers = 0)."""
        return self.rate / max(1, self.workers)


def loader_run(dataset: torch.utils.data.Dataset, scfg: StageConfig, workers: int, rounds: int) -> LoaderRun:
    """Iterate the trainer's DataLoader for `rounds` batches per worker after one untimed round."""
    skip = max(1, workers)
    n_batches = skip + rounds * max(1, workers)
    stream = Stream(scfg, len(dataset))
    loader = make_loader(dataset, stream, 0, n_batches, n_batches, Dist(torch.device("cpu")), workers)
    start = time.perf_counter()
    arrivals, sizes = [], []
    for inp, _ in loader:
        arrivals.append(time.perf_counter())
        sizes.append(inp.shape[0])
    return LoaderRun(workers, sum(sizes[skip:]), arrivals[-1] - arrivals[skip - 1], arrivals[0] - start)


def per_sample_ms(dataset: torch.utils.data.Dataset, crop: int, positions: Sequence[int]) -> float:
    """Median in-process milliseconds of dataset[(position, crop, 0)]."""
    times = []
    for p in positions:
        start = time.perf_counter()
        dataset[(p, crop, 0)]
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def loader_datasets(stores: list[Store], crop: int, batch: int,
                    seed: int) -> list[tuple[str, torch.utils.data.Dataset, StageConfig, str, list]]:
    """(name, dataset, stage config, note) for pre-training and fine-tuning, as the trainer builds them."""
    cfg = TrainConfig(seed=seed)
    out = []
    patches = read_patches(stores)
    if patches:
        scfg = update(PRETRAIN, {"crop": crop, "batch_size": batch}, "bench")
        corruption = with_crop(cfg.corruption, crop)
        sizes = sorted({read_rgb8(p.path).shape[:2] for p in patches[:4]})
        out.append(("pretrain", PretrainDataset(patches, seed, corruption), scfg,
                    f"{len(patches)} kept patches, e.g. {sizes}, corruption {corruption.n_masked} masked + "
                    f"{corruption.n_degraded} degraded of {corruption.n_blocks} blocks", patches))
    rows = read_pairs(stores, "train")
    tasks = tuple(t for t in FINETUNE.tasks if any(r.task == t for r in rows))
    if tasks:
        scfg = update(FINETUNE, {"crop": crop, "batch_size": batch, "tasks": list(tasks)}, "bench")
        ds = PairDataset(rows, seed, scfg)
        counts = {t: sum(r.task == t for r in rows) for t in tasks}
        out.append(("finetune", ds, scfg, f"{len(rows)} train pairs {counts}, repeat {dict(scfg.repeat)}, "
                                          f"augment {scfg.augment}, epoch {len(ds)} items", rows))
    return out


def task_costs(name: str, ds: torch.utils.data.Dataset, scfg: StageConfig, crop: int, sources: list,
               seed: int) -> str:
    """In-process ms per sample (per task for fine-tuning; PNG decode alone for pre-training)."""
    if name == "pretrain":
        decode = 1e3 * statistics.median(_timed(read_rgb8, p.path) for p in sources[:8])
        return f"in-process: {per_sample_ms(ds, crop, range(8)):.1f} ms/sample, of which PNG decode {decode:.1f} ms"
    parts = []
    for task in scfg.tasks:
        one = PairDataset([r for r in sources if r.task == task], seed, dataclasses.replace(scfg, tasks=(task,)))
        parts.append(f"{task} {per_sample_ms(one, crop, range(6)):.1f}")
    return "in-process ms/sample by task: " + ", ".join(parts)


def _timed(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def part_b(stores: list[Store], source: str, args: argparse.Namespace, argv: Sequence[str], its: float) -> None:
    """Print loader throughput per worker count for both stages."""
    header("b) loader throughput (the trainer's DataLoader + StepSampler, CPU)", argv, args.threads)
    print(f"data: {source}; crop {args.loader_crop}², batch {args.loader_batch}, {args.loader_rounds} timed batches "
          "per worker after one untimed round; spawn context when workers > 0")
    for name, ds, scfg, note, sources in loader_datasets(stores, args.loader_crop, args.loader_batch, args.seed):
        pickled = len(pickle.dumps(ds))
        print(f"\n{name}: {note}")
        print(f"  {task_costs(name, ds, scfg, args.loader_crop, sources, args.seed)}; dataset pickle {pickled / len(ds):.0f} B per epoch item "
              f"(sent to every spawned worker)")
        print(f"  {'workers':>7} {'crops/s':>8} {'per worker':>10} {'startup s':>9} {'crops':>6}")
        for w in args.workers_list:
            r = loader_run(ds, scfg, w, args.loader_rounds)
            print(f"  {w:>7} {r.rate:8.1f} {r.per_worker:10.1f} {r.startup:9.2f} {r.samples:6d}", flush=True)
            best = r.per_worker
        need = its * 32
        target = f" (target ≥ {GOAL_LOADER:.0f}/worker)" if name == "pretrain" else ""
        print(f"  feeding {its:.1f} it/s at batch 32 needs {need:.0f} crops/s = {need / best:.1f} workers at "
              f"{best:.0f} crops/s/worker (last row){target}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="store (or folder of stores) for part b [default: a temporary "
                                             "store of 512² PNG patches and train pairs]")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="part a device [default: cpu]")
    p.add_argument("--width", type=int, help="DyNet width [default: 16 on cpu, 48 on cuda]")
    p.add_argument("--batch", type=int, help="part a batch [default: 4 on cpu, 32 on cuda]")
    p.add_argument("--crop", type=int, help="part a crop side [default: 64 on cpu, 128 on cuda]")
    p.add_argument("--steps", type=int, help="timed steps per schedule [default: 10 on cpu, 30 on cuda]")
    p.add_argument("--warmup", type=int, help="untimed steps per static schedule [default: 2 on cpu, 5 on cuda]")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads [default: 2]")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (eager is always timed; on a 2-core CPU the "
                                                        "inductor compile alone ran past 8 minutes)")
    p.add_argument("--workers-list", default="0,1,2", help="loader worker counts [default: 0,1,2]")
    p.add_argument("--loader-crop", type=int, default=128, help="loader crop side [default: 128]")
    p.add_argument("--loader-batch", type=int, default=16, help="loader batch [default: 16]")
    p.add_argument("--loader-rounds", type=int, default=6, help="timed batches per worker [default: 6]")
    p.add_argument("--patches", type=int, default=16, help="temporary store: 512² patches [default: 16]")
    p.add_argument("--pairs", type=int, default=6, help="temporary store: train pairs per task [default: 6]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-steps", action="store_true", help="skip part a")
    p.add_argument("--skip-loader", action="store_true", help="skip part b")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    args.workers_list = [int(w) for w in args.workers_list.split(",") if w.strip()]
    gpu = args.device == "cuda"
    cfg = StepBench(args.device if (not gpu or torch.cuda.is_available()) else "none",
                    args.width or (48 if gpu else 16), args.batch or (32 if gpu else 4),
                    args.crop or (128 if gpu else 64), args.steps or (30 if gpu else 10),
                    args.warmup if args.warmup is not None else (5 if gpu else 2), args.seed)
    torch.set_num_threads(args.threads)
    its = None
    if not args.skip_steps:
        its = part_a(cfg, args.compile, argv, args.threads)
    if not args.skip_loader:
        with contextlib.ExitStack() as stack:
            if args.data is not None:
                stores, source = find_stores(args.data), str(args.data)
            else:
                root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-train-")))
                start = time.perf_counter()
                stores = [build_temp_store(root, args.patches, args.pairs, args.seed)]
                source = (f"temporary store of {args.patches} 512² PNG patches and {args.pairs} train pairs per task "
                          f"{ {t: f'{w}x{h}' for t, (h, w) in PAIR_SIZES.items()} } "
                          f"(built in {time.perf_counter() - start:.1f} s)")
            part_b(stores, source, args, argv, its or GOAL_ITS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
