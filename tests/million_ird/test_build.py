"""Recipes: the shipped ones parse and name only real options; a build records the recipe's hash and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from million_ird.build import INPUT_OPTIONS, RecipeError, commands, load_recipe
from million_ird.cli import app

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [ROOT / "manifests/million-ird-v1/recipe.yaml", ROOT / "manifests/demo/recipe.yaml"]


def _options(command: str) -> set[str]:
    group = typer.main.get_command(app)
    return {opt for p in group.commands[command].params for opt in (*p.opts, *p.secondary_opts)}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name)
def test_shipped_recipes_name_only_real_commands_and_options(path: Path, tmp_path: Path) -> None:
    recipe = load_recipe(path)
    inputs = tmp_path / "inputs"
    for source in recipe.sources:  # stand-ins for the inputs, so every command line can be built
        for pattern in source.inputs:
            target = inputs / pattern.replace("*", "part-0")
            if source.kind == "folder":
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(b"")
    for _, opts in recipe.steps:  # and for the input folders steps name (dedup's test sets)
        for key in INPUT_OPTIONS:
            for folder in opts.get(key) or []:
                (inputs / folder).mkdir(parents=True, exist_ok=True)
    for args in commands(recipe, tmp_path / "store", inputs):
        given = {a for a in args[1:] if a.startswith("--")}
        assert given <= _options(args[0]), f"{args[0]}: unknown options {given - _options(args[0])}"
    assert all(s.licence and s.get for s in recipe.sources)


def test_missing_input_is_one_line_naming_the_source_and_where_to_get_it(tmp_path: Path) -> None:
    recipe = load_recipe(SHIPPED[0])
    with pytest.raises(RecipeError, match=r"source 'laion-hr': .* not found; get it from https://"):
        commands(recipe, tmp_path / "store", tmp_path / "nothing-here")
    res = CliRunner().invoke(app, ["build", str(SHIPPED[0]), "--manifest", str(tmp_path / "store"),
                                   "--inputs", str(tmp_path / "nothing-here")])
    assert res.exit_code == 2 and "get it from" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "store" / "images").exists()  # nothing ingested before every input is checked


def test_missing_test_set_folder_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "inputs" / "photos").mkdir(parents=True)
    recipe = tmp_path / "inputs" / "recipe.yaml"
    recipe.write_text("name: t\nsources:\n  - {name: local, kind: folder, inputs: [photos], get: here, licence: CC0}\n"
                      "steps:\n  - dedup: {against: [testsets/BSD68]}\n")
    with pytest.raises(RecipeError, match=r"step 'dedup': .*testsets/BSD68 not found"):
        commands(load_recipe(recipe), tmp_path / "store", tmp_path / "inputs")
    (tmp_path / "inputs" / "testsets" / "BSD68").mkdir(parents=True)
    lines = commands(load_recipe(recipe), tmp_path / "store", tmp_path / "inputs")
    assert lines[-1][-2:] == ["--against", str(tmp_path / "inputs" / "testsets" / "BSD68")]


def test_bad_recipe_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "r.yaml"
    bad.write_text("sources: [{name: x, kind: ftp, inputs: [a]}]\nsteps: []\n")
    with pytest.raises(RecipeError, match=r"sources\[0\] needs name, kind"):
        load_recipe(bad)


def test_build_records_the_recipe_and_resumes(tmp_path: Path) -> None:
    import cv2
    import skimage.data

    folder = tmp_path / "inputs" / "photos"
    folder.mkdir(parents=True)
    for name in ("astronaut", "coffee", "chelsea"):
        cv2.imwrite(str(folder / f"{name}.png"), getattr(skimage.data, name)()[:, :, ::-1])
    recipe = tmp_path / "inputs" / "recipe.yaml"
    recipe.write_text("name: tiny\nsources:\n  - {name: local, kind: folder, inputs: [photos], get: here, "
                      "licence: CC0, expected: {images: 3}}\nsteps:\n  - download: {}\n"
                      "  - score: {metrics: brisque}\n  - filter: {brisque: 80, min_side: 256, name: t, replace: true}\n"
                      "  - patches: {selection: t, size: 256}\nexpected: {ingested: 3}\n")
    store = tmp_path / "store"
    res = CliRunner().invoke(app, ["build", str(recipe), "--manifest", str(store)])
    assert res.exit_code == 0, res.output
    assert "expected vs actual" in res.output
    records = [json.loads(p.read_text()) for p in sorted((store / "runs").glob("*.json"))]
    sha = load_recipe(recipe).sha256
    assert {r["command"] for r in records} >= {"ingest", "download", "score", "filter", "patches"}
    assert all(r["recipe_sha256"] == sha for r in records)
    assert (store / "runs" / f"recipe-tiny-{sha[:12]}.yaml").read_bytes() == recipe.read_bytes()
    again = CliRunner().invoke(app, ["build", str(recipe), "--manifest", str(store)])
    assert again.exit_code == 0, again.output
    assert "already scored" in again.output and "already cut" in again.output
