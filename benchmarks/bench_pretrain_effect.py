"""Does dynamic pre-training help fine-tuning? (A) pre-train P steps, then fine-tune K steps from its final
weights; (B) fine-tune the same K steps from scratch; same seed and settings, a narrow DyNet on the CPU.

    python -m benchmarks.bench_pretrain_effect --data STORE [--width 8] [--pretrain-steps P]
        [--finetune-steps K] [--out DIR] [--threads 2] [--batch-size B] [--crop C] [--set KEY=VALUE ...]

Both runs go through the real trainer (`dynet_ref.train.main`) with `--variant dynamic` (so one run scores S
and L), `--set pretrain.steps=P --set finetune.steps=K --set finetune.epochs=null`, into OUT/A and OUT/B.
The store's train.yaml applies as in the trainer (the demo store's: lr 1e-3, batch 4, crop 48). Because a
step budget does not move an epoch-based schedule, the fine-tuning warm-up/cosine is rescaled to the K steps
with the reference's shape (warm-up 15/120 and cosine end 150/120 of the budget) unless `--schedule store`.
Printed: validation PSNR per variant and set at the start and end of fine-tuning for A and B (from the run
folders' summary.json) with A - B, and `dynet_ref.evaluate.evaluate` on the stores' test pairs for both
final checkpoints. Defaults finish in about 5 minutes on 2 CPU cores on the demo store.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from dynet_ref import train
from dynet_ref.checkpoints import load_model
from dynet_ref.evaluate import Protocol, evaluate
from dynet_ref.index import find_stores, read_pairs
from dynet_ref.model import to_channels_last
from dynet_ref.runstate import RunFolder

WARMUP_SHARE, COSINE_SHARE = 15 / 120, 150 / 120  # the reference fine-tuning: warm-up 15, cosine to 150, stop 120
VARIANTS = ("S", "L")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_pretrain_effect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="a dataset store (or a folder of stores)")
    p.add_argument("--width", type=int, default=8, help="DyNet width [default: 8]")
    p.add_argument("--pretrain-steps", type=int, default=250, help="P: pre-training steps of run A [default: 250]")
    p.add_argument("--finetune-steps", type=int, default=150, help="K: fine-tuning steps of A and B [default: 150]")
    p.add_argument("--out", type=Path, help="parent of the run folders A/ and B/ [default: a temporary folder, "
                                            "removed at the end]; an existing one is resumed, not retrained")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads [default: 2]")
    p.add_argument("--seed", type=int, default=0, help="trainer seed, the same for A and B [default: 0]")
    p.add_argument("--batch-size", type=int, help="both stages' batch [default: the store's train.yaml / paper]")
    p.add_argument("--crop", type=int, help="both stages' crop [default: the store's train.yaml / paper]")
    p.add_argument("--schedule", choices=("scaled", "store"), default="scaled",
                   help="fine-tuning LR schedule: rescaled to K steps, or as configured [default: scaled]")
    p.add_argument("--no-store-config", action="store_true", help="ignore the store's train.yaml")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="extra trainer --set, applied to both runs (repeatable)")
    return p


def common_args(a: argparse.Namespace) -> list[str]:
    """Trainer flags shared by A and B."""
    args = ["--data", str(a.data), "--width", str(a.width), "--device", "cpu", "--threads", str(a.threads),
            "--workers", "0", "--seed", str(a.seed), "--variant", "dynamic", "--val-every", str(10**9),
            "--ckpt-every", str(10**9), "--set", f"pretrain.steps={a.pretrain_steps}",
            "--set", f"finetune.steps={a.finetune_steps}", "--set", "finetune.epochs=null"]
    for flag, value in (("--batch-size", a.batch_size), ("--crop", a.crop)):
        if value is not None:
            args += [flag, str(value)]
    if a.no_store_config:
        args.append("--no-store-config")
    for text in a.sets:
        args += ["--set", text]
    return args


def scaled_schedule(args: list[str], steps: int) -> tuple[list[str], str]:
    """--set flags that fit the fine-tuning warm-up/cosine to `steps` steps, and a line describing them."""
    parsed = train.parse_args([*args, "--stage", "finetune"])
    cfg, _ = train.resolve_config(parsed, find_stores(parsed.data))
    scfg = cfg.finetune
    epoch = train.stage_data("finetune", cfg, find_stores(parsed.data)).epoch_size
    budget = steps * scfg.batch_size / epoch
    warm, cos = WARMUP_SHARE * budget, COSINE_SHARE * budget
    note = (f"fine-tuning: {scfg.optimizer} lr {scfg.lr:g}, batch {scfg.batch_size}, crop {scfg.crop}, epoch "
            f"{epoch} items, K = {steps} steps = {budget:.2f} epochs; {scfg.schedule} rescaled: warm-up "
            f"{warm:.3f} epochs, cosine to 0 at {cos:.3f} epochs (was {scfg.warmup_epochs:g} / {scfg.cosine_epochs:g})")
    if scfg.schedule != "warmup_cosine":
        return [], note.split("; ")[0] + f"; {scfg.schedule} schedule"
    return ["--set", f"finetune.warmup_epochs={warm:.6f}", "--set", f"finetune.cosine_epochs={cos:.6f}"], note


def run_trainer(argv: list[str], label: str) -> tuple[float, str]:
    """Run `python -m dynet_ref.train ARGV` in-process (its report captured); (seconds, report)."""
    buf = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        code = train.main(argv)
    seconds = time.perf_counter() - start
    if code != 0:
        print(buf.getvalue())
        raise SystemExit(f"{label}: the trainer exited with {code}: python -m dynet_ref.train {' '.join(argv)}")
    return seconds, buf.getvalue()


def summary(out: Path) -> dict[str, dict[str, Any]]:
    """The run folder's summary.json results by stage name."""
    return {r["name"]: r for r in json.loads((out / "summary.json").read_text())["results"]}


