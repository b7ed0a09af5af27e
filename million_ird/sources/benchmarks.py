"""Benchmark folder layouts (BSD400/WED, BSD68, Urban100, Rain100L, RESIDE OTS/SOTS) and their finders.

Each finder returns the pairs it found (clean path, degraded path or None, metadata) and checks the
layout: a missing or misnamed folder raises `LayoutError` with a one-line message showing the expected
layout. Counts are compared against the reference protocol by `found_vs_expected`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from million_ird.images import is_image_file

# expected counts of the reference all-in-one protocol (PromptIR/DyNet)
EXPECTED = {"denoise-train": 5144, "rain100l-train": 200, "ots": 72135, "bsd68": 68, "urban100": 100,
            "rain100l-test": 100, "sots": 500}
LAYOUTS = {
    "denoise-train": "--denoise-train DIR... : BSD400 (400 *.jpg) and WED (4,744 *.bmp) clean images, any depth",
    "rain100l": ("--rain100l PATH : PATH/train/{rainy|input}/rain-N.png + PATH/train/{gt|target}/norain-N.png "
                 "(200), PATH/test/{rainy|input}/rain-N.png + PATH/test/{gt|target}/norain-N.png (100)"),
    "ots": ("--reside-ots PATH : PATH/synthetic/[partK/]<id>_<A>_<beta>.jpg + PATH/original/<id>.{jpg|png} "
            "(72,135 hazy in the reference list)"),
    "sots": "--sots PATH : PATH/{hazy|input}/<id>_<A>_<beta>.{jpg|png} + PATH/{gt|clear|target}/<id>.{png|jpg} (500)",
    "bsd68": "--bsd68 PATH : PATH/*.png (68 clean CBSD68 colour images)",
    "urban100": "--urban100 PATH : PATH/img_001.png ... PATH/img_100.png (100 clean images)",
}
HAZY_NAME = re.compile(r"^(?P<id>[^_]+)_(?P<A>[0-9.]+)_(?P<beta>[0-9.]+)$")
RAIN_NAME = re.compile(r"^rain-(?P<n>\d+)$")


class LayoutError(ValueError):
    """A benchmark folder is missing or misnamed (the message shows the expected layout)."""


@dataclass(frozen=True)
class Found:
    """One pair from a benchmark folder: clean path, degraded path (None = degrade on the fly), metadata."""

    name: str
    clean: Path
    degraded: Path | None = None
    meta: dict = field(default_factory=dict)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))


def _need_dir(path: Path, layout: str, what: str) -> Path:
    if not path.is_dir():
        raise LayoutError(f"{what} {path} is not a folder; expected {LAYOUTS[layout]}")
    return path


def _sub(root: Path, names: tuple[str, ...], layout: str) -> Path:
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise LayoutError(f"no folder {' or '.join(repr(n) for n in names)} in {root}; expected {LAYOUTS[layout]}")


def _by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in _images(folder)}


def find_denoise_train(folders: list[Path]) -> list[Found]:
    """Every clean image under the given folders (BSD400 + WED in the reference)."""
    out = []
    for folder in folders:
        _need_dir(folder, "denoise-train", "--denoise-train")
        out += [Found(f"{folder.name}/{p.relative_to(folder).as_posix()}", p) for p in _images(folder)]
    if folders and not out:
        raise LayoutError(f"no images in {', '.join(map(str, folders))}; expected {LAYOUTS['denoise-train']}")
    return out


def find_rain_pairs(root: Path, split: str) -> list[Found]:
    """Rain100L pairs of one split: rain-N.png with its norain-N.png."""
    base = _sub(_need_dir(root, "rain100l", "--rain100l"), (split,), "rain100l")
    rainy = _by_stem(_sub(base, ("rainy", "input", "rain"), "rain100l"))
    clean = _by_stem(_sub(base, ("gt", "target", "norain"), "rain100l"))
    out = []
    for stem, path in sorted(rainy.items()):
        m = RAIN_NAME.match(stem)
        if m and f"no{stem}" in clean:
            out.append(Found(f"rain100l/{split}/{stem}", clean[f"no{stem}"], path, {"index": int(m["n"])}))
    return out


def _hazy_pairs(hazy: list[Path], clean: dict[str, Path], prefix: str, hazy_root: Path) -> list[Found]:
    out = []
    for path in hazy:
        m = HAZY_NAME.match(path.stem)
        if m and m["id"] in clean:
            meta = {"A": float(m["A"]), "beta": float(m["beta"]), "id": m["id"]}
            out.append(Found(f"{prefix}/{path.relative_to(hazy_root).as_posix()}", clean[m["id"]], path, meta))
    return out


def find_ots(root: Path) -> list[Found]:
    """RESIDE OTS training pairs: synthetic/[partK/]<id>_<A>_<beta>.jpg with original/<id>.*."""
    root = _need_dir(root, "ots", "--reside-ots")
    synthetic = _sub(root, ("synthetic", "hazy"), "ots")
    clean = _by_stem(_sub(root, ("original", "clear", "gt"), "ots"))
    return _hazy_pairs(_images(synthetic), clean, "ots", synthetic)


def find_sots(root: Path) -> list[Found]:
    """SOTS-outdoor test pairs: hazy/<id>_<A>_<beta>.* with gt/<id>.*."""
    root = _need_dir(root, "sots", "--sots")
    hazy = _sub(root, ("hazy", "input"), "sots")
    clean = _by_stem(_sub(root, ("gt", "clear", "target"), "sots"))
    return _hazy_pairs(_images(hazy), clean, "sots", hazy)


def find_clean_set(root: Path, layout: str) -> list[Found]:
    """A clean test set (bsd68 or urban100); Urban100 names must be img_NNN."""
    root = _need_dir(root, layout, f"--{layout}")
    images = _images(root)
    if layout == "urban100":
        images = [p for p in images if re.fullmatch(r"img_\d{3}", p.stem)]
    if not images:
        raise LayoutError(f"no images named as expected in {root}; expected {LAYOUTS[layout]}")
    return [Found(f"{layout}/{p.relative_to(root).as_posix()}", p) for p in images]


def found_vs_expected(counts: dict[str, int]) -> list[dict[str, object]]:
    """Rows of (set, found, expected, status) for the sets that were given."""
    rows = []
    for name, found in counts.items():
        expected = EXPECTED[name]
        ok = found == expected or (name == "sots" and found == 492)
        rows.append({"set": name, "found": found, "expected": expected, "status": "ok" if ok else "INCOMPLETE"})
    return rows
