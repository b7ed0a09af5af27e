"""Run a recipe: ingest its sources, then every stage in order, each resuming, with the recipe's hash on every run.

A recipe (YAML; see manifests/million-ird-v1/recipe.yaml) names
- `sources`: each with `name`, `kind` (parquet | urls | folder), `inputs` (paths or globs, relative to
  the inputs root: `--inputs`, default the recipe's folder), `get` (where to obtain it), `licence`,
  `attribution`, `ingest` (options of `million-ird ingest`) and `expected` (counts, for the report);
- `steps`: an ordered list of one-key maps, `{command: {option: value}}`, each run as
  `million-ird COMMAND --manifest DIR --option value ...` (true booleans become `--option`; lists repeat
  the option; an `out` option that is relative is taken inside DIR; `against` folders (dedup's test sets)
  are taken under the inputs root and must exist before anything runs);
- `expected`: counts per stage (from the paper) that the final table sets beside the actual ones.
Every run record written while a recipe builds carries `recipe` (its name) and `recipe_sha256`.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from million_ird import store as store_module
from million_ird.store import Store, StoreError

KINDS = {"parquet": "--parquet", "urls": "--urls", "folder": "--folder"}
INPUT_OPTIONS = ("against",)  # step options naming input folders: relative to the inputs root, checked first
# actual count per funnel stage (SQL over the store's views; NAME is the recipe's selection)
COUNTS = {
    "ingested": "SELECT count(*) FROM images",
    "downloaded": "SELECT count(*) FROM catalog WHERE status = 'ok'",
    "scored": "SELECT count(DISTINCT image_id) FROM latest_score_values",
    "selected": "SELECT count(*) FROM selections WHERE selection = ?",
    "after_dedup": "SELECT count(*) FROM selections s JOIN catalog c USING (image_id) "
                   "WHERE s.selection = ? AND NOT c.duplicate_dropped",
    "dropped_duplicates": "SELECT count(DISTINCT image_id) FILTER (WHERE reason <> 'test-set') FROM latest_duplicates WHERE NOT kept",
    "dropped_test_set": "SELECT count(DISTINCT image_id) FILTER (WHERE reason = 'test-set') FROM latest_duplicates WHERE NOT kept",
    "patches_kept": "SELECT count(*) FROM latest_patches WHERE kept",
    "pairs": "SELECT count(*) FROM latest_pairs",
}


class RecipeError(ValueError):
    """A recipe that cannot be built as written (the message names the field and what to do)."""


@dataclass(frozen=True)
class Source:
    """One source of a recipe: how to ingest it and where it comes from."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    get: str = ""
    licence: str = ""
    attribution: str = ""
    ingest: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe file plus its sha256 (of the file's bytes)."""

    path: Path
    sha256: str
    name: str
    sources: tuple[Source, ...]
    steps: tuple[tuple[str, dict[str, Any]], ...]
    expected: dict[str, Any]

    @property
    def selection(self) -> str | None:
        """The selection name the recipe's filter step writes (None without a filter step)."""
        return next((opts.get("name") for cmd, opts in self.steps if cmd == "filter"), None)


def load_recipe(path: Path) -> Recipe:
    """Parse and check a recipe file; a problem is a RecipeError naming the file and the field."""
    try:
        raw = path.read_bytes()
        doc = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: cannot read the recipe: {exc}") from exc
    if not isinstance(doc, dict) or "sources" not in doc or "steps" not in doc:
        raise RecipeError(f"{path}: a recipe is a mapping with `sources` and `steps`")
    sources = []
    for i, s in enumerate(doc["sources"]):
        if not isinstance(s, dict) or s.get("kind") not in KINDS or not s.get("name") or not s.get("inputs"):
            raise RecipeError(f"{path}: sources[{i}] needs name, kind ({' | '.join(KINDS)}) and inputs")
        inputs = s["inputs"] if isinstance(s["inputs"], list) else [s["inputs"]]
        sources.append(Source(s["name"], s["kind"], tuple(map(str, inputs)), s.get("get", ""), s.get("licence", ""),
                              s.get("attribution", ""), dict(s.get("ingest") or {}), dict(s.get("expected") or {})))
    steps = []
    for i, step in enumerate(doc["steps"]):
        if not isinstance(step, dict) or len(step) != 1:
            raise RecipeError(f"{path}: steps[{i}] must be a one-key mapping {{command: {{option: value}}}}")
        (cmd, opts), = step.items()
        steps.append((str(cmd), dict(opts or {})))
    return Recipe(path.resolve(), hashlib.sha256(raw).hexdigest(), str(doc.get("name", path.stem)), tuple(sources),
                  tuple(steps), dict(doc.get("expected") or {}))


def _input_path(value: Any, inputs_root: Path, command: str) -> str:
    """An input folder option (`against`) under the inputs root; a missing one is a RecipeError."""
    path = Path(str(value)) if Path(str(value)).is_absolute() else inputs_root / str(value)
    if not path.exists():
        raise RecipeError(f"step {command!r}: {path} not found (a test-set folder; pass --inputs DIR where it lives)")
    return str(path)


def flags(options: dict[str, Any], manifest: Path, inputs_root: Path | None = None, command: str = "") -> list[str]:
    """CLI arguments for one step's options (see the module docstring for the rules)."""
    args: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if key == "out" and not Path(str(value)).is_absolute():
            value = str(manifest / str(value))
        if key in INPUT_OPTIONS and inputs_root is not None:
            value = [_input_path(v, inputs_root, command) for v in (value if isinstance(value, list) else [value])]
        if value is True:
            args.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            for v in value:
                args += [flag, str(v)]
        else:
            args += [flag, str(value)]
    return args


def source_inputs(source: Source, root: Path) -> list[str]:
    """The input files or folder of a source under `root`; a missing one is a RecipeError saying where to get it."""
    found: list[str] = []
    for pattern in source.inputs:
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        matches = sorted(glob.glob(full))
        if not matches:
            where = f"; get it from {source.get}" if source.get else ""
            raise RecipeError(f"source {source.name!r}: {full} not found{where} (or pass --inputs DIR where it lives)")
        found += matches
    if source.kind != "parquet" and len(found) != 1:
        raise RecipeError(f"source {source.name!r}: kind {source.kind} takes one input, {len(found)} matched")
    return found


def commands(recipe: Recipe, manifest: Path, inputs_root: Path,
             extra: dict[str, list[str]] | None = None) -> list[list[str]]:
    """Every command line the recipe runs, in order (ingest per source, then the steps)."""
    out: list[list[str]] = []
    for source in recipe.sources:
        paths = source_inputs(source, inputs_root)
        ingest = ["ingest", "--manifest", str(manifest), "--source", source.name]
        for p in paths:
            ingest += [KINDS[source.kind], p]
        out.append(ingest + flags(source.ingest, manifest))
    for cmd, opts in recipe.steps:
        out.append([cmd, "--manifest", str(manifest), *flags(opts, manifest, inputs_root, cmd),
                    *(extra or {}).get(cmd, [])])
    return out


def actual_counts(store: Store, recipe: Recipe) -> dict[str, int | None]:
    """The funnel's actual counts (None for a stage whose table or selection is absent)."""
    out: dict[str, int | None] = {}
    for stage, sql in COUNTS.items():
        params = [recipe.selection] if "?" in sql else []
        if "?" in sql and recipe.selection is None:
            out[stage] = None
            continue
        try:
            out[stage] = store.query(sql, params).column(0)[0].as_py()
        except StoreError:
            out[stage] = None
    return out


def expected_vs_actual(store: Store, recipe: Recipe) -> list[dict[str, Any]]:
    """Rows (stage, expected, actual) for the funnel, plus ingested images per source."""
    actual = actual_counts(store, recipe)
    rows = [{"stage": k, "expected": recipe.expected.get(k), "actual": v} for k, v in actual.items()]
    per_source = {r["source"]: r["n"] for r in store.query(
        "SELECT source, count(*) AS n FROM catalog WHERE status = 'ok' GROUP BY source").to_pylist()}
    rows += [{"stage": f"downloaded: {s.name}", "expected": s.expected.get("images"),
              "actual": per_source.get(s.name, 0)} for s in recipe.sources]
    return rows


def build(recipe: Recipe, manifest: Path, run: Callable[[Sequence[str]], None], inputs_root: Path | None = None,
          extra: dict[str, list[str]] | None = None, echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run every command of `recipe` on the store at `manifest` through `run`; returns expected-vs-actual rows."""
    root = inputs_root or recipe.path.parent
    lines = commands(recipe, manifest, root, extra)  # every input is checked before anything runs
    context = {"recipe": recipe.name, "recipe_sha256": recipe.sha256, "recipe_path": str(recipe.path)}
    store_module.RUN_CONTEXT.update(context)
    try:
        for args in lines:
            echo(f"\n== million-ird {' '.join(args)}")
            run(args)
    finally:
        for key in context:
            store_module.RUN_CONTEXT.pop(key, None)
    return expected_vs_actual(Store(manifest), recipe)
