"""Score DyNet on the stores' test pairs, by the reference protocol unless told otherwise (Table 1 style).

    python -m dynet_ref.evaluate --weights CKPT --variant S,L --data PATH [--y-channel] [--pad]
        [--json PATH] [--csv PATH] [--device auto|cpu|cuda] [--tile N] [--sets NAME,...] [--width W] [--threads N]

Protocol (default = the DyNet/PromptIR test code): RGB in [0, 1]; clean AND degraded centre-cropped to
a multiple of 16 (their `crop_img`); output clipped to [0, 1]; PSNR (data range 1) and scikit-image's
default SSIM (dynet_ref.metrics), float64, no uint8 rounding; mean over a set's images; the average row
is the mean over sets. `--pad` scores the full image (the model reflect-pads to a multiple of 8, crops
back); `--y-channel` scores BT.601 luma. On-the-fly pairs are degraded from their stored seed on the full
clean image, then cropped (the reference crops, then adds noise from one global stream; both i.i.d.).

Data: every `split = 'test'` pair of the stores under `--data`, grouped by `PairRow.set_name` ('dehaze:SOTS',
'derain:Rain100L', 'denoise:bsd68:s15', synthetic 'denoise:s15', ...). A pair that cannot be read stops
the run (a score over part of a test set is not that set's score).

Outputs (each written atomically, only when the whole run succeeded):
* `--json PATH`: exactly `{variant: {"tasks": {set: {"psnr", "ssim", "images"}}, "average": {"psnr",
  "ssim"}}}`, the shape `benchmarks.paper_table` reads; nothing else is mixed into that mapping.
* beside it, PATH with suffix `.meta.json` (results.json → results.meta.json): {"results", "checkpoint",
  "checkpoint_sha256", "width", "protocol", "test_sets": {set: {"sha256", "pairs"}}, "stores", "device",
  "versions", "digest_mismatches"}.
* `--csv PATH`: one row per image: variant, set, pair_id, psnr, ssim.
A test set's sha256 hashes its pairs sorted by id: pair id, sha256 of the clean file, and sha256 of the
degraded file or, for on-the-fly pairs, the pixel digest of the re-derived image (equal to the stored
`params['pixels_sha256']`; a mismatch is warned about). The trainer and benchmarks call `evaluate()`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import statistics
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from degradations.registry import DegradationError
from dynet_ref.index import DataError, PairRow, degraded_of, find_stores, read_pairs, read_rgb8
from dynet_ref.metrics import center_crop_multiple, psnr, rgb_to_y, ssim
from dynet_ref.model import VARIANTS, to_channels_last
from dynet_ref.restore import parse_inference_args, restore_tensor, to_tensor
from million_ird.atomic import atomic_path
from million_ird.stages.splits import file_sha256, pixels_sha256

log = logging.getLogger(__name__)

CROP_MULTIPLE = 16


@dataclass(frozen=True)
class Protocol:
    """How images are scored; the defaults are the reference's."""

    crop_multiple: int | None = CROP_MULTIPLE  # None: score the full image (--pad)
    y_channel: bool = False

    @property
    def is_reference(self) -> bool:
        """True for the protocol of the paper's Table 1."""
        return self.crop_multiple == CROP_MULTIPLE and not self.y_channel

    def describe(self) -> str:
        """One line saying what was scored and how."""
        space = "Y (BT.601, MATLAB rgb2ycbcr)" if self.y_channel else "RGB"
        region = (f"clean and degraded centre-cropped to a multiple of {self.crop_multiple}"
                  if self.crop_multiple else "full image (model pads to a multiple of 8, crops back)")
        tag = "reference protocol" if self.is_reference else "NOT the reference protocol"
        return (f"{tag}: {space}, {region}, output clipped to [0,1], PSNR data_range 1, SSIM skimage default "
                "(7x7 uniform, sample cov., K1 .01, K2 .03, border 3), float64, no uint8 rounding, "
                "per-image mean per set, average = mean over sets")


@dataclass(frozen=True)
class ImageScore:
    """One image scored at one variant."""

    variant: str
    set_name: str
    pair_id: str
    psnr: float
    ssim: float


