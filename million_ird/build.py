"""Run a recipe: ingest its sources, then every stage in order, each resuming, with the recipe's hash on every run.

A recipe (YAML; see manifests/million-ird-v1/recipe.yaml) is a mapping of `name`, `sources`, `steps`, `expected`:
- `sources`: each with `name`, `kind` (parquet | urls | folder), `inputs` (paths or globs, relative to
  the inputs root: `--inputs`, default the recipe's folder), `get` (where to obtain it), `licence`,
  `attribution`, `ingest` (options of `million-ird ingest`) and `expected` (`images`: the source's images
  after filter + dedup; `processed`: its images downloaded ok);
- `steps`: an ordered list of one-key maps, `{command: {option: value}}`, each run as
  `million-ird COMMAND --manifest DIR --option value ...` (true booleans become `--option`, false ones its
  `--no-option` where the command has one; null leaves the command's default; lists repeat the option;
  an `out` option that is relative is taken inside DIR; `against` folders (dedup's test sets) are taken
  under the inputs root and must exist before anything runs);
- `expected`: counts per stage (from the paper) that the final table sets beside the actual ones.
`load_recipe` checks all of it against the CLI's own commands (`cli_commands`) before anything runs.
Every run record written while a recipe builds carries `recipe` (its name) and `recipe_sha256`.
"""

from __future__ import annotations

import difflib
import glob
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from million_ird import store as store_module
from million_ird.store import Store, StoreError

