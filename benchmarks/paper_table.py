"""Our DyNet scores beside the paper's Table 1 (all-in-one: SOTS, Rain100L, BSD68 σ15/25/50), with deltas.

    python -m benchmarks.paper_table RESULTS.json [MORE.json ...]

RESULTS.json is what `python -m dynet_ref.evaluate --json` writes: {variant: {"tasks": {set: {"psnr",
"ssim", "images"}}, "average": {...}}}. Our set names map to Table 1's columns: dehaze:SOTS → SOTS,
derain:Rain100L → Rain100L, denoise:bsd68:s15/s25/s50 → BSD68 σ15/25/50 (case-insensitive). The Average
column is recomputed over exactly those five columns, as Table 1 averages them, and left blank unless all
five are present (the evaluator's own "average" covers whatever sets it scored and is not used). A set
missing from our results is blank, never zero. Each of our rows is followed by its delta (ours − paper)
against the paper's row of the same variant (S → DyNet-S, L → DyNet-L). When RESULTS.meta.json sits
beside a results file, its protocol is printed and flagged when it is not the reference one.

The project's spec (specs/dynet.md) holds Table 1's DyNet-S, DyNet-L and PromptIR rows; it has no
"Table 5", so none is printed. For context the published all-in-one averages (specs/training.md) follow.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

COLUMNS = ("SOTS", "Rain100L", "BSD68 σ15", "BSD68 σ25", "BSD68 σ50")
SET_TO_COLUMN = {"dehaze:sots": "SOTS", "derain:rain100l": "Rain100L", "denoise:bsd68:s15": "BSD68 σ15",
                 "denoise:bsd68:s25": "BSD68 σ25", "denoise:bsd68:s50": "BSD68 σ50"}
Score = tuple[float, float]  # (PSNR, SSIM)
# Table 1 of the DyNet paper (specs/dynet.md): SOTS, Rain100L, BSD68 σ15, σ25, σ50, average
PAPER: dict[str, tuple[Score, ...]] = {
    "DyNet-S": ((31.51, 0.980), (38.11, 0.981), (34.06, 0.935), (31.41, 0.891), (28.15, 0.802), (32.65, 0.918)),
    "DyNet-L": ((31.98, 0.981), (38.71, 0.983), (34.11, 0.936), (31.44, 0.892), (28.18, 0.803), (32.88, 0.920)),
    "PromptIR": ((30.58, 0.974), (36.37, 0.972), (33.98, 0.933), (31.31, 0.888), (28.06, 0.799), (32.06, 0.913)),
}
# published all-in-one averages over the same five sets (specs/training.md)
PUBLISHED_AVERAGES = (
    ("BaryIR-PromptIR (TPAMI 2026)", "33.13/0.923", "–"),
    ("MIRAGE-S (ICLR 2026)", "32.91/0.919", "9.7 M"),
    ("DyNet-L", "32.88/0.920", "16.7 M"),
    ("MoCE-IR (CVPR 2025)", "32.73/0.917", "25.4 M"),
    ("AdaIR (ICLR 2025)", "32.69/0.918", "~29 M"),
    ("DyNet-S", "32.65/0.918", "16.7 M (same weights)"),
    ("PromptIR", "32.06/0.913", "35.6 M"),
)
LABEL_WIDTH = 30
CELL_WIDTH = 14


class ResultsError(ValueError):
    """A results file that cannot be read as evaluator output."""


def paper_row(name: str) -> dict[str, Score]:
    """One row of Table 1 as {column: (psnr, ssim)}, 'Average' included."""
    return dict(zip((*COLUMNS, "Average"), PAPER[name], strict=True))


def our_row(variant_results: dict[str, Any]) -> dict[str, Score]:
    """Our scores mapped to Table 1's columns; 'Average' only when all five columns are present."""
    row: dict[str, Score] = {}
    for name, t in variant_results.get("tasks", {}).items():
        column = SET_TO_COLUMN.get(name.lower())
        if column is not None:
            row[column] = (float(t["psnr"]), float(t["ssim"]))
    if all(c in row for c in COLUMNS):
        row["Average"] = (sum(row[c][0] for c in COLUMNS) / 5, sum(row[c][1] for c in COLUMNS) / 5)
    return row


