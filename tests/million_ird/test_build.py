"""Recipes: every one is checked whole before anything runs; a build records the recipe's hash, resumes and
ends with expected vs actual counts that match the store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from million_ird.build import (
    INPUT_OPTIONS,
    RecipeError,
    cli_commands,
    commands,
    expected_vs_actual,
    load_recipe,
)
from million_ird.cli import app
from million_ird.store import Store

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [ROOT / "manifests/million-ird-v1/recipe.yaml", ROOT / "manifests/demo/recipe.yaml"]
CLI = cli_commands(typer.main.get_command(app))
SOURCE = "  - {name: local, kind: folder, inputs: [photos], get: here, licence: CC0}\n"


def _recipe(source: str = SOURCE, step: str = "  - patches: {size: 256}\n", tail: str = "") -> str:
    """A recipe with a valid source whose second step is `step` (after a download a late check would have run)."""
    return f"name: t\nsources:\n{source}steps:\n  - download: {{}}\n{step}{tail}"


# (recipe text, what its one-line error must say after "FILE: ")
BAD = {
    "null sources": ("name: t\nsources: null\nsteps: []\n", r"`sources` must be a list"),
    "scalar step body": (_recipe(step="  - patches: 5\n"),
                         r"steps\[1\] \(patches\) options must be a mapping like \{option: value\}, not 5"),
    "list step body": (_recipe(step="  - patches: [size, 256]\n"),
                       r"steps\[1\] \(patches\) options must be a mapping"),
    "scalar step": (_recipe(step="  - 5\n"), r"steps\[1\] must be a one-key mapping like `- patches: \{size: 512\}`"),
    "list source": (_recipe(source="  - [photos]\n"), r"sources\[0\] must be a mapping like \{name: "),
    "mistyped command": (_recipe(step="  - patchs: {size: 256}\n"),
                         r"steps\[1\] \(patchs\): no such command \(did you mean patches\?\); a step runs one of "),
    "mistyped option": (_recipe(step="  - patches: {sise: 256}\n"), r"steps\[1\] \(patches\): `million-ird patches` "
                        r"has no option --sise \(did you mean --size\?\); see `million-ird patches --help`"),
    "mistyped ingest key": (_recipe(source=SOURCE.replace("}", ", ingest: {min_sid: 5}}")),
                            r"sources\[0\] \(local\)\.ingest: `million-ird ingest` has no option --min-sid "
                            r"\(did you mean --min-side\?\)"),
    "option build sets": (_recipe(step="  - score: {manifest: elsewhere}\n"),
                          r"steps\[1\] \(score\): --manifest is set by build itself; remove `manifest`"),
    "list for a single option": (_recipe(step="  - patches: {size: [256, 512]}\n"),
                                 r"steps\[1\] \(patches\): --size takes one value, not a list"),
    "value for a flag": (_recipe(step="  - filter: {replace: 1}\n"),
                         r"steps\[1\] \(filter\): --replace takes true or false"),
    "flag for a value": (_recipe(step="  - patches: {size: true}\n"),
                         r"steps\[1\] \(patches\): --size takes a number"),
    "word for a number": (_recipe(step="  - filter: {niqe: abc}\n"),
                          r"steps\[1\] \(filter\): --niqe takes a valid value \(input should be a valid number"),
    "below an option's minimum": (_recipe(step="  - report: {out: r.html, samples: -1}\n"),
                                  r"steps\[1\] \(report\): --samples takes a valid value \(input should be "
                                  r"greater than or equal to 0\), not -1"),
    "required option missing": (_recipe(step="  - export: {format: hf}\n"),
                                r"steps\[1\] \(export\): `million-ird export` needs --out; add it"),
    "mistyped source count": (_recipe(source=SOURCE.replace("}", ", expected: {imgs: 3}}")),
                              r"sources\[0\] \(local\)\.expected: unknown count 'imgs' \(did you mean images\?\)"),
    "list for expected": (_recipe(tail="expected: [1]\n"), r"expected must be a mapping like \{ingested: 1000\}"),
    "unknown kind": (_recipe(source=SOURCE.replace("folder", "ftp")),
                     r"sources\[0\] needs name, kind \(parquet \| urls \| folder\) and inputs"),
    "two sources of one name": (_recipe(source=SOURCE * 2), r"two sources are named 'local'; give each its own name"),
    "mistyped top key": (_recipe(tail="expect: {ingested: 1}\n"),
                         r"unknown key 'expect' \(did you mean expected\?\)"),
}


def _photos(folder: Path) -> None:
    """One real photo, so that code that ran the recipe's first commands before checking it would write a store."""
    import cv2
    import skimage.data

    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "coffee.png"), skimage.data.coffee()[:, :, ::-1])