KINDS = {"parquet": "--parquet", "urls": "--urls", "folder": "--folder"}
INPUT_OPTIONS = ("against",)  # step options naming input folders: relative to the inputs root, checked first
TOP_KEYS = ("name", "sources", "steps", "expected")
SOURCE_KEYS = ("name", "kind", "inputs", "get", "licence", "attribution", "ingest", "expected")
SET_BY_BUILD = ("--manifest",)  # options build gives every command itself; ingest's also name the source
INGEST_SET_BY_BUILD = (*SET_BY_BUILD, "--source", *KINDS.values())
# the images a stage after the filter works on (patches, splits, export: in the selection, not dropped by dedup)
CURATED = "FROM selections s JOIN catalog c USING (image_id) WHERE s.selection = ? AND NOT c.duplicate_dropped"
DOWNLOADED = "FROM catalog c WHERE c.status = 'ok'"
# recipe `expected` key -> (what is counted, SQL over the store's views; ? is the recipe's selection)
COUNTS = {
    "ingested": ("images ingested", "SELECT count(*) FROM images"),
    "downloaded": ("images downloaded ok", f"SELECT count(*) {DOWNLOADED}"),
    "scored": ("images scored", "SELECT count(DISTINCT image_id) FROM latest_score_values"),
    "selected": ("images kept by filter", "SELECT count(*) FROM selections WHERE selection = ?"),
    "after_dedup": ("images after filter + dedup", f"SELECT count(*) {CURATED}"),
    "dropped_duplicates": ("images dropped by dedup as duplicates", "SELECT count(DISTINCT image_id) FILTER "
                           "(WHERE reason <> 'test-set') FROM latest_duplicates WHERE NOT kept"),
    "dropped_test_set": ("images dropped by dedup as test-set matches", "SELECT count(DISTINCT image_id) FILTER "
                         "(WHERE reason = 'test-set') FROM latest_duplicates WHERE NOT kept"),
    "patches_kept": ("patches kept", "SELECT count(*) FROM latest_patches WHERE kept"),
    "pairs": ("degraded/clean pairs", "SELECT count(*) FROM latest_pairs"),
}
# source `expected` key -> (what is counted, SQL giving (source, count)), in the table's order
SOURCE_COUNTS = {
    "processed": ("images downloaded ok", f"SELECT c.source, count(*) {DOWNLOADED} GROUP BY c.source"),
    "images": ("images after filter + dedup", f"SELECT c.source, count(*) {CURATED} GROUP BY c.source"),
}
SHOWN_ALWAYS = ("images",)  # source rows shown without an expected count


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
    expected: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe file plus its sha256 (of the file's bytes)."""

    path: Path
    sha256: str
    name: str
    sources: tuple[Source, ...]
    steps: tuple[tuple[str, dict[str, Any]], ...]
    expected: dict[str, int]

    @property
    def selection(self) -> str | None:
        """The selection name the recipe's filter step writes (None without a filter step)."""
        return next((opts.get("name") for cmd, opts in self.steps if cmd == "filter"), None)


@dataclass(frozen=True)
class CliOption:
    """One option of a CLI command as a recipe gives it: its first long flag, its --no- form (flags only)."""

    flag: str
    negation: str | None
    is_flag: bool
    multiple: bool
    required: bool
    convert: Callable[[Any], Any] = str  # the option's own parser (typer's coercion): raises on a bad value


Cli = Mapping[str, Mapping[str, CliOption]]  # command -> {long option string (its --no- form too): option}


def cli_commands(group: Any) -> dict[str, dict[str, CliOption]]:
    """The commands of a click/typer group a recipe can run (they take --manifest and no argument), with options."""
    out: dict[str, dict[str, CliOption]] = {}
    for name, command in group.commands.items():
        if any(p.param_type_name == "argument" for p in command.params):
            continue
        options: dict[str, CliOption] = {}
        for p in command.params:
            longs = [o for o in p.opts if o.startswith("--")]  # a recipe key names a long option
            if longs:
                spec = CliOption(longs[0], next(iter(p.secondary_opts), None), p.is_flag, p.multiple, p.required,
                                 lambda v, p=p: p.get_runtime_param().coerce(v, param=p, ctx=None))
                options.update({o: spec for o in (*longs, *p.secondary_opts)})
        if "--manifest" in options:
            out[name] = options
    return out


def _mapping(path: Path, where: str, value: Any, example: str) -> dict[str, Any]:
    """`value` as a dict (null is empty); anything else is a RecipeError showing the shape to write."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecipeError(f"{path}: {where} must be a mapping like {example}, not {value!r}")
    return dict(value)


def _close(word: str, choices: Sequence[str]) -> str:
    """A `did you mean` hint for a mistyped name (empty when nothing is close)."""
    match = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def _value_problem(option: CliOption, value: Any) -> str | None:
    """Why `value` cannot be given to `option` (None when it can; null always can: the command's default)."""
    if value is None:
        return None
    if option.is_flag:
        return None if isinstance(value, bool) else "takes true or false"
    if isinstance(value, list) and not option.multiple:
        return "takes one value, not a list"
    values = value if isinstance(value, list) else [value]
    if any(v is None or isinstance(v, (bool, dict, list)) for v in values):
        return "takes a number or a string (a list of them where the option repeats)"
    try:
        option.convert([str(v) for v in values] if option.multiple else str(value))
    except Exception as exc:  # noqa: BLE001 - typer's BadParameter, or what a custom type raises
        reason = " ".join(str(getattr(exc, "message", exc)).split())
        return f"takes a valid value ({reason[:1].lower()}{reason[1:]})"
    return None


def _flag(key: Any) -> str:
    """The CLI flag a recipe option key names (`min_side` -> `--min-side`)."""
    return "--" + str(key).replace("_", "-")


def _option(path: Path, where: str, command: str, key: Any, value: Any, cli: Cli,
            set_by_build: Sequence[str]) -> CliOption:
    """The option `key` names for `million-ird COMMAND`, checked with its value; else a RecipeError."""
    flag, known = _flag(key), cli[command]
    if flag in set_by_build:
        raise RecipeError(f"{path}: {where}: {flag} is set by build itself; remove `{key}`")
    if flag not in known:
        raise RecipeError(f"{path}: {where}: `million-ird {command}` has no option {flag}"
                          f"{_close(flag, list(known))}; see `million-ird {command} --help`")
    problem = _value_problem(known[flag], value)
    if problem:
        raise RecipeError(f"{path}: {where}: {flag} {problem}, not {value!r}")
    return known[flag]


def _options(path: Path, where: str, command: str, given: dict[str, Any], cli: Cli,
             set_by_build: Sequence[str] = SET_BY_BUILD) -> dict[str, Any]:
    """Check one step's (or ingest's) options against `million-ird COMMAND`; a false flag becomes its --no- form."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        option = _option(path, where, command, key, value, cli, set_by_build)
        if value is False and option.negation and _flag(key) == option.flag:
            key, value = option.negation[2:], True  # `progress: false` must not leave a true default in force
        out[key] = value
    given_flags = {cli[command][_flag(k)].flag for k, v in given.items() if v is not None}
    missing = sorted({o.flag for o in cli[command].values() if o.required} - given_flags - set(set_by_build))
    if missing:
        raise RecipeError(f"{path}: {where}: `million-ird {command}` needs {', '.join(missing)}; add it")
    return out


def _counts(path: Path, where: str, value: Any, known: Sequence[str]) -> dict[str, int]:
    """An `expected` mapping: known keys only, each a count."""
    counts = _mapping(path, where, value, "{" + f"{known[0]}: 1000" + "}")
    for key, n in counts.items():
        if key not in known:
            raise RecipeError(f"{path}: {where}: unknown count {key!r}{_close(str(key), known)}; "
                              f"the counts are {', '.join(known)}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise RecipeError(f"{path}: {where}.{key} must be a whole number, not {n!r}")
    return counts


def _source(path: Path, i: int, raw: Any, cli: Cli) -> Source:
    """Check and parse `sources[i]`."""
    s = _mapping(path, f"sources[{i}]", raw, "{name: DIV2K, kind: folder, inputs: [DIV2K/HR], ...}")
    unknown = [k for k in s if k not in SOURCE_KEYS]
    if unknown:
        raise RecipeError(f"{path}: sources[{i}]: unknown key {unknown[0]!r}{_close(str(unknown[0]), SOURCE_KEYS)}; "
                          f"a source has {', '.join(SOURCE_KEYS)}")
    inputs = s.get("inputs") if isinstance(s.get("inputs"), list) else [s.get("inputs")]
    named = isinstance(s.get("name"), str) and s["name"]
    if s.get("kind") not in KINDS or not named or not inputs or not all(isinstance(x, str) and x for x in inputs):
        raise RecipeError(f"{path}: sources[{i}] needs name, kind ({' | '.join(KINDS)}) and inputs (paths or globs)")
    where = f"sources[{i}] ({s['name']})"
    ingest = _options(path, f"{where}.ingest", "ingest", _mapping(path, f"{where}.ingest", s.get("ingest"),
                                                                   "{min_side: 1024}"), cli, INGEST_SET_BY_BUILD)
    return Source(s["name"], s["kind"], tuple(inputs), str(s.get("get") or ""), str(s.get("licence") or ""),
                  str(s.get("attribution") or ""), ingest, _counts(path, f"{where}.expected", s.get("expected"),
                                                                  list(SOURCE_COUNTS)))


def _step(path: Path, i: int, raw: Any, cli: Cli) -> tuple[str, dict[str, Any]]:
    """Check and parse `steps[i]`: a known command and its options."""
    if not isinstance(raw, dict) or len(raw) != 1:
        raise RecipeError(f"{path}: steps[{i}] must be a one-key mapping like `- patches: {{size: 512}}`, "
                          f"not {raw!r}")
    (cmd, opts), = raw.items()
    cmd = str(cmd)
    if cmd not in cli:
        raise RecipeError(f"{path}: steps[{i}] ({cmd}): no such command{_close(cmd, list(cli))}; a step runs one "
                          f"of {', '.join(sorted(cli))}")
    where = f"steps[{i}] ({cmd})"
    return cmd, _options(path, where, cmd, _mapping(path, f"{where} options", opts, "{option: value}"), cli)


def load_recipe(path: Path, cli: Cli) -> Recipe:
    """Parse and check a whole recipe file against `cli` (see `cli_commands`); a problem is a one-line RecipeError."""
    try:
        raw = path.read_bytes()
        doc = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: cannot read the recipe: {exc}") from exc
    if not isinstance(doc, dict) or "sources" not in doc or "steps" not in doc:
        raise RecipeError(f"{path}: a recipe is a mapping with `sources` and `steps`")
    unknown = [k for k in doc if k not in TOP_KEYS]
    if unknown:
        raise RecipeError(f"{path}: unknown key {unknown[0]!r}{_close(str(unknown[0]), TOP_KEYS)}; a recipe has "
                          f"{', '.join(TOP_KEYS)}")
    for key in ("sources", "steps"):
        if not isinstance(doc[key], list):
            raise RecipeError(f"{path}: `{key}` must be a list (see manifests/demo/recipe.yaml), not {doc[key]!r}")
    sources = tuple(_source(path, i, s, cli) for i, s in enumerate(doc["sources"]))
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise RecipeError(f"{path}: two sources are named {next(n for n in names if names.count(n) > 1)!r}; "
                          "give each its own name")
    steps = tuple(_step(path, i, step, cli) for i, step in enumerate(doc["steps"]))
    return Recipe(path.resolve(), hashlib.sha256(raw).hexdigest(), str(doc.get("name") or path.stem), sources,
                  steps, _counts(path, "expected", doc.get("expected"), list(COUNTS)))


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
        flag = _flag(key)
        if value is False or value is None:  # the command's default (a false flag with a --no- form is one already)
            continue
        if key == "out" and not Path(str(value)).is_absolute():
            value = str(manifest / str(value))
        if key in INPUT_OPTIONS and inputs_root is not None:
            value = [_input_path(v, inputs_root, command) for v in (value if isinstance(value, list) else [value])]
        if value is True:
            args.append(flag)
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


def commands(recipe: Recipe, manifest: Path, inputs_root: Path | None = None,
             extra: dict[str, list[str]] | None = None) -> list[list[str]]:
    """Every command line the recipe runs, in order (ingest per source, then the steps); checks every input.

    `inputs_root` defaults to the recipe's folder."""
    root = inputs_root or recipe.path.parent
    out: list[list[str]] = []
    for source in recipe.sources:
        paths = source_inputs(source, root)
        ingest = ["ingest", "--manifest", str(manifest), "--source", source.name]
        for p in paths:
            ingest += [KINDS[source.kind], p]
        out.append(ingest + flags(source.ingest, manifest))
    for cmd, opts in recipe.steps:
        out.append([cmd, "--manifest", str(manifest), *flags(opts, manifest, root, cmd),
                    *(extra or {}).get(cmd, [])])
    return out


def _query(store: Store, sql: str, recipe: Recipe) -> list[tuple[Any, ...]] | None:
    """Rows of `sql` (its ? is the recipe's selection); None when that selection or a table is absent."""
    if "?" in sql and recipe.selection is None:
        return None
    try:
        return [tuple(r.values()) for r in store.query(sql, [recipe.selection] if "?" in sql else []).to_pylist()]
    except StoreError:
        return None


def _source_rows(store: Store, recipe: Recipe) -> list[dict[str, Any]]:
    """Per source: its images after filter + dedup and, where the recipe expects it, its images downloaded ok."""
    counts = {key: _query(store, sql, recipe) for key, (_, sql) in SOURCE_COUNTS.items()}
    return [{"count": f"{s.name}.{key}", "what is counted": f"{s.name} {what}", "expected": s.expected.get(key),
             "actual": None if counts[key] is None else dict(counts[key]).get(s.name, 0)}
            for s in recipe.sources for key, (what, _) in SOURCE_COUNTS.items()
            if key in s.expected or key in SHOWN_ALWAYS]


def expected_vs_actual(store: Store, recipe: Recipe) -> list[dict[str, Any]]:
    """Rows (count, what is counted, expected, actual): the funnel, then the per-source rows (`SOURCE_COUNTS`)."""
    rows = []
    for key, (what, sql) in COUNTS.items():
        found = _query(store, sql, recipe)
        rows.append({"count": key, "what is counted": what, "expected": recipe.expected.get(key),
                     "actual": found[0][0] if found else None})
    return rows + _source_rows(store, recipe)


def build(recipe: Recipe, lines: Sequence[Sequence[str]], manifest: Path, run: Callable[[Sequence[str]], None],
          echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run `lines` (see `commands`) on the store at `manifest` through `run`, the recipe's hash on every run
    record; returns the expected-vs-actual rows."""
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
