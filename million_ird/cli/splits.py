"""`million-ird splits`: write train/test pairs (reference all-in-one or synthetic), verify them, export them."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from million_ird import pair_exports
from million_ird.cli.common import (
    Executor,
    RayAddress,
    Workers,
    driver_config,
    executor_errors,
    fail,
    writes_store,
)
from million_ird.images import resolve
from million_ird.sources.benchmarks import LayoutError
from million_ird.stages import split_plan as P
from million_ird.stages import splits as S
from million_ird.store import EXPORT_DIR, Store, StoreError, new_run_id
from million_ird.summary import format_table

log = logging.getLogger(__name__)
EXPORTS = ("promptir", "dsrir", "mioir")


def _export(store: Store, recipe: str, kinds: list[str], out: Path, seed: int) -> dict[str, dict[str, int]]:
    """Export the recipe's pairs in force (`latest_pairs`) in each layout of `kinds`; records a splits-export run."""
    rows = S.iter_rows(store, recipe)
    if not rows:
        fail(f"no pairs for recipe {recipe!r} in {store.root}; run `million-ird splits --recipe {recipe}` first")
    res = functools.partial(resolve, store.root)
    done = {}
    for kind in kinds:
        if kind == "promptir":
            done[kind] = pair_exports.export_promptir(rows, res, out / "promptir", lambda row: S.rederive(store, row))
        elif kind == "dsrir":
            done[kind] = pair_exports.export_dsrir(rows, res, out / "dsrir", seed)
        else:
            done[kind] = pair_exports.export_mioir(rows, res, out / "mioir")
    store.save_run("splits-export", new_run_id("splits-export"),
                   {"recipe": recipe, "kinds": kinds, "out": out, "seed": seed}, done)
    return done


def _verify(store: Store, recipe: str) -> None:
    checked, problems = S.verify(store, recipe)
    typer.echo(format_table([{"recipe": recipe, "pairs checked": checked, "mismatches": len(problems)}]))
    for pair_id, why in problems[:50]:
        typer.echo(f"MISMATCH {pair_id}: {why}")
    store.save_run("splits-verify", new_run_id("splits-verify"), {"recipe": recipe},
                   {"checked": checked, "mismatches": len(problems)})
    raise typer.Exit(1 if problems else 0)


def _absolute(path: Path | None) -> Path | None:
    return None if path is None else path.resolve()


def register(app: typer.Typer) -> None:
    """Add the `splits` command to `app`."""

    @app.command("splits")
    @writes_store(creates=True)  # --verify and --export write too (a run record, the export folder)
    def splits(
        manifest: Annotated[Path, typer.Option("--manifest", "-m", help="Dataset directory (the store).")],
        recipe: Annotated[str, typer.Option(help="all-in-one (benchmark folders, reference counts) or synthetic "
                                            "(noise/rain/haze on the store's kept patches, else on its whole "
                                            "images).")] = "all-in-one",
        denoise_train: Annotated[list[Path] | None, typer.Option(help="Clean denoise training folder(s): BSD400 "
                                                                 "and WED (5,144 images).")] = None,
        rain100l: Annotated[Path | None, typer.Option(help="Rain100L root with train/ (200) and test/ (100): "
                                                      "{rainy|input}/rain-N.png + {gt|target}/norain-N.png.")] = None,
        reside_ots: Annotated[Path | None, typer.Option(help="RESIDE OTS root: synthetic/partK/<id>_<A>_<beta>.jpg "
                                                        "+ original/<id>.jpg.")] = None,
        sots: Annotated[Path | None, typer.Option(help="SOTS-outdoor root: hazy/<id>_<A>_<beta>.jpg + gt/<id>.png.")] = None,
        bsd68: Annotated[Path | None, typer.Option(help="CBSD68 folder (68 clean colour images).")] = None,
        urban100: Annotated[Path | None, typer.Option(help="Urban100 folder (img_001.png ... img_100.png).")] = None,
        seed: Annotated[int, typer.Option(help="Global seed of every degradation draw.")] = 0,
        sigmas: Annotated[str, typer.Option(help="Comma list of noise sigmas.")] = "15,25,50",
        rounding: Annotated[str, typer.Option(help="Noise cast to uint8: truncate (reference quirk) or round.")] = "truncate",
        test_fraction: Annotated[float, typer.Option(help="Synthetic recipe: fraction of source images held out for "
                                                     "test, exactly max(1, round(fraction * N)) of N, chosen "
                                                     "from the seed and the image ids (all patches of an image "
                                                     "share its split); needs N >= 2.")] = 0.2,
        rain_preset: Annotated[str, typer.Option(help="Synthetic recipe: rain preset (rain100l, light, medium, heavy).")] = "rain100l",
        digest: Annotated[bool, typer.Option(help="Also store pixel digests of on-the-fly training pairs (slower).")] = False,
        limit: Annotated[int | None, typer.Option(min=1, help="Synthetic recipe: use the first N source images (by id).")] = None,
        verify: Annotated[bool, typer.Option("--verify", help="Only re-check the pairs in force (files, sha256, "
                                             "re-derived pixels); exit 1 on any mismatch.")] = False,
        export: Annotated[list[str] | None, typer.Option(help="Export the recipe's pairs in force: promptir, dsrir, "
                                                         "mioir (repeatable); written under --export-dir.")] = None,
        export_dir: Annotated[Path | None, typer.Option(help="Folder for exports, outside the store or under DIR/export/ [default: DIR/export/splits-RECIPE].")] = None,
        workers: Workers = 1,
        executor: Executor = "local",
        ray_address: RayAddress = None,
    ) -> None:
        """Write the all-in-one train/test pairs (or a synthetic split), verify them, or export them; resumes by config."""
        if recipe not in P.RECIPES:
            fail(f"--recipe {recipe!r}: use one of {', '.join(P.RECIPES)}")
        bad = sorted(set(export or ()) - set(EXPORTS))
        if bad:
            fail(f"--export {bad[0]!r}: use one of {', '.join(EXPORTS)}")
        store = Store(manifest)
        if verify:
            _verify(store, recipe)
        try:
            sig = tuple(float(s) for s in sigmas.split(",") if s.strip())
        except ValueError:
            fail(f"--sigmas {sigmas!r}: give a comma list of numbers, e.g. 15,25,50")
        paths = P.BenchmarkPaths(tuple(p.resolve() for p in denoise_train or ()), _absolute(rain100l),
                                 _absolute(reside_ots), _absolute(sots), _absolute(bsd68), _absolute(urban100))
        cfg = P.SplitsConfig(recipe=recipe, seed=seed, sigmas=sig, noise_rounding=rounding, test_fraction=test_fraction,
                             rain_preset=rain_preset, digest_on_the_fly=digest or recipe == "synthetic", limit=limit,
                             paths=paths)
        run = driver_config(executor, workers, ray_address, False, None)
        try:
            out = store.check_output(export_dir or store.root / EXPORT_DIR / f"splits-{recipe}", "--export-dir")
            plan = P.plan_pairs(store, cfg)
            typer.echo(format_table(P.counts_table(plan.counts)))
            typer.echo(plan.describe())
            with executor_errors():
                stats = S.run_splits(store, cfg, plan, run)
            exported = _export(store, recipe, export, out, seed) if export else {}
        except (LayoutError, P.SplitError, StoreError) as exc:
            fail(str(exc))
        typer.echo(format_table(S.summary_rows(store, stats)))
        for kind, c in exported.items():
            typer.echo(f"export {kind}: {json.dumps(c, sort_keys=True)}")
