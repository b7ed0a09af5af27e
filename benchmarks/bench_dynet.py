"""DyNet speed: CPU ms per image (S and L, eager / channels_last / torch.compile), peak RSS,
optionally the authors' code side by side (--reference), and GPU bf16 images/s (--device cuda).

    python benchmarks/bench_dynet.py                      # CPU, 224 and 512, 2 threads, median of 5
    python benchmarks/bench_dynet.py --reference DIR      # DIR/net/DyNet_{small,large}.py (needs einops)
    python benchmarks/bench_dynet.py --device cuda        # bf16 autocast, 256², batch 16
    python benchmarks/bench_dynet.py --tiled 256          # peak RSS whole vs --tile 256 at 1024² (S)
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dynet_ref.model import DyNet, to_channels_last

REFERENCE_FILES = {"S": ("DyNet_small.py", "DyNet_small"), "L": ("DyNet_large.py", "DyNet_large")}


@dataclass(frozen=True)
class BenchConfig:
    """What to time."""

    variants: tuple[str, ...] = ("S", "L")
    sizes: tuple[int, ...] = (224, 512)
    repeats: int = 5
    threads: int = 2
    modes: tuple[str, ...] = ("eager", "channels_last")
    reference: Path | None = None
    device: str = "cpu"
    batch: int = 16
    gpu_size: int = 256
    tiled: int | None = None
    tiled_size: int = 1024


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1, sync: bool = False) -> float:
    """Median wall time of `fn` over `repeats` calls after `warmup` untimed calls."""
    times = []
    for i in range(warmup + repeats):
        if sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_reference(directory: Path, variant: str, state: dict[str, torch.Tensor]) -> nn.Module:
    """Import the authors' DyNet class from DIR/net/*.py, build it with prompts and load `state`."""
    filename, cls_name = REFERENCE_FILES[variant]
    path = directory / "net" / filename
    if not path.is_file():
        raise SystemExit(
            f"--reference {directory}: {path} not found (expected the authors' repo layout net/{filename})"
        )
    spec = importlib.util.spec_from_file_location(f"dynet_reference_{variant}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except ImportError as err:
        raise SystemExit(f"--reference: {path} needs {err.name}; pip install {err.name}") from err
    ref = getattr(module, cls_name)(decoder=True).eval()
    ref.load_state_dict(state, strict=True)
    return ref


def _runner(model: nn.Module, mode: str, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A zero-argument forward for one optimisation mode."""
    if mode == "eager":
        return lambda: model(x)
    if mode == "channels_last":
        model_cl = to_channels_last(model)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        return lambda: model_cl(x_cl)
    if mode == "compile":
        compiled = torch.compile(model, dynamic=False)
        return lambda: compiled(x)
    raise SystemExit(f"--modes: unknown mode {mode!r}; use eager, channels_last or compile")


def cpu_bench(cfg: BenchConfig) -> None:
    """Print ms/image for every variant × size × mode (and the reference code when given)."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    model = DyNet("S").eval()
    print(f"CPU, {cfg.threads} threads, median of {cfg.repeats}, torch {torch.__version__}")
    print(
        f"{'variant':>7} {'size':>5} {'mode':>14} {'ms/img':>9} {'vs ref':>7} {'max|Δ| ref':>11} {'peak RSS MiB':>12}"
    )
    for size in cfg.sizes:
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
        for variant in cfg.variants:
            model.set_variant(variant)
            ref_s, ref_out = None, None
            with torch.inference_mode():
                if cfg.reference is not None:
                    ref = load_reference(cfg.reference, variant, model.state_dict())
                    ref_out = ref(x)
                    ref_s = median_seconds(lambda ref=ref, x=x: ref(x), cfg.repeats, warmup=0)
                    print(
                        f"{variant:>7} {size:>5} {'reference':>14} {ref_s * 1e3:9.0f} {'1.00x':>7} {'':>11} {peak_rss_mb():12.0f}"
                    )
                for mode in cfg.modes:
                    fresh = DyNet(variant).eval()
                    fresh.load_state_dict(model.state_dict())
                    run = _runner(fresh, mode, x)
                    out = run()
                    secs = median_seconds(run, cfg.repeats, warmup=1 if mode == "compile" else 0)
                    speed = f"{ref_s / secs:6.2f}x" if ref_s else f"{'-':>7}"
                    diff = (
                        f"{(out - ref_out).abs().max().item():11.2e}" if ref_out is not None else f"{'-':>11}"
                    )
                    print(
                        f"{variant:>7} {size:>5} {mode:>14} {secs * 1e3:9.0f} {speed} {diff} {peak_rss_mb():12.0f}",
                        flush=True,
                    )


CHILD = """
import resource, sys, time, torch
from dynet_ref.model import DyNet
from dynet_ref.tiled import tiled_forward
variant, size, tile, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = DyNet(variant).eval()
x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
with torch.inference_mode():
    out = model(x) if tile == 0 else tiled_forward(model, x, tile)
secs = time.perf_counter() - start
torch.save(out, sys.argv[5])
print(base / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, secs)
"""


def _memory_child(variant: str, size: int, tile: int, threads: int, out: Path) -> tuple[float, float, float]:
    """Run one forward in a fresh process; return (RSS before, peak RSS) in MiB and seconds."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, variant, str(size), str(tile), str(threads), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"--tiled: child process failed:\n{done.stderr[-2000:]}")
    base, peak, secs = map(float, done.stdout.split()[-3:])
    return base, peak, secs


def tiled_bench(cfg: BenchConfig, workdir: Path) -> None:
    """Print peak RSS and time of whole-image vs exact tiled inference, and their max |Δ|."""
    assert cfg.tiled is not None
    print(f"CPU, {cfg.threads} threads, {cfg.tiled_size}² image, full-width model, one process per run")
    print(f"{'variant':>7} {'run':>10} {'s':>7} {'RSS before MiB':>15} {'peak RSS MiB':>13} {'max|Δ|':>9}")
    for variant in cfg.variants:
        outs = []
        for tile in (0, cfg.tiled):
            path = workdir / f"{variant}_{tile}.pt"
            base, peak, secs = _memory_child(variant, cfg.tiled_size, tile, cfg.threads, path)
            outs.append(torch.load(path, weights_only=True))
            diff = f"{(outs[-1] - outs[0]).abs().max().item():9.1e}" if tile else f"{'-':>9}"
            name = f"tile {tile}" if tile else "whole"
            print(f"{variant:>7} {name:>10} {secs:7.1f} {base:15.0f} {peak:13.0f} {diff}", flush=True)


def gpu_bench(cfg: BenchConfig) -> None:
    """Print bf16-autocast images/s at gpu_size² batch `batch` for each variant and the S/L ratio."""
    if not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to torch")
    torch.backends.cudnn.benchmark = True
    model = to_channels_last(DyNet("S").cuda().eval())
    x = torch.rand(cfg.batch, 3, cfg.gpu_size, cfg.gpu_size, device="cuda").contiguous(
        memory_format=torch.channels_last
    )
    print(
        f"GPU {torch.cuda.get_device_name()}, bf16 autocast, {cfg.gpu_size}² batch {cfg.batch}, torch {torch.__version__}"
    )
    rates: dict[tuple[str, str], float] = {}
    for mode in [m for m in cfg.modes if m in ("eager", "compile")] or ["eager"]:
        for variant in cfg.variants:
            model.set_variant(variant)
            net = torch.compile(model, dynamic=False) if mode == "compile" else model
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                secs = median_seconds(lambda net=net: net(x), max(cfg.repeats, 10), warmup=3, sync=True)
            rates[(mode, variant)] = cfg.batch / secs
            mem = torch.cuda.max_memory_allocated() / 2**30
            print(
                f"{mode:>8} DyNet-{variant}: {cfg.batch / secs:8.1f} images/s ({secs * 1e3:.1f} ms/batch, peak {mem:.1f} GiB)",
                flush=True,
            )
        if (mode, "S") in rates and (mode, "L") in rates:
            print(
                f"{mode:>8} S/L speed ratio {rates[(mode, 'S')] / rates[(mode, 'L')]:.2f} (FLOPs predict 1.46)"
            )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variants", nargs="+", default=["S", "L"], choices=["S", "L"], help="depths to time (default S L)"
    )
    parser.add_argument(
        "--sizes", nargs="+", type=int, default=[224, 512], help="CPU square image sides (default 224 512)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs per case; the median is printed (default 5)"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["eager", "channels_last"],
        help="eager, channels_last, compile (default eager channels_last)",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="authors' repo checkout; times net/DyNet_{small,large}.py side by side",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="cpu timings or cuda bf16 throughput (default cpu)",
    )
    parser.add_argument("--batch", type=int, default=16, help="GPU batch size (default 16)")
    parser.add_argument("--gpu-size", type=int, default=256, help="GPU square image side (default 256)")
    parser.add_argument(
        "--tiled",
        type=int,
        default=None,
        metavar="TILE",
        help="instead of timings: peak RSS of whole vs exact tiled inference with this tile (e.g. 256)",
    )
    parser.add_argument(
        "--tiled-size", type=int, default=1024, help="square image side for --tiled (default 1024)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    a = _parser().parse_args(argv)
    cfg = BenchConfig(
        tuple(a.variants),
        tuple(a.sizes),
        a.repeats,
        a.threads,
        tuple(a.modes),
        a.reference,
        a.device,
        a.batch,
        a.gpu_size,
        a.tiled,
        a.tiled_size,
    )
    if cfg.tiled is not None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            tiled_bench(cfg, Path(tmp))
    elif cfg.device == "cuda":
        gpu_bench(cfg)
    else:
        cpu_bench(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
