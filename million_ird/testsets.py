"""Benchmark folder layouts (BSD400/WED, BSD68, Urban100, Rain100L, RESIDE OTS/SOTS) and their finders.

Each finder returns the pairs it found (clean path, degraded path or None, metadata) and checks the
layout: a missing or misnamed folder raises `LayoutError` with a one-line message showing the expected
layout. Counts are compared against the reference protocol by `found_vs_expected`.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from million_ird.atomic import atomic_path

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

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
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


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


# ---------------------------------------------------------------- exports to other projects' layouts

TASK_ORDER = ("denoise", "derain", "dehaze")
DSRIR_ROWS = 5000  # rain and haze rows per task in DSRIR's lists


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    dst.symlink_to(src.resolve())


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def _write_png(dst: Path, image: np.ndarray) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink():
        dst.unlink()
    with atomic_path(dst) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 3]):
            raise OSError(f"cannot write {dst}; check the folder is writable")


def _place(src: Path | np.ndarray, dst: Path) -> None:
    """A symlink to a stored file, or a PNG of an image materialised for the export."""
    if isinstance(src, Path):
        _link(src, dst)
    else:
        _write_png(dst, src)


def _degraded(row: dict, resolve: Callable[[str], Path],
              rederive: Callable[[dict], np.ndarray] | None) -> tuple[Path | np.ndarray, str]:
    """The degraded side of a rain/haze row and its file suffix: the stored file, or re-derived pixels."""
    if row["degraded"]:
        path = resolve(row["degraded"])
        return path, path.suffix
    if row["degradation"] is None or rederive is None:
        raise ValueError(f"pair {row['pair_id']} has no degraded file and no way to re-derive it; pass rederive=")
    return rederive(row), ".png"


def export_promptir(rows: list[dict], resolve: Callable[[str], Path], out: Path,
                    rederive: Callable[[dict], np.ndarray] | None = None) -> dict[str, int]:
    """PromptIR/DyNet layout: Train/{Denoise,Derain,Dehaze}, data_dir/*.txt lists and test/ folders.

    Stored files are symlinked. Rain/haze rows degraded on the fly (no `degraded` file) are materialised as
    PNG with `rederive(row)` (their stored degradation, args and seed), so every row is exported. Noise
    rows export their clean image once (PromptIR adds the noise itself).
    """
    counts: Counter = Counter()
    lists: dict[str, list[str]] = {"noisy/denoise.txt": [], "rainy/rainTrain.txt": [], "hazy/hazy_outside.txt": []}
    seen: set[str] = set()
    for row in rows:
        clean = resolve(row["clean"])
        split, task = row["split"], row["task"]
        if task == "denoise":
            name = f"{clean.parent.name}_{clean.name}" if split == "train" else clean.name
            folder = "Train/Denoise" if split == "train" else f"test/denoise/{json_get(row, 'source') or 'test'}"
            if f"{folder}/{name}" not in seen:
                seen.add(f"{folder}/{name}")
                _link(clean, out / folder / name)
                if split == "train":
                    lists["noisy/denoise.txt"].append(name)
                counts[f"{split}/denoise"] += 1
            continue
        degraded, suffix = _degraded(row, resolve, rederive)
        if not isinstance(degraded, Path):
            counts["materialized"] += 1
        n = counts[f"{split}/{task}"] + 1
        if task == "derain":
            base = out / ("Train/Derain" if split == "train" else "test/derain/Rain100L")
            rainy, gt = ("rainy", "gt") if split == "train" else ("input", "target")
            _place(degraded, base / rainy / f"rain-{n}.png")
            _link(clean, base / gt / f"norain-{n}.png")
            if split == "train":
                lists["rainy/rainTrain.txt"].append(f"rainy/rain-{n}.png")
        else:
            _export_hazy(row, clean, degraded, suffix, n, out, lists)
        counts[f"{split}/{task}"] += 1
    for name, lines in lists.items():
        _write_lines(out / "data_dir" / name, lines)
    return dict(counts)


def _export_hazy(row: dict, clean: Path, degraded: Path | np.ndarray, suffix: str, n: int, out: Path,
                 lists: dict[str, list[str]]) -> None:
    """One haze pair: <id>_<A>_<beta> names (the benchmark's own for real pairs, numbered for generated ones)."""
    if isinstance(degraded, Path) and row["degradation"] is None and HAZY_NAME.match(degraded.stem):
        stem, clean_suffix, target_suffix = degraded.stem, clean.suffix, clean.suffix
    else:  # PromptIR finds the clean image as <id> + the hazy suffix (train) or <id>.png (test)
        args = json_get(row, "args") or {}
        stem, clean_suffix, target_suffix = f"{n:05d}_{args.get('A', 1)}_{args.get('beta', 0)}", suffix, ".png"
    cid = HAZY_NAME.match(stem)["id"]  # type: ignore[index]
    if row["split"] == "train":
        _place(degraded, out / "Train/Dehaze/synthetic" / f"{stem}{suffix}")
        _link(clean, out / "Train/Dehaze/original" / f"{cid}{clean_suffix}")
        lists["hazy/hazy_outside.txt"].append(f"synthetic/{stem}{suffix}")
    else:
        _place(degraded, out / "test/dehaze/input" / f"{stem}{suffix}")
        _link(clean, out / "test/dehaze/target" / f"{cid}{target_suffix}")


def json_get(row: dict, key: str) -> object:
    """A key of a row's JSON `params` (None when absent)."""
    return json.loads(row.get("params") or "{}").get(key)


def export_dsrir(rows: list[dict], resolve: Callable[[str], Path], out: Path, seed: int = 0) -> dict[str, int]:
    """DSRIR lists train_{all_in_one,noise,rain,haze}.csv: a `target,degraded` header then one pair per line."""
    train = [r for r in rows if r["split"] == "train"]
    noise = sorted({str(resolve(r["clean"])) for r in train if r["task"] == "denoise"})
    noise_rows = [f"{c},{c}" for c in noise]
    rain = [f"{resolve(r['clean'])},{resolve(r['degraded'])}" for r in train if r["task"] == "derain" and r["degraded"]]
    rain_rows = [rain[i % len(rain)] for i in range(DSRIR_ROWS)] if rain else []
    haze = [f"{resolve(r['clean'])},{resolve(r['degraded'])}" for r in train if r["task"] == "dehaze" and r["degraded"]]
    order = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 5000]))).permutation(len(haze))
    haze_rows = [haze[i] for i in sorted(order[:DSRIR_ROWS])]
    modes = {"noise": noise_rows, "rain": rain_rows, "haze": haze_rows,
             "all_in_one": noise_rows + rain_rows + haze_rows}
    for mode, lines in modes.items():
        # DSRIR's loader drops the first line as a header, so write one
        _write_lines(out / f"train_{mode}.csv", ["target,degraded", *lines])
    return {f"train_{m}.csv": len(v) for m, v in modes.items()}


def export_mioir(rows: list[dict], resolve: Callable[[str], Path], out: Path) -> dict[str, int]:
    """One CSV per split with a `task` column, ordered by task, for sequential (MiOIR-style) training."""
    counts = {}
    for split in ("train", "test"):
        part = sorted((r for r in rows if r["split"] == split),
                      key=lambda r: (TASK_ORDER.index(r["task"]) if r["task"] in TASK_ORDER else 99, r["pair_id"]))
        path = out / f"{split}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["task", "clean", "degraded", "degradation", "params", "seed", "sigma", "pair_id"])
            for r in part:
                writer.writerow([r["task"], resolve(r["clean"]), resolve(r["degraded"]) if r["degraded"] else "",
                                 r["degradation"] or "", r["params"], r["seed"] if r["seed"] is not None else "",
                                 r["sigma"] if r["sigma"] is not None else "", r["pair_id"]])
        counts[f"{split}.csv"] = len(part)
    return counts
