"""Train DyNet on dataset stores: dynamic pre-training on kept patches, then all-in-one fine-tuning.

`python -m dynet_ref.train --data PATH [--stage pretrain|finetune|all] [--out DIR] [--max-steps N] ...`

PATH is a store or a folder holding stores (`manifests/` finds the demo store `manifests/demo/store/`
that `million-ird demo` builds). The config is built from the built-in defaults (the paper's settings,
see dynet_ref.config), then the first store's own `train.yaml` if it has one (the demo store's makes a
short smoke run), then each `--config YAML`, then `--set KEY=VALUE`, then the named flags. Re-running the
same command on the same --out resumes from the last checkpoint; settings that change the data stream
must then be unchanged. `--max-steps N` stops a stage after N steps without changing its schedule.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from degradations.registry import DegradationError
from dynet_ref.checkpoints import CheckpointError, load_into, load_state_dict
from dynet_ref.config import (
    STAGES,
    TASKS,
    VARIANT_CHOICES,
    ConfigError,
    TrainConfig,
    apply_sets,
    apply_yaml,
    update,
    with_crop,
)
from dynet_ref.data import PairDataset, PretrainDataset
from dynet_ref.index import DataError, find_stores, fingerprint, read_pairs, read_patches
from dynet_ref.loop import Dist, StageData, StageResult, run_stage
from dynet_ref.model import DyNet
from dynet_ref.runstate import RunFolder
from dynet_ref.validation import holdout_pairs, holdout_patches, pair_samples, patch_samples
from million_ird.store import TRAINING_DIR, Store, plain, utc_now, write_json_atomic
from million_ird.summary import format_table

log = logging.getLogger(__name__)
STORE_CONFIG = "train.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags (every one explained in --help)."""
    p = argparse.ArgumentParser(prog="python -m dynet_ref.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="A dataset store, or a folder that holds stores.")
    p.add_argument("--stage", choices=("pretrain", "finetune", "all"), default="all",
                   help="pretrain (kept patches), finetune (train pairs) or all: the paper's pipeline, "
                        "pre-training then fine-tuning from its final weights [default: all].")
    p.add_argument("--out", type=Path, help="Run folder [default: FIRST_STORE/training/default]; the same "
                                            "--out again resumes.")
    p.add_argument("--config", type=Path, action="append", default=[], help="YAML file of config values "
                                                                            "(repeatable, applied in order).")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="Any config value, e.g. --set finetune.lr=1e-4 --set ema=0.999 (repeatable).")
    p.add_argument("--no-store-config", action="store_true", help=f"Ignore the store's own {STORE_CONFIG}.")
    p.add_argument("--max-steps", type=int, help="Stop each stage after this many steps in all (resumable; "
                                                 "the schedule is unchanged).")
    p.add_argument("--init", type=Path, help="Fine-tuning: start from these weights (ours or the authors' .ckpt) "
                                             "[default with --stage finetune: from scratch].")
    p.add_argument("--variant", choices=VARIANT_CHOICES, help="Fine-tuning depth: L, S, or dynamic (one run "
                                                              "serves both; our extension) [default: L].")
    p.add_argument("--tasks", help=f"Fine-tuning tasks, comma list of {', '.join(TASKS)} [default: all three].")
    p.add_argument("--mix", choices=("mixed", "sequential"), help="Fine-tuning: tasks mixed in every epoch, or "
                                                                  "sequential (MiOIR curriculum, --tasks order).")
    p.add_argument("--width", type=int, help="Network width (48 = the paper's; 8 or 16 for smoke runs).")
    p.add_argument("--batch-size", type=int, help="Global batch size of the stage(s) run.")
    p.add_argument("--crop", type=int, help="Training crop side of the stage(s) run (multiple of 16).")
    p.add_argument("--seed", type=int, help="Global seed of sample order, crops, degradations and L/S choices.")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N [default: auto = cuda when available].")
    p.add_argument("--precision", choices=("fp32", "bf16"), help="bf16 autocast on CUDA [default: fp32].")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the training forward.")
    p.add_argument("--ema", type=float, help="EMA decay of the weights, e.g. 0.999 (0: off) [default: 0].")
    p.add_argument("--grad-clip", type=float, help="Clip the gradient norm to this (0: off) [default: 0].")
    p.add_argument("--workers", type=int, help="DataLoader worker processes per rank [default: 2].")
    p.add_argument("--threads", type=int, help="torch CPU threads per rank (0: torch's default) [default: 0].")
    p.add_argument("--val-every", type=int, help="Validate every N steps [default: 5000].")
    p.add_argument("--ckpt-every", type=int, help="Checkpoint every N steps [default: 5000].")
    p.add_argument("--print-config", action="store_true", help="Print the resolved config and exit.")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in run.json
    return args