def delta(ours: dict[str, Score], paper: dict[str, Score]) -> dict[str, Score]:
    """Ours − paper for every column both have."""
    return {c: (ours[c][0] - paper[c][0], ours[c][1] - paper[c][1]) for c in ours if c in paper}


def _cells(row: dict[str, Score], signed: bool = False) -> str:
    fmt = "{:+.2f}/{:+.3f}" if signed else "{:.2f}/{:.3f}"
    return "".join(f"{fmt.format(*row[c]) if c in row else '':>{CELL_WIDTH}}" for c in (*COLUMNS, "Average"))


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """Load one evaluator results file; a ResultsError names the file when its shape is wrong."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ResultsError(f"{path}: not a readable JSON file ({err})") from err
    if not isinstance(data, dict) or not data or not all(
            isinstance(v, dict) and isinstance(v.get("tasks"), dict) for v in data.values()):
        raise ResultsError(f"{path}: not `python -m dynet_ref.evaluate --json` output "
                           "({variant: {tasks: {...}, average: {...}}})")
    return data


def _protocol_note(path: Path) -> str | None:
    meta = path.with_suffix(".meta.json")
    if not meta.is_file():
        return None
    try:
        protocol = json.loads(meta.read_text()).get("protocol", {})
    except (OSError, json.JSONDecodeError):
        return f"{meta.name}: unreadable"
    flag = "" if protocol.get("reference") else "  <-- NOT the reference protocol: not comparable to Table 1"
    return f"{path.name}: {protocol.get('description', '?')}{flag}"


def render(results: dict[Path, dict[str, dict[str, Any]]]) -> str:
    """The comparison table (paper rows, then ours with deltas) and the published averages."""
    header = f"{'':<{LABEL_WIDTH}}" + "".join(f"{c:>{CELL_WIDTH}}" for c in (*COLUMNS, "Average"))
    lines = ["Table 1, all-in-one (PSNR/SSIM). Average = mean of the five columns shown; blank = not scored.",
             header]
    lines += [f"{'paper ' + name:<{LABEL_WIDTH}}{_cells(paper_row(name))}" for name in PAPER]
    notes = []
    for path, data in results.items():
        for variant, variant_results in data.items():
            ours = our_row(variant_results)
            lines.append(f"{f'ours {variant} ({path.name})':<{LABEL_WIDTH}}{_cells(ours)}")
            ref = f"DyNet-{variant.upper()}"
            if ref in PAPER:
                lines.append(f"{f'  Δ vs paper {ref}':<{LABEL_WIDTH}}{_cells(delta(ours, paper_row(ref)), True)}")
        note = _protocol_note(path)
        if note:
            notes.append(note)
    if notes:
        lines += ["", "protocol of our results:"] + [f"  {n}" for n in notes]
    lines += ["", "Published all-in-one averages (SOTS, Rain100L, BSD68 σ15/25/50):",
              f"{'method':<{LABEL_WIDTH}}{'average':>{CELL_WIDTH}}  params"]
    lines += [f"{m:<{LABEL_WIDTH}}{a:>{CELL_WIDTH}}  {p}" for m, a, p in PUBLISHED_AVERAGES]
    lines.append("(DSRIR's 33.27 scores rain on Y and is not comparable.)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: print the comparison; exit 2 with one `error:` line on an unreadable file."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paper_table", description=(
        "Print our evaluator results beside the DyNet paper's Table 1 (with deltas) and the published "
        "all-in-one averages."))
    parser.add_argument("results", nargs="+", type=Path,
                        help="results JSON files written by `python -m dynet_ref.evaluate --json` "
                        "(*.meta.json files are skipped)")
    args = parser.parse_args(argv)
    try:
        results = {p: read_results(p) for p in args.results if not p.name.endswith(".meta.json")}
    except ResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not results:
        print("error: only .meta.json files given; pass the results JSON beside them", file=sys.stderr)
        return 2
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
