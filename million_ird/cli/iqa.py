"""`million-ird score`, `million-ird filter` and `million-ird iqa fit-niqe` (registered on the main app)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer

from million_ird.cli.common import (
    Executor,
    Limit,
    Manifest,
    RayAddress,
    RetryErrors,
    Workers,
    downloaded_store,
    driver_config,
    echo_download_note,
    echo_run,
    executor_errors,
    existing_store,
    fail,
    writes_store,
)
from million_ird.store import StoreError
from million_ird.summary import format_table

if TYPE_CHECKING:
    from million_ird.driver import DriverConfig
    from million_ird.stages.score import ScoreConfig

log = logging.getLogger(__name__)
CPU_METRICS = ("niqe", "brisque")  # computed on CPU whatever --device says; every other metric uses the device


def _check_devices(device: str, executor: str, gpus_per_worker: float) -> None:
    """One-line errors for --device / --gpus-per-worker pairs that would run on the wrong hardware under Ray."""
    if executor != "ray":
        return
    if gpus_per_worker and not device.startswith("cuda"):
        fail(f"--gpus-per-worker {gpus_per_worker:g} with --device {device}: NIMA would hold a GPU and run on "
             "CPU; add --device cuda")
    if device.startswith("cuda") and not gpus_per_worker:
        fail(f"--device {device} on Ray needs --gpus-per-worker (e.g. 1): Ray gives GPUs only to workers that "
             "declare them")
    if device.startswith("cuda:") and device != "cuda:0":
        fail(f"--device {device}: a Ray worker sees only the GPUs it was given, as cuda:0...; use --device cuda")


def score_runs(cfg: ScoreConfig, run: DriverConfig) -> list[tuple[ScoreConfig, DriverConfig]]:
    """The driver runs of one score command: on Ray with GPUs, NIQE/BRISQUE on CPU workers, the rest on GPU workers."""
    if not run.executor.gpus_per_worker:
        return [(cfg, run)]
    on_cpu = tuple(m for m in cfg.metrics if m in CPU_METRICS)
    on_gpu = tuple(m for m in cfg.metrics if m not in CPU_METRICS)
    cpu_run = replace(run, executor=replace(run.executor, gpus_per_worker=0.0))
    return [(replace(cfg, metrics=names), r) for names, r in ((on_cpu, cpu_run), (on_gpu, run)) if names]


def score_command(
    manifest: Manifest,
    metrics: Annotated[str, typer.Option(help="Comma list of metrics: niqe, brisque, nima, or pyiqa:<name> "
                                         "(needs the pyiqa extra).")] = "niqe,brisque",
    workers: Workers = 1,
    device: Annotated[str, typer.Option(help="Device for NIMA/pyiqa: cpu or cuda[:N]; NIQE/BRISQUE always run on CPU.")] = "cpu",
    batch_size: Annotated[int, typer.Option(help="Images per NIMA forward pass.")] = 16,
    niqe_params: Annotated[Path | None, typer.Option(help="NIQE pristine model (.npz from `iqa fit-niqe`) "
                                                     "[default: LIVE's model shipped in the package].")] = None,
    nima_weights: Annotated[Path | None, typer.Option(help="NIMA weights file [default: "
                                                      "$MILLION_IRD_NIMA_DIR/nima_inception_resnet_v2.safetensors].")] = None,
    retry_errors: RetryErrors = False,
    limit: Limit = None,
    executor: Executor = "local",
    ray_address: RayAddress = None,
    gpus_per_worker: Annotated[float, typer.Option(help="Ray: GPUs each NIMA/pyiqa worker declares (e.g. 1, or 0.5 "
                                                   "for two per GPU; needs --device cuda); NIQE/BRISQUE then run "
                                                   "apart on CPU-only workers. 0: every worker on CPUs.")] = 0.0,
) -> None:
    """Score every ok image with no-reference IQA metrics; one row per (image, metric); resumes per metric and config."""
    from million_ird.stages.score import ScoreConfig, run_score, usable_metrics

    names = tuple(m.strip() for m in metrics.split(",") if m.strip())
    if not names:
        fail("--metrics is empty; give e.g. niqe,brisque")
    if niqe_params is not None and not niqe_params.is_file():
        fail(f"--niqe-params {niqe_params}: no such file; create one with `million-ird iqa fit-niqe`")
    _check_devices(device, executor, gpus_per_worker)
    if device.startswith("cuda") and executor == "local" and workers > 1:
        log.warning("%s: using one worker (a CUDA model is not shared across processes)", device)
        workers = 1
    cfg = ScoreConfig(metrics=names, device=device, batch_size=batch_size,
                      niqe_params=str(niqe_params) if niqe_params else None,
                      nima_weights=str(nima_weights) if nima_weights else None)
    run = driver_config(executor, workers, ray_address, retry_errors, limit, gpus_per_worker)
    try:
        usable, skipped = usable_metrics(cfg)  # a misspelt metric is reported before the store's state
    except (KeyError, ImportError, ValueError) as exc:
        fail(str(exc).strip("'\""))
    store, progress = downloaded_store(manifest)
    runs: list[dict] = []
    try:
        with executor_errors():
            for part_cfg, part_run in score_runs(replace(cfg, metrics=usable), run):
                runs.append(run_score(store, part_cfg, part_run))
    except (KeyError, StoreError, ImportError, ValueError) as exc:
        fail(str(exc).strip("'\""))
    for metric, reason in skipped.items():
        typer.echo(f"{metric} skipped: {reason}")
    for stats in runs:
        stats.pop("skipped_metrics")
        echo_run(stats)
    if sum(stats["pending"] for stats in runs) == 0:
        what = "image" if progress.tried == progress.images else "downloaded image"
        typer.echo(f"nothing to do: every {what} is already scored with these metrics and parameters")
    echo_download_note(progress, manifest)


def filter_command(
    manifest: Manifest,
    niqe: Annotated[float | None, typer.Option(help="Keep NIQE < T. With no metric threshold at all the defaults "
                                               "NIQE < 5.0 and BRISQUE < 35 apply.")] = None,
    brisque: Annotated[float | None, typer.Option(help="Keep BRISQUE < T.")] = None,
    nima: Annotated[float | None, typer.Option(help="Keep NIMA > T (refused when the store has no NIMA scores).")] = None,
    min_side: Annotated[int, typer.Option(help="Keep images whose shorter side is at least N pixels.")] = 1024,
    name: Annotated[str, typer.Option(help="Selection name: written to selections/NAME/. An existing NAME is "
                                       "refused unless --replace is given.")] = "default",
    dry_run: Annotated[bool, typer.Option(help="Print the counts, write nothing.")] = False,
    replace: Annotated[bool, typer.Option(help="Overwrite an existing selections/NAME/. The new selection is written "
                                          "in full under a temp name, then swapped in, so readers and a crash see "
                                          "the old selection or the new one, never a mix.")] = False,
) -> None:
    """Keep images that pass every given threshold (one DuckDB query); write the ids to selections/NAME/."""
    from million_ird.filter import FilterConfig, run_filter

    cfg = FilterConfig(niqe=niqe, brisque=brisque, nima=nima, min_side=min_side, name=name, dry_run=dry_run,
                       replace=replace)
    try:
        record = run_filter(existing_store(manifest), cfg)
    except StoreError as exc:
        fail(str(exc))
    rules = ", ".join(f"{m} {rule}" for m, rule in record["thresholds"].items())
    typer.echo(f"selection {record['name']!r}: {rules}, shorter side >= {record['min_side']}"
               + (" (dry run, nothing written)" if cfg.dry_run else "")
               + (" (replaced the previous selection)" if record["replaced"] else ""))
    typer.echo(format_table(record["per_source"] + [{"source": "TOTAL", "kept": record["kept"], "total": record["total"]}]))
    typer.echo(format_table([{"rule": k, "rejected": v} for k, v in record["rejected_by"].items()]))


def fit_niqe_command(
    pristine: Annotated[Path, typer.Option(help="Folder of pristine (clean, sharp) images, searched recursively.")],
    out: Annotated[Path, typer.Option(help="Output .npz (keys mu, cov, n_blocks, n_images) for --niqe-params.")],
    sharpness: Annotated[float, typer.Option(help="Keep blocks whose mean local sigma exceeds this fraction of the "
                                             "image's sharpest block (LIVE used 0.75).")] = 0.75,
) -> None:
    """Refit the NIQE pristine model (36 features at 2 scales, mean + covariance) on your own images."""
    from tqdm import tqdm

    from million_ird.images import IMAGE_SUFFIXES, is_image_file, read_image
    from million_ird.iqa.niqe import BLOCK as block
    from million_ird.iqa.niqe import fit_niqe

    files = sorted(p for p in pristine.rglob("*") if is_image_file(p))
    if not files:
        fail(f"--pristine {pristine}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    used: list[Path] = []

    def images():  # noqa: ANN202 - generator of arrays
        for f in tqdm(files, desc="fit-niqe", unit="img"):
            try:
                img = read_image(f)
            except ValueError as exc:
                log.warning("skipping %s: %s", f, exc)
                continue
            if min(img.shape[:2]) < block:
                log.warning("skipping %s: smaller than one %d px block", f, block)
                continue
            used.append(f)
            yield img

    try:
        model = fit_niqe(images(), sharpness_threshold=sharpness)
    except ValueError as exc:
        fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, mu=model["mu"], cov=model["cov"], n_blocks=model["n_blocks"],
                        n_images=np.int64(len(used)), sharpness=np.float64(sharpness))
    typer.echo(format_table([{"images": len(used), "skipped": len(files) - len(used),
                              "blocks": int(model["n_blocks"]), "out": str(out)}]))


def register(app: typer.Typer) -> None:
    """Add `score`, `filter` (both under the store lock) and the `iqa` sub-app (`fit-niqe`) to `app`.

    `fit-niqe` takes no lock: it reads a folder of images and writes one .npz, knowing no store.
    """
    app.command("score")(writes_store()(score_command))
    app.command("filter")(writes_store(reads_only=lambda params: params["dry_run"])(filter_command))
    iqa_app = typer.Typer(help="IQA model tools.", no_args_is_help=True)
    iqa_app.command("fit-niqe")(fit_niqe_command)
    app.add_typer(iqa_app, name="iqa")
