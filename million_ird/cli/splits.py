"""`million-ird splits`: write train/test pairs (reference all-in-one or synthetic), verify them, export them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from million_ird import testsets
from million_ird.cli.common import fail, writes_store
from million_ird.stages import splits as S
from million_ird.store import Store, StoreError, new_run_id
from million_ird.summary import format_table

log = logging.getLogger(__name__)
EXPORTS = ("promptir", "dsrir", "mioir")


def _export(store: Store, recipe: str, kinds: list[str], out: Path, seed: int) -> dict[str, dict[str, int]]:
    rows = list(S.iter_rows(store, recipe))
    if not rows:
        fail(f"no pairs for recipe {recipe!r} in {store.root}; run `million-ird splits --recipe {recipe}` first")
    done = {}
    for kind in kinds:
        def res(p: str) -> Path:
            return S.resolve(store, p)
        if kind == "promptir":
            done[kind] = testsets.export_promptir(rows, res, out / "promptir", lambda row: S.rederive(store, row))
        elif kind == "dsrir":
            done[kind] = testsets.export_dsrir(rows, res, out / "dsrir", seed)
        else:
            done[kind] = testsets.export_mioir(rows, res, out / "mioir")
    return done


def _verify(store: Store, recipe: str, run_id: str) -> None:
    checked, problems = S.verify(store, recipe)
    typer.echo(format_table([{"recipe": recipe, "pairs checked": checked, "mismatches": len(problems)}]))
    for pair_id, why in problems[:50]:
        typer.echo(f"MISMATCH {pair_id}: {why}")
    store.save_run("splits-verify", run_id, {"recipe": recipe}, {"checked": checked, "mismatches": len(problems)})
    raise typer.Exit(1 if problems else 0)


def register(app: typer.Typer) -> None:
    """Add the `splits` command to `app`."""

    @app.command("splits")
    @writes_store(creates=True)  # --verify and --export write too (a run record, the export folder)
    def splits(
        manifest: Annotated[Path, typer.Option("--manifest", "-m", help="Dataset directory (the store).")],
        recipe: Annotated[str, typer.Option(help="all-in-one (benchmark folders, reference counts) or synthetic "
                                            "(noise/rain/haze on the store's own images).")] = "all-in-one",
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
                                                     "from the seed and the image ids; needs N >= 2.")] = 0.2,
        rain_preset: Annotated[str, typer.Option(help="Synthetic recipe: rain preset (rain100l, light, medium, heavy).")] = "rain100l",
        digest: Annotated[bool, typer.Option(help="Also store pixel digests of on-the-fly training pairs (slower).")] = False,
        limit: Annotated[int | None, typer.Option(help="Synthetic recipe: use at most N source images.")] = None,
        verify: Annotated[bool, typer.Option("--verify", help="Only re-check existing pairs (files, sha256, "
                                             "re-derived pixels); exit 1 on any mismatch.")] = False,
        export: Annotated[list[str] | None, typer.Option(help="Export the recipe's pairs: promptir, dsrir, mioir "
                                                         "(repeatable); written under --export-dir.")] = None,
        export_dir: Annotated[Path | None, typer.Option(help="Folder for exports [default: DIR/exports/RECIPE].")] = None,
    ) -> None:
        """Write the all-in-one train/test pairs (or a synthetic split), verify them, or export them."""
        if recipe not in S.RECIPES:
            fail(f"--recipe {recipe!r}: use one of {', '.join(S.RECIPES)}")
        bad = sorted(set(export or ()) - set(EXPORTS))
        if bad:
            fail(f"--export {bad[0]!r}: use one of {', '.join(EXPORTS)}")
        store = Store(manifest)
        run_id = new_run_id("splits")
        if verify:
            _verify(store, recipe, run_id)
        try:
            sig = tuple(float(s) for s in sigmas.split(",") if s.strip())
        except ValueError:
            fail(f"--sigmas {sigmas!r}: give a comma list of numbers, e.g. 15,25,50")
        cfg = S.SplitsConfig(recipe, seed, sig, rounding, test_fraction, rain_preset, digest or recipe == "synthetic",
                             limit)
        paths = S.BenchmarkPaths(tuple(denoise_train or ()), rain100l, reside_ots, sots, bsd68, urban100)
        try:
            if recipe == "synthetic":
                plan, counts = S.plan_synthetic(store, cfg)
            else:
                plan, counts = S.plan_all_in_one(paths, cfg)
            typer.echo(format_table(S.counts_table(counts)))
            written = S.write_pairs(store, plan, cfg, run_id)
            exported = _export(store, recipe, export, export_dir or store.root / "exports" / recipe, seed) if export else {}
        except (testsets.LayoutError, S.SplitError, StoreError) as exc:
            fail(str(exc))
        typer.echo(format_table(S.summary_rows(written)))
        for kind, c in exported.items():
            typer.echo(f"export {kind}: {json.dumps(c, sort_keys=True)}")
        store.save_run("splits", run_id, cfg, {"found": counts, "exports": exported,
                                               "written": {f"{s}/{t}": n for (s, t), n in written.items()},
                                               "paths": {k: str(v) for k, v in vars(paths).items()}})
