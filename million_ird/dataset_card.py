"""The dataset card (README.md, Hugging Face card format) that `million-ird export` writes beside the data.

YAML front matter (license, task_categories, size_categories, configs with data_files), then sections
drawn from the store itself: counts per source, the IQA thresholds of the selection used (or of the latest
filter run), the flat-region detector settings and patch size of the patches run in force, dedup settings
(when a dedup run exists), the recipe hash (when a run record carries one), code versions, and each
source's licence and attribution (manifests/sources.yaml; a recipe's own licence text wins).
manifests/sources.yaml is read relative to the package (`SOURCES_FILE`), so it is found in a source
checkout (`pip install -e`); where it is missing the card says so and marks those licences UNKNOWN.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from million_ird.filter import RULES
from million_ird.store import Store, code_version, utc_now

if TYPE_CHECKING:
    from million_ird.export import ExportConfig, ExportPlan

log = logging.getLogger(__name__)

SOURCES_FILE = Path(__file__).resolve().parents[1] / "manifests" / "sources.yaml"
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))
LICENCE_FIELDS = (("title", "Dataset"), ("homepage", "Homepage"), ("licence", "Licence"), ("images", "Images"),
                  ("attribution", "Attribution"), ("redistribution", "Redistribution"))
NOT_FROM_RECIPE = "not built from a recipe"
DEDUP_HIDDEN = {"images_per_batch", "against"}  # settings that do not change which images are dropped


def size_category(n: int) -> str:
    """The Hub's size_categories label for `n` rows."""
    return next((label for limit, label in SIZE_CATEGORIES if n < limit), "n>1B")


def load_runs(root: Path) -> list[dict[str, Any]]:
    """Every readable run record under root/runs, oldest first (run ids sort by time)."""
    runs = []
    for path in sorted((root / "runs").glob("*.json")):
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            log.warning("%s: unreadable run record skipped (%s)", path, exc)
    return runs


def latest_run(runs: list[dict[str, Any]], command: str) -> dict[str, Any] | None:
    """The most recent run record of `command`, or None."""
    return next((r for r in reversed(runs) if r.get("command") == command), None)