@dataclass(frozen=True)
class Evaluation:
    """Per-image scores of every variant and the identity (sha256, size) of every test set."""

    variants: tuple[str, ...]
    scores: tuple[ImageScore, ...]
    test_sets: dict[str, dict[str, Any]]
    digest_mismatches: tuple[str, ...] = ()

    def results(self) -> dict[str, dict[str, Any]]:
        """The documented JSON mapping: {variant: {"tasks": {set: {psnr, ssim, images}}, "average": {...}}}."""
        out: dict[str, dict[str, Any]] = {}
        for variant in self.variants:
            tasks: dict[str, dict[str, Any]] = {}
            for name in sorted(self.test_sets):
                mine = [s for s in self.scores if s.variant == variant and s.set_name == name]
                tasks[name] = {"psnr": statistics.fmean(s.psnr for s in mine),
                               "ssim": statistics.fmean(s.ssim for s in mine), "images": len(mine)}
            average = {k: statistics.fmean(t[k] for t in tasks.values()) for k in ("psnr", "ssim")}
            out[variant] = {"tasks": tasks, "average": average}
        return out


@dataclass(frozen=True)
class LoadedPair:
    """A test pair decoded to uint8 RGB, with the content digest its test set is hashed over."""

    clean: Any
    degraded: Any
    digest: str
    mismatch: bool = False


def load_pair(row: PairRow) -> LoadedPair:
    """Decode a pair (re-deriving on-the-fly degradations from the stored seed) and digest its content."""
    clean = read_rgb8(row.clean)
    try:
        degraded = degraded_of(row, clean)
    except DegradationError as err:
        raise DataError(f"pair {row.pair_id}: its degradation cannot be re-derived ({err}); "
                        "re-run `million-ird splits`") from err
    if degraded.shape != clean.shape:
        raise DataError(f"pair {row.pair_id}: clean {clean.shape[:2]} and degraded {degraded.shape[:2]} "
                        "differ in size; fix the pair's files and re-run `million-ird splits`")
    if row.degraded is not None:
        return LoadedPair(clean, degraded, f"{file_sha256(row.clean)}\t{file_sha256(row.degraded)}")
    digest = pixels_sha256(degraded)
    stored = row.params.get("pixels_sha256")
    return LoadedPair(clean, degraded, f"{file_sha256(row.clean)}\tpixels:{digest}",
                      mismatch=stored is not None and stored != digest)


def set_hashes(rows: Sequence[PairRow], digests: dict[str, str]) -> dict[str, dict[str, Any]]:
    """sha256 and pair count of each test set, over its pairs sorted by id (`digests`: pair id → content)."""
    by_set: dict[str, list[str]] = {}
    for row in rows:
        by_set.setdefault(row.set_name, []).append(row.pair_id)
    out = {}
    for name, members in sorted(by_set.items()):
        h = hashlib.sha256()
        for pair_id in sorted(members):
            h.update(f"{pair_id}\t{digests[pair_id]}\n".encode())
        out[name] = {"sha256": h.hexdigest(), "pairs": len(members)}
    return out