@pytest.mark.parametrize("text, message", BAD.values(), ids=BAD.keys())
def test_bad_recipe_is_one_line_naming_the_file_and_step_before_anything_runs(text: str, message: str,
                                                                               tmp_path: Path) -> None:
    _photos(tmp_path / "photos")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    with pytest.raises(RecipeError, match="^" + re.escape(str(recipe)) + ": " + message) as err:
        load_recipe(recipe, CLI)
    assert "\n" not in str(err.value)
    store = tmp_path / "store"
    res = CliRunner().invoke(app, ["build", str(recipe), "--manifest", str(store)])
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines() == [f"error: {err.value}"]
    assert not store.exists()  # nothing ingested, downloaded, recorded or even locked


def test_bad_recipe_leaves_an_existing_store_unchanged(tmp_path: Path) -> None:
    _photos(tmp_path / "photos")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(BAD["mistyped option"][0])
    store = tmp_path / "store"
    (store / "runs").mkdir(parents=True)
    (store / "runs" / "note.txt").write_text("kept")
    before = sorted((p.relative_to(store), p.stat().st_mtime_ns) for p in store.rglob("*"))
    res = CliRunner().invoke(app, ["build", str(recipe), "--manifest", str(store)])
    assert res.exit_code == 2 and "--sise" in res.output
    assert sorted((p.relative_to(store), p.stat().st_mtime_ns) for p in store.rglob("*")) == before


def test_false_flag_is_its_no_form_and_null_keeps_the_default(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(_recipe(step="  - report: {out: r.html, progress: false, samples: null}\n"))
    store = tmp_path / "store"
    line = commands(load_recipe(recipe, CLI), store, tmp_path)[-1]
    assert line == ["report", "--manifest", str(store), "--out", str(store / "r.html"), "--no-progress"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.parent.name)
def test_shipped_recipes_name_only_real_commands_and_options(path: Path, tmp_path: Path) -> None:
    recipe = load_recipe(path, CLI)
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
        assert given <= set(CLI[args[0]]), f"{args[0]}: unknown options {given - set(CLI[args[0]])}"
    assert all(s.licence and s.get for s in recipe.sources)


def test_missing_input_is_one_line_naming_the_source_and_where_to_get_it(tmp_path: Path) -> None:
    recipe = load_recipe(SHIPPED[0], CLI)
    with pytest.raises(RecipeError, match=r"source 'laion-hr': .* not found; get it from https://"):
        commands(recipe, tmp_path / "store", tmp_path / "nothing-here")
    res = CliRunner().invoke(app, ["build", str(SHIPPED[0]), "--manifest", str(tmp_path / "store"),
                                   "--inputs", str(tmp_path / "nothing-here")])
    assert res.exit_code == 2 and "get it from" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "store").exists()  # nothing ingested (nor the store made) before every input is checked