def patches_run_in_force(store: Store, runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The latest patches run record whose fingerprint is the one `latest_patches` shows."""
    current = set(store.current_fingerprints("patches"))
    for run in reversed(runs):
        fps = ((run.get("config") or {}).get("fingerprints") or {}).values()
        if run.get("command") == "patches" and current & set(fps):
            return run
    return None


def load_licences(path: Path | None = None) -> dict[str, dict[str, Any]] | None:
    """manifests/sources.yaml keyed by lower-case source name and alias; None when it cannot be read."""
    path = SOURCES_FILE if path is None else path
    try:
        entries = (yaml.safe_load(path.read_text()) or {}).get("sources") or {}
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        log.warning("%s: licence table not read (%s); the card marks licences UNKNOWN", path, exc)
        return None
    if not isinstance(entries, dict):
        log.warning("%s: `sources` is not a mapping; the card marks licences UNKNOWN", path)
        return None
    table: dict[str, dict[str, Any]] = {}
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            continue
        for key in (name, *(entry.get("aliases") or [])):
            table[str(key).lower()] = entry
    return table


def recipe_of(runs: list[dict[str, Any]], prefer: dict[str, Any] | None) -> dict[str, Any] | None:
    """Name, sha256 and path of the recipe the store was built from (the patches run's first), or None."""
    for run in ([prefer] if prefer else []) + list(reversed(runs)):
        if run.get("recipe_sha256"):
            return {"name": run.get("recipe"), "sha256": run["recipe_sha256"], "path": run.get("recipe_path")}
    return None


def recipe_sources(root: Path, recipe: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The `sources` entries of the store's copy of its recipe (runs/recipe-NAME-SHA12.yaml), by lower-case name."""
    if not recipe:
        return {}
    copy = root / "runs" / f"recipe-{recipe['name']}-{recipe['sha256'][:12]}.yaml"
    try:
        sources = (yaml.safe_load(copy.read_text()) or {}).get("sources") or []
    except (OSError, yaml.YAMLError):
        return {}
    return {str(s.get("name", "")).lower(): s for s in sources if isinstance(s, dict)}


def _thresholds(root: Path, name: str) -> str | None:
    """`niqe < 5.0, brisque < 35.0, min side >= 1024` of selections/NAME/selection.json, or None."""
    try:
        record = json.loads((root / "selections" / name / "selection.json").read_text())
    except (OSError, ValueError):
        return None
    rules = [f"{m} {rule}" for m, rule in (record.get("thresholds") or {}).items()]
    return ", ".join([*rules, f"shorter side >= {record.get('min_side')} px"])


def iqa_lines(root: Path, cfg: ExportConfig, runs: list[dict[str, Any]], patches_run: dict[str, Any] | None) -> list[str]:
    """The IQA thresholds behind the export: of the selections in use, else of the latest filter run."""
    cut_from = ((patches_run or {}).get("config") or {}).get("stage", {}).get("selection")
    lines = []
    roles = (("This export is restricted to selection", cfg.selection),
             ("The patches in force were cut from selection", cut_from))
    if cfg.selection and cfg.selection == cut_from:
        roles = (("The patches in force were cut from, and this export is restricted to, selection", cut_from),)
    for role, name in roles:
        if name:
            lines.append(f"- {role} `{name}`: {_thresholds(root, name) or 'thresholds not recorded'}.")
    if lines:
        return lines
    latest = latest_run(runs, "filter")
    if not latest:
        return ["- No IQA filter was run on this store: patches were cut from every downloaded image."]
    fc = latest.get("config") or {}
    rules = [f"{m} {RULES[m]} {fc[m]}" for m in RULES if fc.get(m) is not None]
    rules.append(f"shorter side >= {fc.get('min_side')} px")
    return [f"- Latest filter run (`{fc.get('name')}`, {latest.get('run_id')}): {', '.join(rules)}. It was not "
            "applied to this export: the patches were cut from every downloaded image, and no --selection was given."]


def patch_lines(plan: ExportPlan, patches_run: dict[str, Any] | None) -> list[str]:
    """Patch size (from the data) and the flat-region detector settings of the patches run in force."""
    lines = [f"- Patch size: {', '.join(f'{s}x{s}' for s in plan.sizes)} px, non-overlapping on a centred grid; "
             "PNG bytes copied from the store's shards, never re-encoded."]
    if not patches_run:
        return [*lines, "- Flat-region detector: no patches run record matches the patches in force."]
    stage = (patches_run.get("config") or {}).get("stage") or {}
    fps = ", ".join((patches_run.get("config") or {}).get("fingerprints", {}).values())
    ring = stage.get("despeckle_ring", "?")
    lines.append(f"- Flat-region detector: a {stage.get('cell')}-px cell is flat when the variance of its Sobel "
                 f"gradient magnitude is below {stage.get('flat_threshold')} (0-255 scale), measured on the gray "
                 f"patch after clamping each pixel into the range of its {ring}x{ring}-ring "
                 f"neighbours and a Gaussian blur of sigma {stage.get('dither_sigma', 'not recorded')} px (isolated dots and ordered dither on a "
                 f"smooth gradient count as flat); a patch is dropped when more than {stage.get('max_flat')} of its "
                 "cells are flat.")
    lines.append(f"- Patches run in force: `{patches_run.get('run_id')}` (settings fingerprint `{fps}`, "
                 f"duplicates {'included' if stage.get('include_duplicates') else 'excluded'}).")
    if plan.sixteen_bit_images:
        lines.append(f"- {plan.sixteen_bit_images} source images are 16-bit: their patches are 16-bit PNGs. "
                     "PIL (the `datasets` Image decoder) reduces 16-bit RGB to 8 bits; to keep all 16, take the "
                     "bytes (`ds.cast_column(\"image\", Image(decode=False))`) and decode them with OpenCV "
                     "(`cv2.imdecode(..., cv2.IMREAD_UNCHANGED)`, BGR order).")
    return lines


def dedup_lines(store: Store, runs: list[dict[str, Any]]) -> list[str]:
    """Settings and counts of the dedup run in force (the latest), or a line saying there was none."""
    run = latest_run(runs, "dedup")
    if not run:
        return ["- No dedup run in this store: near-duplicate images were not removed."]
    cfg = run.get("config") or {}
    settings = {k: v for k, v in (cfg.get("stage") or {}).items() if k not in DEDUP_HIDDEN}
    shown = ", ".join(f"{k}={'[' + ', '.join(map(str, v)) + ']' if isinstance(v, list) else v}" for k, v in sorted(settings.items())
                      if v not in (None, [], {}) and not isinstance(v, dict))
    against = [Path(str(f)).name for f in cfg.get("against") or (cfg.get("stage") or {}).get("against") or []]
    dropped = dict(store.query("SELECT reason, count(*) AS n FROM latest_duplicates WHERE NOT kept GROUP BY 1 "
                               "ORDER BY 1").to_pydict())
    by_reason = ", ".join(f"{n} {r}" for r, n in zip(dropped.get("reason", []), dropped.get("n", []), strict=True))
    return [f"- Dedup run in force `{run.get('run_id')}`: {shown or 'default settings'}.",
            f"- Test sets checked for leaks: {', '.join(against)}." if against
            else "- No test-set folder was given: exported patches were not checked against benchmark test sets.",
            f"- {sum(dropped.get('n', []))} images dropped as duplicates ({by_reason or 'none'}); none of their "
            "patches is exported."]


def licence_lines(sources: list[str], table: dict[str, dict[str, Any]] | None,
                  from_recipe: dict[str, dict[str, Any]]) -> list[str]:
    """One subsection per exported source: what the build recipe states, then the toolkit's licence table."""
    lines: list[str] = []
    if table is None:
        lines += ["", f"Note: the toolkit's licence table ({SOURCES_FILE.name}, shipped in a source checkout of "
                  "million-ird under manifests/) was not found when this card was written; every licence not stated "
                  "by the build recipe below is UNKNOWN."]
    for source in sources:
        entry, recipe = (table or {}).get(source.lower(), {}), from_recipe.get(source.lower(), {})
        lines += ["", f"### {source}", ""]
        lines += [f"- {label} (as the build recipe states): {str(recipe[key]).strip()}"
                  for key, label in (("licence", "Licence"), ("attribution", "Attribution"), ("get", "Obtained"))
                  if recipe.get(key)]
        if not entry:
            if not recipe.get("licence"):
                where = ("the toolkit's licence table was not available" if table is None
                         else "this source is neither in manifests/sources.yaml nor described by a recipe")
                lines.append(f"- Licence: UNKNOWN: {where}; check its terms before any use or redistribution.")
            continue
        if recipe:
            lines.append(f"- The toolkit's licence table (manifests/sources.yaml) for a source named {source}:")
        indent = "  " if recipe else ""
        lines += [f"{indent}- {label}: {str(entry[key]).strip()}" for key, label in LICENCE_FIELDS if entry.get(key)]
        if entry.get("verified") is False:
            lines.append(f"{indent}- Verified: no: the terms above were not checked against the authors' own; read "
                         "them at the homepage before redistributing.")
    return lines


def front_matter(cfg: ExportConfig, plan: ExportPlan) -> dict[str, Any]:
    """The card's YAML metadata: licence, task, size, the data files of the one `train` split, the features."""
    import datasets

    from million_ird.export import hf_features, wds_features

    files = "data/train-*.parquet" if cfg.format == "hf" else "shard-*.tar"
    features = hf_features() if cfg.format == "hf" else wds_features()
    return {"license": "other", "license_name": "per-source", "pretty_name": "Million-IRD patches",
            "task_categories": ["image-to-image"], "tags": ["image-restoration", "million-ird"],
            "size_categories": [size_category(plan.total)],
            "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": files}]}],
            "dataset_info": datasets.DatasetInfo(features=features)._to_yaml_dict()}