def prepare(pair: LoadedPair, row: PairRow, protocol: Protocol,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(degraded, clean) as float (1, 3, H, W) in [0, 1] on `device`, cropped as the protocol says."""
    clean, degraded = to_tensor(pair.clean), to_tensor(pair.degraded)
    if protocol.crop_multiple:
        try:
            clean = center_crop_multiple(clean, protocol.crop_multiple)
            degraded = center_crop_multiple(degraded, protocol.crop_multiple)
        except ValueError as err:
            raise DataError(f"pair {row.pair_id}: {err}; score it with --pad") from err
    degraded = degraded.to(device).contiguous(memory_format=torch.channels_last)
    return degraded, clean.to(device)


def score(output: torch.Tensor, clean: torch.Tensor, protocol: Protocol) -> tuple[float, float]:
    """PSNR and SSIM of one clipped output against its clean image, in RGB or Y."""
    pred, target = output.clamp(0, 1), clean.clamp(0, 1)
    if protocol.y_channel:
        pred, target = rgb_to_y(pred), rgb_to_y(target)
    return float(psnr(pred, target)[0]), float(ssim(pred, target)[0])


@contextmanager
def _eval_state(model: nn.Module) -> Iterator[nn.Module]:
    """Put the model in eval mode; give back its train flag and variant afterwards."""
    was_training, variant = model.training, getattr(model, "variant", None)
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
        if variant is not None:
            model.set_variant(variant)


@torch.no_grad()
def evaluate(model: nn.Module, rows: Sequence[PairRow], variants: Sequence[str] = ("S", "L"),
             protocol: Protocol = Protocol(), device: str | torch.device | None = None,
             tile: int | None = None, progress: bool = True) -> Evaluation:
    """Score every test pair at every variant of the same weights; each image is decoded once."""
    from tqdm import tqdm

    if not rows:
        raise DataError("no test pairs to evaluate; run `million-ird splits` to build them")
    seen: set[str] = set()
    for row in rows:
        if row.pair_id in seen:
            raise DataError(f"pair {row.pair_id} is listed twice (two stores?); pass --data of one store")
        seen.add(row.pair_id)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    scores: list[ImageScore] = []
    digests: dict[str, str] = {}
    mismatches: list[str] = []
    bar = tqdm(rows, desc=f"evaluate {','.join(variants)}", unit="img", disable=not progress)
    with _eval_state(model), bar:  # the bar ends its line before an error
        for row in bar:
            pair = load_pair(row)
            digests[row.pair_id] = pair.digest
            if pair.mismatch:
                log.warning("pair %s: re-derived pixels differ from the stored digest", row.pair_id)
                mismatches.append(row.pair_id)
            degraded, clean = prepare(pair, row, protocol, device)
            for variant in variants:
                model.set_variant(variant)
                p, s = score(restore_tensor(model, degraded, tile), clean, protocol)
                scores.append(ImageScore(variant, row.set_name, row.pair_id, p, s))
    return Evaluation(tuple(variants), tuple(scores), set_hashes(rows, digests), tuple(mismatches))


def format_table(results: dict[str, Any], variant: str) -> str:
    """A Table-1-style table of one variant: one row per set, then the average over sets."""
    tasks = results[variant]["tasks"]
    width = max([len(n) for n in tasks] + [22])
    lines = [f"DyNet-{variant}", f"{'set':<{width}}  {'PSNR':>7}  {'SSIM':>6}  {'images':>6}"]
    for name, t in tasks.items():
        lines.append(f"{name:<{width}}  {t['psnr']:7.2f}  {t['ssim']:6.4f}  {t['images']:6d}")
    avg = results[variant]["average"]
    label = f"average over {len(tasks)} set{'s' if len(tasks) != 1 else ''}"
    lines.append(f"{label:<{width}}  {avg['psnr']:7.2f}  {avg['ssim']:6.4f}")
    return "\n".join(lines)


def format_report(ev: Evaluation, protocol: Protocol, checkpoint: str) -> str:
    """Every variant's table, the test-set hashes and the protocol, as printed by the CLI."""
    results = ev.results()
    parts = [format_table(results, v) for v in ev.variants]
    hashes = ["test sets (sha256 over pair ids + clean/degraded file sha256, pixel digest when on the fly):"]
    hashes += [f"  {name}  {info['pairs']} pair{'s' if info['pairs'] != 1 else ''}  {info['sha256']}"
               for name, info in ev.test_sets.items()]
    if ev.digest_mismatches:
        hashes.append(f"  WARNING: {len(ev.digest_mismatches)} on-the-fly pairs re-derive other pixels than "
                      "their stored digest; check with `million-ird splits --verify`")
    parts += ["\n".join(hashes), f"protocol: {protocol.describe()}", f"checkpoint: {checkpoint}"]
    return "\n\n".join(parts)


def per_image_csv(ev: Evaluation) -> str:
    """CSV text with one row per (variant, image)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["variant", "set", "pair_id", "psnr", "ssim"])
    writer.writerows([s.variant, s.set_name, s.pair_id, repr(s.psnr), repr(s.ssim)] for s in ev.scores)
    return buf.getvalue()


def meta_path(json_path: Path) -> Path:
    """Where the protocol and test-set hashes of a results JSON go: results.json → results.meta.json."""
    return json_path.with_suffix(".meta.json")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dynet_ref.evaluate", description=(
        "Score DyNet on the test pairs of dataset stores (reference protocol: RGB, centre crop to a "
        "multiple of 16, PSNR + skimage SSIM) and print a Table-1-style table per variant."))
    p.add_argument("--weights", required=True, type=Path,
                   help="checkpoint: .safetensors (ours), the authors' Lightning .ckpt ('net.' keys) or .pth")
    p.add_argument("--variant", default="S,L",
                   help="comma-separated depths to run the same weights at: S, L or S,L (default S,L)")
    p.add_argument("--data", required=True, type=Path,
                   help="a dataset store, or a folder holding stores; its split='test' pairs are scored")
    p.add_argument("--y-channel", action="store_true",
                   help="score BT.601 luma (MATLAB rgb2ycbcr) instead of RGB (not the reference protocol)")
    p.add_argument("--pad", action="store_true",
                   help="score the full image instead of the centre crop to a multiple of 16 (the model "
                   "reflect-pads to a multiple of 8 and crops back; not the reference protocol)")
    p.add_argument("--json", type=Path, default=None,
                   help="write {variant: {tasks: {set: {psnr, ssim, images}}, average: {psnr, ssim}}} here, "
                   "and protocol + test-set hashes to the same name with suffix .meta.json")
    p.add_argument("--csv", type=Path, default=None,
                   help="write per-image scores here (variant, set, pair_id, psnr, ssim)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to run: auto = cuda when available, else cpu (default auto)")
    p.add_argument("--tile", type=int, default=None,
                   help="run the model tile by tile, N pixels (>= 8), to cut peak memory; same scores "
                   "up to float summation order (default: whole image)")
    p.add_argument("--sets", default=None,
                   help="comma-separated test sets to score, e.g. dehaze:SOTS,denoise (a name also selects "
                   "the sets under it: denoise = denoise:*); default: all")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--width", type=int, default=None,
                   help="base channel width the checkpoint must have (default: read from the weights)")
    return p


def _variants(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip().upper() for v in text.split(",") if v.strip()))
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        raise DataError(f"--variant {text}: unknown variant {', '.join(bad) or '(none)'}; use S, L or S,L")
    return names


def _select(rows: list[PairRow], sets: str | None) -> list[PairRow]:
    if not sets:
        return rows
    wanted = [s.strip() for s in sets.split(",") if s.strip()]
    known = sorted({r.set_name for r in rows})
    unknown = [w for w in wanted if not any(n == w or n.startswith(w + ":") for n in known)]
    if unknown:
        raise DataError(f"--sets: no test set {', '.join(unknown)}; the stores have {', '.join(known)}")
    return [r for r in rows if any(r.set_name == w or r.set_name.startswith(w + ":") for w in wanted)]


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda: torch sees no CUDA device; use --device cpu or auto")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def _check_outputs(args: argparse.Namespace) -> None:
    for flag, path in (("--json", args.json), ("--csv", args.csv)):
        if path is not None and path.is_dir():
            raise DataError(f"{flag} {path}: is a folder; name a file")
    if args.json is not None and meta_path(args.json) == args.json:
        raise DataError(f"--json {args.json}: name it *.json so its .meta.json can sit beside it")


def _write(ev: Evaluation, args: argparse.Namespace, protocol: Protocol, width: int, device: torch.device,
           stores: list[str]) -> None:
    """Write the requested outputs, each through a temp file and a rename."""
    from million_ird.store import code_version

    if args.csv is not None:
        with atomic_path(args.csv) as tmp:
            tmp.write_text(per_image_csv(ev))
    if args.json is not None:
        meta = {"results": args.json.name, "checkpoint": str(args.weights.resolve()),
                "checkpoint_sha256": file_sha256(args.weights), "width": width,
                "protocol": {**asdict(protocol), "reference": protocol.is_reference,
                             "description": protocol.describe()},
                "test_sets": ev.test_sets, "digest_mismatches": list(ev.digest_mismatches),
                "stores": stores, "device": str(device), "versions": code_version()}
        with atomic_path(meta_path(args.json)) as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(ev.results(), indent=2) + "\n")


def _fail(message: str) -> int:
    """Print `error: message` on one line (whitespace of wrapped messages collapsed); return exit code 2."""
    print("error: " + " ".join(message.split()), file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 2 (after one `error:` line) when the data, checkpoint or flags are wrong."""
    from dynet_ref.checkpoints import CheckpointError, load_model

    args = parse_inference_args(_parser(), argv)
    protocol = Protocol(crop_multiple=None if args.pad else CROP_MULTIPLE, y_channel=args.y_channel)
    try:
        variants = _variants(args.variant)
        _check_outputs(args)
        device = _device(args.device)
        stores = find_stores(args.data)
        rows = read_pairs(stores, "test")
        if not rows:
            where = ", ".join(str(s.root) for s in stores)
            raise DataError(f"--data {args.data}: no split='test' pairs in {where}; run `million-ird splits "
                            "--manifest DIR --recipe synthetic` (or --recipe all-in-one) first")
        rows = _select(rows, args.sets)
        model = to_channels_last(load_model(args.weights, variant=variants[0], width=args.width).to(device))
        ev = evaluate(model, rows, variants, protocol, device, args.tile)
    except (DataError, CheckpointError) as err:
        return _fail(str(err))
    except torch.cuda.OutOfMemoryError:
        return _fail(f"out of GPU memory on {args.data}; pass --tile 256 (same scores, less memory)")
    print(format_report(ev, protocol, f"{args.weights} (width {model.width}) on {device}"))
    try:
        _write(ev, args, protocol, model.width, device, [str(s.root) for s in stores])
    except OSError as err:
        return _fail(f"cannot write the results ({err}); check the folder is writable")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