def fmt(x: float | None) -> str:
    """A PSNR cell."""
    return f"{x:7.2f}" if x is not None else f"{'-':>7}"


def delta(a: float | None, b: float | None) -> str:
    """A - B cell."""
    return f"{a - b:+7.2f}" if a is not None and b is not None else f"{'-':>7}"


def print_validation(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Fine-tuning validation PSNR per variant and set: start and end, A beside B."""
    print(f"{'variant':<7} {'set':<16} {'A start':>7} {'B start':>7} {'A end':>7} {'B end':>7} {'A-B end':>7}")
    for v in VARIANTS:
        sets = sorted(set(a["last_val"].get(v, {})) | set(b["last_val"].get(v, {})), key=lambda s: (s == "mean", s))
        for s in sets:
            cells = [r[k].get(v, {}).get(s) for r, k in ((a, "first_val"), (b, "first_val"), (a, "last_val"),
                                                         (b, "last_val"))]
            print(f"{v:<7} {s:<16} {' '.join(fmt(c) for c in cells)} {delta(cells[2], cells[3])}")


def print_losses(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Running L1 over the first and last 20 fine-tuning steps per variant."""
    for v in VARIANTS:
        cells = [r[k].get(v) for r, k in ((a, "first_loss"), (b, "first_loss"), (a, "last_loss"), (b, "last_loss"))]
        print(f"  L1 loss {v}: first 20 steps A {cells[0]:.4f} B {cells[1]:.4f}; last 20 A {cells[2]:.4f} "
              f"B {cells[3]:.4f}" if None not in cells else f"  L1 loss {v}: -")


def print_test(results: dict[str, dict[str, Any]]) -> None:
    """Test-pair PSNR/SSIM per variant and set for A and B with A - B."""
    print(f"{'variant':<7} {'set':<22} {'A PSNR':>7} {'B PSNR':>7} {'A-B':>7} {'A SSIM':>7} {'B SSIM':>7} {'images':>6}")
    for v in VARIANTS:
        ra, rb = results["A"][v], results["B"][v]
        for s, ta in ra["tasks"].items():
            tb = rb["tasks"][s]
            print(f"{v:<7} {s:<22} {fmt(ta['psnr'])} {fmt(tb['psnr'])} {delta(ta['psnr'], tb['psnr'])} "
                  f"{ta['ssim']:7.4f} {tb['ssim']:7.4f} {ta['images']:6d}")
        aa, ab = ra["average"], rb["average"]
        print(f"{v:<7} {'average over sets':<22} {fmt(aa['psnr'])} {fmt(ab['psnr'])} {delta(aa['psnr'], ab['psnr'])} "
              f"{aa['ssim']:7.4f} {ab['ssim']:7.4f}")


def run(a: argparse.Namespace, out: Path, argv: list[str]) -> None:
    """Train A and B, then print validation and test figures."""
    torch.set_num_threads(a.threads)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"command: python -m benchmarks.bench_pretrain_effect {' '.join(argv)}")
    print(f"torch {torch.__version__}, torch threads {torch.get_num_threads()} (--threads {a.threads}), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {os.cpu_count()} CPUs, load average {load}")
    common = common_args(a)
    extra, note = scaled_schedule(common, a.finetune_steps)
    print(note if a.schedule == "scaled" else f"fine-tuning schedule as configured (--schedule store); {note}")
    common += extra if a.schedule == "scaled" else []
    runs = {"A": [*common, "--stage", "all", "--out", str(out / "A")],
            "B": [*common, "--stage", "finetune", "--out", str(out / "B")]}
    seconds = {}
    for name, argv_run in runs.items():
        seconds[name], _ = run_trainer(argv_run, name)
        print(f"{name}: {seconds[name]:.0f} s: python -m dynet_ref.train {' '.join(argv_run)}", flush=True)
    sa, sb = summary(out / "A"), summary(out / "B")
    pre = sa["pretrain"]
    print(f"\nA pre-training: {pre['step']}/{pre['total']} steps in {pre['seconds']:.0f} s; validation PSNR "
          + "; ".join(f"{v} {pre['first_val'].get(v, {}).get('mean', float('nan')):.2f} -> "
                      f"{pre['last_val'].get(v, {}).get('mean', float('nan')):.2f}" for v in VARIANTS))
    fa, fb = sa["finetune"], sb["finetune"]
    print(f"fine-tuning: A {fa['step']}/{fa['total']} steps in {fa['seconds']:.0f} s, B {fb['step']}/{fb['total']} "
          f"in {fb['seconds']:.0f} s (both --variant dynamic)")
    print("\nvalidation PSNR (dB, held-out train images, RGB, clamped) at fine-tuning start (step 0) and end:")
    print_validation(fa, fb)
    print_losses(fa, fb)
    rows = read_pairs(find_stores(a.data), "test")
    if not rows:
        print("\ntest pairs: none in the store (run `million-ird splits`); evaluate skipped")
        return
    results = {}
    for name in ("A", "B"):
        model = to_channels_last(load_model(RunFolder(out / name / "finetune").final, variant="L", width=a.width))
        results[name] = evaluate(model, rows, VARIANTS, Protocol(), "cpu", progress=False).results()
    print(f"\ntest pairs ({len(rows)}), dynet_ref.evaluate reference protocol, final fine-tuning weights:")
    print_test(results)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    argv = sys.argv[1:] if argv is None else argv
    a = _parser().parse_args(argv)
    with contextlib.ExitStack() as stack:
        out = a.out or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-pretrain-effect-")))
        if a.out is not None and any((out / n / "summary.json").exists() for n in ("A", "B")):
            print(f"note: {out} holds earlier runs; finished stages are resumed (not retrained) and their "
                  "times are not this run's")
        run(a, out, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