def _loading(cfg: ExportConfig) -> list[str]:
    """The card's loading snippet for the export's format."""
    if cfg.format == "hf":
        return ["```python", "from datasets import Image, load_dataset", "",
                'ds = load_dataset("parquet", data_files="data/train-*.parquet", split="train")',
                'ds[0]["image"]  # a PIL image; the PNG bytes: ds.cast_column("image", Image(decode=False))', "```"]
    return ["Each sample is `<key>.png` (the patch) and `<key>.json` (its metadata); `key` is the patch_id with "
            "characters other than letters, digits, `_` and `-` replaced by `_`.", "",
            "```python", "from datasets import load_dataset", "",
            'ds = load_dataset("path/to/this/folder", split="train")  # the features in this card\'s header',
            'ds[0]["png"], ds[0]["json"]["flat_ratio"]', "```", "",
            "`load_dataset(\"webdataset\", data_files=...)` without `features=` infers the types from the first "
            "five samples and fails when a field is null in all five but set later (`url` of local images); pass "
            "the features of this card's header then. The shards also read with the `webdataset` package.", ]


def _provenance(store: Store, patches_run: dict[str, Any] | None, recipe: dict[str, Any] | None) -> list[str]:
    now = code_version()
    lines = [f"- Recipe: `{recipe['name']}`, sha256 `{recipe['sha256']}`." if recipe else f"- Recipe: {NOT_FROM_RECIPE}.",
             f"- Exported by million-ird {now.get('million_ird')} (git {now.get('git', 'unknown')}) on "
             f"{utc_now():%Y-%m-%d} from the store `{store.root.name}`."]
    if patches_run:
        v = patches_run.get("versions") or {}
        lines.append(f"- Patches cut by million-ird {v.get('million_ird')} (git {v.get('git', 'unknown')}); "
                     "every command's config and library versions are in the store's runs/ records.")
    return lines


