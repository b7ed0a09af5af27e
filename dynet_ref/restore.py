"""Restore images of any size with DyNet, whole or tile by tile (exact, lower peak memory).

`python -m dynet_ref.restore --weights CKPT --variant S IMG... --out DIR [--tile N]`
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dynet_ref.model import VARIANTS, DyNet, to_channels_last
from dynet_ref.tiled import tiled_forward
from million_ird.atomic import atomic_path

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@torch.no_grad()
def restore_tensor(model: nn.Module, image: torch.Tensor, tile: int | None = None) -> torch.Tensor:
    """Restore (B, 3, H, W) in [0, 1]; with `tile`, run DyNet's exact tile-streaming executor.

    Tiled output equals whole-image output (up to float summation order, ~1e-6) at lower peak memory:
    see dynet_ref.tiled. A tile covering the whole image runs the model directly.
    """
    if tile is None or (image.shape[-2] <= tile and image.shape[-1] <= tile):
        return model(image)
    if not isinstance(model, DyNet):
        raise TypeError(f"tile={tile}: tiled restore needs a dynet_ref DyNet, got {type(model).__name__}")
    return tiled_forward(model, image, tile)


def read_image(path: Path) -> np.ndarray:
    """Read a PNG/JPEG/... as RGB uint8 (H, W, 3); raise ValueError naming the file if unreadable."""
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    if data is None or data.size == 0:
        raise ValueError(f"{path}: missing or empty file")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not a decodable image (PNG/JPEG/BMP/TIFF/WebP expected)")
    return bgr[..., ::-1].copy()


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write RGB uint8 as PNG (atomically: temp name, then rename)."""
    import cv2

    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise ValueError(f"{path}: PNG encoding failed")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) → float (1, 3, H, W) in [0, 1]."""
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(255.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """float (1, 3, H, W) → uint8 (H, W, 3), clipped to [0, 1] and rounded."""
    return t[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


def iter_inputs(inputs: list[Path]) -> Iterator[Path]:
    """Expand directories into their image files (sorted); pass files through."""
    for item in inputs:
        if item.is_dir():
            yield from sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield item


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dynet_ref.restore",
        description="Restore images of any size with DyNet and write PNGs (same size as the input).",
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="image files or directories of images")
    parser.add_argument(
        "--weights",
        required=True,
        type=Path,
        help="checkpoint: .safetensors (ours), .ckpt (reference Lightning) or .pth",
    )
    parser.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        default="S",
        help="depth to run the shared weights at (default S)",
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="output directory; files keep their stem, suffix .png"
    )
    parser.add_argument(
        "--tile",
        type=int,
        default=None,
        help="process in tiles of N pixels (>= 8) to cut peak memory on large images; the output is "
        "the same as whole-image inference (global attention/prompt statistics are streamed); "
        "default: whole image",
    )
    parser.add_argument(
        "--width",
        type=int,
        default=None,
        help="base channel width if the checkpoint does not say (default: from the weights)",
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
    )
    return parser


def parse_inference_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse an inference CLI's flags (restore, evaluate): check --tile, set up logging and --threads."""
    args = parser.parse_args(argv)
    if args.tile is not None and args.tile < 8:
        parser.error(f"--tile {args.tile}: use at least 8 pixels (e.g. 256), or leave it out")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 1 when any input could not be restored."""
    from tqdm import tqdm

    from dynet_ref.checkpoints import CheckpointError, load_model

    args = parse_inference_args(_parser(), argv)
    try:
        model = to_channels_last(
            load_model(args.weights, variant=args.variant, width=args.width).to(args.device)
        )
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    paths = list(iter_inputs(args.inputs))
    for path in tqdm(paths, desc=f"DyNet-{args.variant}", unit="img"):
        try:
            rgb = read_image(path)
        except ValueError as err:
            print(f"error: {err}; skipped", file=sys.stderr)
            failed += 1
            continue
        image = to_tensor(rgb).to(args.device).contiguous(memory_format=torch.channels_last)
        restored = restore_tensor(model, image, args.tile)
        write_png(args.out / f"{path.stem}.png", to_uint8(restored))
    log.info("restored %d of %d images into %s", len(paths) - failed, len(paths), args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
