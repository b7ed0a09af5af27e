"""`million-ird demo`: the whole pipeline on the bundled sample, served from a local HTTP server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from million_ird.cli.common import fail, writes_store
from million_ird.sources.common import IngestError
from million_ird.store import StoreError


def _demo_root(out: Path | None) -> Path:
    from million_ird.demo import demo_root

    return demo_root(out)


DEMO_STEPS = (
    ("score", "--metrics", "niqe,brisque"),
    ("filter", "--niqe", "5", "--brisque", "35", "--min-side", "256", "--name", "demo", "--replace"),
    ("patches", "--selection", "demo", "--size", "256"),  # the sample photos are small: 256² patches
    ("splits", "--recipe", "synthetic"),
    ("stats",),
)


@writes_store(lambda params: _demo_root(params["out"]), creates=True)
def demo(
    out: Annotated[Path | None, typer.Option(help="Where to build the demo dataset store [default: manifests/demo/store "
                                             "in the source checkout, where `python -m dynet_ref.train --data "
                                             "manifests/` finds it].")] = None,
    keep: Annotated[bool, typer.Option(help="Keep an existing --out folder instead of starting fresh.")] = False,
) -> None:
    """Run the whole pipeline on the bundled sample, served from a local HTTP server (no network needed)."""
    from million_ird.cli import app as main_app  # the package imports this module: resolved at call time
    from million_ird.demo import DEFAULT_OUT, DemoConfig, copy_train_config, run_demo, train_command

    cfg = DemoConfig(out=out or DEFAULT_OUT, fresh=not keep)
    try:
        store = run_demo(cfg, echo=typer.echo)
    except (IngestError, StoreError) as exc:
        fail(str(exc))
    for step in DEMO_STEPS:
        args = [step[0], "--manifest", str(store.root), *step[1:]]
        typer.echo(f"\n== million-ird {' '.join(args)}")
        main_app(args, standalone_mode=False)
    settings = copy_train_config(cfg, store)
    typer.echo(f"\nDemo store: {store.root}" + (f" (training settings: {settings})" if settings else ""))
    typer.echo(f"Try: million-ird query --manifest {store.root} "
               "\"SELECT source, status, format, width, height, niqe, brisque FROM catalog\"")
    typer.echo(f"Next: train DyNet on it: {train_command(store)}")


def register(app: typer.Typer) -> None:
    """Add `demo` to `app`."""
    app.command('demo')(demo)