def card_text(store: Store, cfg: ExportConfig, plan: ExportPlan) -> str:
    """The whole README.md of an export of `store` by `cfg` (counts from `plan`)."""
    runs = load_runs(store.root)
    patches_run = patches_run_in_force(store, runs)
    recipe = recipe_of(runs, patches_run)
    images = sum(r["images"] for r in plan.per_source)
    counts = ["| source | images | patches |", "|---|---:|---:|"]
    counts += [f"| {r['source']} | {r['images']} | {r['patches']} |" for r in plan.per_source]
    counts.append(f"| **total** | {images} | {plan.total} |")
    fmt = "Parquet (Hugging Face `datasets`, Image feature)" if cfg.format == "hf" else "WebDataset tar shards"
    body = [
        "# Million-IRD patches", "",
        f"{plan.total} clean image patches from {images} images, for pre-training image restoration models "
        "(the Million-IRD recipe of Dudhane et al., *Dynamic Pre-training: Towards Efficient and Scalable "
        f"All-in-One Image Restoration*, 2024), exported by `million-ird export` as {fmt} in {plan.files} "
        f"file{'s' if plan.files != 1 else ''}.",
        "", "## Loading", "", *_loading(cfg),
        "", "## Fields", "",
        ("`image` (PNG bytes, lossless; `path` is the member name in the store's shard), " if cfg.format == "hf"
         else "`png` (PNG bytes, lossless) and, in `json`: ") + "`patch_id` (`<image_id>_<y>_<x>`), `image_id`, `source`, `x`, `y` (top-left corner in the source image), `size`, "
        "`flat_ratio` (fraction of flat cells), `niqe`, `brisque` (lower is better), `nima` (higher is better; "
        "null when not scored), `url` (the image's origin; null for local folders).",
        "", "## Counts per source", "", *counts,
        "", "## Curation", "", "IQA thresholds:", "", *iqa_lines(store.root, cfg, runs, patches_run),
        "", "Patches:", "", *patch_lines(plan, patches_run),
        "", "Deduplication:", "", *dedup_lines(store, runs),
        "", "## Provenance", "", *_provenance(store, patches_run, recipe),
        "", "## Licences and attribution", "",
        "This collection has no single licence: every patch keeps the terms of the source it was cut from, and "
        "of its image's own copyright holder. Check them before use or redistribution.",
        *licence_lines([r["source"] for r in plan.per_source], load_licences(), recipe_sources(store.root, recipe)),
    ]
    front = yaml.safe_dump(front_matter(cfg, plan), sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + "\n".join(body) + "\n"