def resolve_config(args: argparse.Namespace, stores: list[Store]) -> tuple[TrainConfig, list[str]]:
    """Defaults, then the store's train.yaml, then --config files, then --set, then flags."""
    cfg, sources = TrainConfig(), ["built-in defaults"]
    store_yaml = stores[0].root / STORE_CONFIG
    for path in ([store_yaml] if store_yaml.is_file() and not args.no_store_config else []) + args.config:
        cfg = apply_yaml(cfg, path)
        sources.append(str(path))
    cfg = apply_sets(cfg, args.sets)
    top = {k: getattr(args, k) for k in ("width", "seed", "device", "precision", "compile", "ema", "grad_clip",
                                         "workers", "threads", "val_every", "ckpt_every")
           if getattr(args, k) is not None}
    stage_flags = {k: v for k, v in (("batch_size", args.batch_size), ("crop", args.crop)) if v is not None}
    finetune = {k: v for k, v in (("variant", args.variant), ("mix", args.mix),
                                  ("tasks", tuple(t.strip() for t in args.tasks.split(",")) if args.tasks else None))
                if v is not None}
    stages = STAGES if args.stage == "all" else (args.stage,)
    values: dict = {**top, **{s: dict(stage_flags) for s in stages}}
    values.setdefault("finetune", {}).update(finetune)
    values = {k: v for k, v in values.items() if v != {}}
    if values:
        cfg = update(cfg, values, "flags")
        sources.append("flags")
    return cfg, sources


