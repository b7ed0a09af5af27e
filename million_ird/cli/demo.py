"""`million-ird demo`: the whole pipeline on the bundled sample, served from a local HTTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from million_ird.cli.common import fail, writes_store
from million_ird.store import StoreError


def _demo_root(out: Path | None) -> Path:
    from million_ird.demo import demo_root

    return demo_root(out)


@writes_store(lambda params: _demo_root(params["out"]), creates=True)
def demo(
    out: Annotated[Path | None, typer.Option(help="Where to build the demo dataset store [default: manifests/demo/store "
                                             "in the source checkout, where `python -m dynet_ref.train --data "
                                             "manifests/` finds it].")] = None,
    keep: Annotated[bool, typer.Option(help="Keep an existing --out folder instead of starting fresh.")] = False,
) -> None:
    """Build the bundled sample's recipe (manifests/demo/recipe.yaml), served from a local HTTP server (no network)."""
    from million_ird.cli import app  # the package imports this module: resolved at call time
    from million_ird.cli.build import run_recipe
    from million_ird.demo import (
        DEFAULT_OUT,
        RECIPE,
        DemoConfig,
        copy_train_config,
        prepare_demo,
        train_command,
    )

    cfg = DemoConfig(out=out or DEFAULT_OUT, fresh=not keep)
    try:
        with prepare_demo(cfg, echo=typer.echo) as (store, proxy):
            run_recipe(RECIPE, store.root, store.root / "inputs", extra={"download": ["--http-proxy", proxy, "--allow-private"]})
    except StoreError as exc:
        fail(str(exc))
    typer.echo(f"\n== million-ird stats --manifest {store.root}")
    app(["stats", "--manifest", str(store.root)], standalone_mode=False)
    settings = copy_train_config(cfg, store)
    typer.echo(f"\nDemo store: {store.root}" + (f" (training settings: {settings})" if settings else ""))
    typer.echo(f"Try: million-ird query --manifest {store.root} "
               "\"SELECT source, status, format, width, height, niqe, brisque FROM catalog\"")
    typer.echo(f"Next: train DyNet on it: {train_command(store)}")


def register(app: typer.Typer) -> None:
    """Add `demo` to `app`."""
    app.command('demo')(demo)
