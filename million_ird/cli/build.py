"""`million-ird build RECIPE`: every stage of a recipe in order, resuming, ending with expected vs actual counts."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from typer._click import ClickException

from million_ird.cli.common import Manifest, Wait, fail, locked_store
from million_ird.summary import format_table


def run_recipe(recipe_path: Path, manifest: Path, inputs: Path | None = None,
               extra: dict[str, list[str]] | None = None, wait: bool = False) -> None:
    """Build `recipe_path` into `manifest` through the CLI's own commands, then print expected vs actual.

    The whole recipe and every input are checked first: a bad one neither creates nor locks the store."""
    from million_ird.build import RecipeError, build, cli_commands, commands, load_recipe
    from million_ird.cli import app  # the package imports this module: resolved at call time

    def run(args: Sequence[str]) -> None:
        try:
            code = app(list(args), standalone_mode=False)
        except ClickException as exc:
            code, message = exc.exit_code, exc.format_message()
            typer.echo(f"error: {' '.join(message.split())}", err=True)
        if code:  # the step printed why; later steps would build on what it did not do
            fail(f"{recipe_path}: step `million-ird {args[0]}` failed (exit {code}); fix it and run build again "
                 "(steps that finished are not redone)", code)

    try:
        recipe = load_recipe(recipe_path, cli_commands(typer.main.get_command(app)))
        lines = commands(recipe, manifest, inputs, extra)
    except RecipeError as exc:
        fail(str(exc))
    with locked_store(manifest, wait=wait, creates=True):
        copy = manifest / "runs" / f"recipe-{recipe.name}-{recipe.sha256[:12]}.yaml"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(recipe.path, copy)  # the store keeps the exact recipe its runs name by hash
        rows = build(recipe, lines, manifest, run, echo=typer.echo)
    where = f", selection {recipe.selection!r}" if recipe.selection else ""
    typer.echo(f"\n== recipe {recipe.name} (sha256 {recipe.sha256[:12]}{where}): expected vs actual")
    typer.echo(format_table(rows))


def build_command(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (e.g. manifests/million-ird-v1/recipe.yaml).")],
    manifest: Manifest,
    inputs: Annotated[Path | None, typer.Option(help="Folder the recipe's source inputs are relative to "
                                                "[default: the recipe's folder].")] = None,
    wait: Wait = False,
) -> None:
    """Check the whole recipe, then ingest its sources and run its steps in order (each resumes) under the store
    lock; the recipe's hash goes on every run."""
    run_recipe(recipe, manifest, inputs, wait=wait)


def register(app: typer.Typer) -> None:
    """Add `build` to `app`."""
    app.command("build")(build_command)