def test_missing_test_set_folder_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "inputs" / "photos").mkdir(parents=True)
    recipe = tmp_path / "inputs" / "recipe.yaml"
    recipe.write_text("name: t\nsources:\n  - {name: local, kind: folder, inputs: [photos], get: here, licence: CC0}\n"
                      "steps:\n  - dedup: {against: [testsets/BSD68]}\n")
    with pytest.raises(RecipeError, match=r"step 'dedup': .*testsets/BSD68 not found"):
        commands(load_recipe(recipe, CLI), tmp_path / "store", tmp_path / "inputs")
    (tmp_path / "inputs" / "testsets" / "BSD68").mkdir(parents=True)
    lines = commands(load_recipe(recipe, CLI), tmp_path / "store", tmp_path / "inputs")
    assert lines[-1][-2:] == ["--against", str(tmp_path / "inputs" / "testsets" / "BSD68")]


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
    sha = load_recipe(recipe, CLI).sha256
    assert {r["command"] for r in records} >= {"ingest", "download", "score", "filter", "patches"}
    assert all(r["recipe_sha256"] == sha for r in records)
    assert (store / "runs" / f"recipe-tiny-{sha[:12]}.yaml").read_bytes() == recipe.read_bytes()
    again = CliRunner().invoke(app, ["build", str(recipe), "--manifest", str(store)])
    assert again.exit_code == 0, again.output
    assert "already scored" in again.output and "already cut" in again.output


def _by_source(store: Store, sql: str, params: list[object]) -> dict[str, int]:
    return {r["source"]: r["n"] for r in store.query(sql, params).to_pylist()}


def test_table_counts_each_sources_images_after_filter_and_dedup(demo_build: tuple[Path, str],
                                                                  tmp_path: Path) -> None:
    path, stdout = demo_build
    store = Store(path)
    demo = load_recipe(ROOT / "manifests/demo/recipe.yaml", CLI)
    curated = _by_source(store, "SELECT i.source, count(DISTINCT s.image_id) AS n FROM selections s JOIN images i "
                         "USING (image_id) WHERE s.selection = ? AND s.image_id NOT IN (SELECT image_id FROM "
                         "latest_duplicates WHERE NOT kept) GROUP BY 1", [demo.selection])
    downloaded = _by_source(store, "SELECT i.source, count(DISTINCT d.image_id) AS n FROM downloads d JOIN images i "
                            "USING (image_id) WHERE d.status = 'ok' GROUP BY 1", [])
    assert 0 < curated["laion-hr"] < downloaded["laion-hr"]  # the demo drops laion-hr images: the two differ
    rows = {r["count"]: r for r in expected_vs_actual(store, demo)}
    printed = {line.split()[0]: line.split()[-1] for line in stdout.split("expected vs actual")[-1].splitlines()
               if line.strip()}
    for source in demo.sources:
        assert rows[f"{source.name}.images"]["actual"] == curated.get(source.name, 0), source.name
        assert printed[f"{source.name}.images"] == str(curated.get(source.name, 0)), source.name
        assert "after filter + dedup" in rows[f"{source.name}.images"]["what is counted"]
    assert rows["after_dedup"]["actual"] == sum(curated.values())
    # a source's `processed` count is its own row, beside the images of that source downloaded ok
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: t\nsources:\n  - {name: laion-hr, kind: parquet, inputs: [x.parquet], "
                      "expected: {processed: 100, images: 2}}\n  - {name: DIV2K, kind: folder, inputs: [d]}\n"
                      f"steps:\n  - filter: {{name: {demo.selection}}}\n")
    rows = {r["count"]: r for r in expected_vs_actual(store, load_recipe(recipe, CLI))}
    assert rows["laion-hr.processed"]["expected"] == 100
    assert rows["laion-hr.processed"]["actual"] == downloaded["laion-hr"]
    assert rows["laion-hr.images"]["expected"] == 2 and "DIV2K.processed" not in rows


def test_a_failed_step_stops_the_build_with_its_exit_code(tmp_path: Path) -> None:
    """A step that fails (here: a NIMA threshold on a store never scored by NIMA) ends the build there."""
    _photos(tmp_path / "photos")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(_recipe(step="  - filter: {nima: 5, name: v1}\n  - report: {out: report.html}\n"))
    store = tmp_path / "store"
    res = CliRunner().invoke(app, ["build", str(recipe), "--manifest", str(store)])
    assert res.exit_code == 2, res.output
    assert "nima" in res.output and res.output.strip().splitlines()[-1] == (
        f"error: {recipe}: step `million-ird filter` failed (exit 2); fix it and run build again "
        "(steps that finished are not redone)")
    assert "== million-ird report" not in res.output and not (store / "report.html").exists()
    assert "expected vs actual" not in res.output