def pick_device(name: str, local_rank: int) -> torch.device:
    """The torch device for `name` (auto: this rank's CUDA device when present, else CPU)."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device here; use --device cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def start_distributed(cfg: TrainConfig) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(cfg.device, local_rank)
    if cfg.precision == "bf16" and device.type != "cuda":
        raise ConfigError("--precision bf16 is for CUDA; use fp32 on the CPU")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if world == 1:
        return Dist(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(device, dist.get_rank(), dist.get_world_size())


def stage_data(name: str, cfg: TrainConfig, stores: list[Store]) -> StageData:
    """Index, hold out validation and build the dataset of one stage; one-line errors when data is missing."""
    where = ", ".join(str(s.root) for s in stores)
    if name == "pretrain":
        patches = read_patches(stores)
        if not patches:
            raise DataError(f"no kept patches in {where}; run `million-ird patches --manifest STORE` first "
                            "(pre-training reads them)")
        train, val = holdout_patches(patches, cfg.val_per_task, cfg.seed, cfg.val_holdout)
        if not train:
            raise DataError(f"{len(patches)} kept patches in {where}, all held out for validation; "
                            "lower val_per_task (--set val_per_task=N) or add patches")
        corruption = with_crop(cfg.corruption, cfg.pretrain.crop)
        return StageData(PretrainDataset(train, cfg.seed, corruption), len(train),
                         patch_samples(val, cfg.seed, corruption), fingerprint(train) + fingerprint(val)[:16])
    scfg = cfg.finetune
    rows = read_pairs(stores, "train", scfg.tasks)
    missing = [t for t in scfg.tasks if not any(r.task == t for r in rows)]
    if missing:
        raise DataError(f"no train pairs for {', '.join(missing)} in {where}; run `million-ird splits --manifest "
                        "STORE --recipe synthetic` (or all-in-one with benchmark folders), or pick --tasks")
    train, val = holdout_pairs(rows, cfg.val_per_task, cfg.seed, cfg.val_holdout)
    empty = [t for t in scfg.tasks if not any(r.task == t for r in train)]
    if empty:
        raise DataError(f"every {', '.join(empty)} train image of {where} is held out for validation; lower "
                        "val_per_task (--set val_per_task=N) or add images")
    dataset = PairDataset(train, cfg.seed, scfg)
    return StageData(dataset, dataset.n_items, pair_samples(val, cfg.val_crop),
                     fingerprint(train) + fingerprint(val)[:16], len(scfg.tasks) if scfg.mix == "sequential" else 1)


def train_stage(name: str, cfg: TrainConfig, stores: list[Store], out: Path, ctx: Dist,
                args: argparse.Namespace, init: Path | None, sources: list[str]) -> StageResult:
    """Build data and model for one stage, record the run, train it."""
    data = stage_data(name, cfg, stores)
    folder = RunFolder(out / name)
    torch.manual_seed(cfg.seed)
    model = DyNet("L", width=cfg.width)
    if init is not None:  # before anything is written: a file that does not fit stops here (a resume overrides it)
        load_into(model, load_state_dict(init), source=str(init))
    if ctx.main:
        record = {"command": " ".join(["python -m dynet_ref.train", *map(str, args.argv)]),
                  "stage": name, "stores": [str(s.root) for s in stores], "config": plain(cfg),
                  "config_sources": sources, "init": str(init) if init else None,
                  "data_fingerprint": data.fingerprint, "started_at": utc_now().isoformat()}
        changed = folder.check_or_record({**cfg.stream_fields(name), "data": data.fingerprint}, record)
        for line in changed:
            log.warning("resuming with a changed setting (allowed: it does not change the data stream): %s", line)
    if ctx.world > 1:
        dist.barrier()
    return run_stage(name, cfg, data, model, folder, ctx, args.max_steps)


def summary_rows(results: list[StageResult]) -> list[dict]:
    """One row per stage and variant: steps, speed, loss and validation PSNR first -> last."""
    rows = []
    for r in results:
        variants = sorted(set(r.first_loss) | set(r.last_val)) or ["-"]
        for v in variants:
            fv, lv = r.first_val.get(v, {}), r.last_val.get(v, {})
            rows.append({"stage": r.name, "variant": v, "steps": f"{r.step}/{r.total}",
                         "it/s": round(r.steps_run / r.seconds, 2) if r.seconds else None,
                         "loss first": r.first_loss.get(v), "loss last": r.last_loss.get(v),
                         "val PSNR first": fv.get("mean"), "val PSNR last": lv.get("mean")})
    return rows


def run(args: argparse.Namespace) -> list[StageResult]:
    """Resolve everything, then train the requested stage(s); returns their results."""
    stores = find_stores(args.data)
    cfg, sources = resolve_config(args, stores)
    if args.print_config:
        print(yaml.safe_dump(plain(cfg), sort_keys=False))
        return []
    if args.init is not None and args.stage != "finetune":
        raise ConfigError("--init is for --stage finetune (with --stage all, fine-tuning starts from pre-training)")
    ctx = start_distributed(cfg)
    out = (args.out or stores[0].root / TRAINING_DIR / "default").resolve()
    results: list[StageResult] = []
    for name in (STAGES if args.stage == "all" else (args.stage,)):
        init = args.init
        if name == "finetune" and args.stage == "all":
            if not results or not results[-1].complete or results[-1].final is None:
                break
            init = results[-1].final
        results.append(train_stage(name, cfg, stores, out, ctx, args, init, sources))
    if ctx.main:
        write_json_atomic({"results": [plain(vars(r)) for r in results], "config_sources": sources},
                          out / "summary.json")
    if ctx.world > 1:
        dist.destroy_process_group()
    return results


def report(results: list[StageResult], args: argparse.Namespace) -> None:
    """Print the one-screen summary and the next command."""
    if not results:
        return
    print(format_table(summary_rows(results)))
    for r in results:
        state = "complete" if r.complete else f"stopped at step {r.step} of {r.total}; re-run the same command to continue"
        print(f"{r.name}: {state}; run folder {r.folder}")
        for v, psnrs in r.last_val.items():
            sets = ", ".join(f"{k} {x:.2f}" for k, x in psnrs.items() if k != "mean")
            print(f"  val PSNR {v}: {sets}")
    last = results[-1]
    if last.name == "pretrain" and last.complete and args.stage == "all":
        return
    if last.final is not None:
        print(f"weights: {last.final}\nnext: python -m dynet_ref.evaluate --weights {last.final} "
              f"--variant S,L --data {args.data}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m dynet_ref.train`."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        results = run(args)
    except (DataError, ConfigError, CheckpointError, DegradationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
