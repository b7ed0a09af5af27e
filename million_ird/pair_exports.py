"""Exports of a recipe's `pairs` rows to other projects' layouts: PromptIR/DyNet folders, DSRIR and MiOIR lists.

Every exporter takes the rows (dicts of the `pairs` schema), a `resolve(path) -> Path` that makes a stored
path absolute, and an output folder; stored files are symlinked, never copied or re-encoded (a clean
image that is a member of a patch shard, `SHARD.tar#OFFSET+NBYTES`, is written out as PNG).
(`million_ird.export` is a different thing: patches to Hugging Face datasets / WebDataset.)
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from million_ird.images import MEMBER_REF, read_image, to_uint8, write_png
from million_ird.sources.benchmarks import HAZY_NAME

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


def _place(src: Path | np.ndarray, dst: Path) -> None:
    """A symlink to a stored file, or a PNG of an image materialised for the export."""
    if isinstance(src, Path):
        _link(src, dst)
    else:
        write_png(dst, src)  # through a temp name: replaces a symlink, never writes through it


def _clean_name(row: dict, clean: Path) -> str:
    """The file name of a row's clean image: its own, or <patch id>.png for a patch-shard member."""
    return f"{row['pair_id'].rsplit('/', 1)[-1]}.png" if MEMBER_REF.match(str(clean)) else clean.name


def _clean_source(clean: Path) -> Path | np.ndarray:
    """A stored clean file (to symlink), or the pixels of a patch-shard member (to write as PNG)."""
    return to_uint8(read_image(clean, rgb=True)) if MEMBER_REF.match(str(clean)) else clean


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
            name = f"{clean.parent.name}_{_clean_name(row, clean)}" if split == "train" else _clean_name(row, clean)
            folder = "Train/Denoise" if split == "train" else f"test/denoise/{json_get(row, 'source') or 'test'}"
            if f"{folder}/{name}" not in seen:
                seen.add(f"{folder}/{name}")
                _place(_clean_source(clean), out / folder / name)
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
            _place(_clean_source(clean), base / gt / f"norain-{n}.png")
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
        _place(_clean_source(clean), out / "Train/Dehaze/original" / f"{cid}{clean_suffix}")
        lists["hazy/hazy_outside.txt"].append(f"synthetic/{stem}{suffix}")
    else:
        _place(degraded, out / "test/dehaze/input" / f"{stem}{suffix}")
        _place(_clean_source(clean), out / "test/dehaze/target" / f"{cid}{target_suffix}")


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
