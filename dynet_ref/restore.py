"""Restore images of any size with DyNet, whole or in overlapping tiles.

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

from dynet_ref.model import MULTIPLE, VARIANTS, to_channels_last

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile start offsets covering [0, length) with the last tile flush with the end."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _weights(size: int, overlap: int, inner_before: bool, inner_after: bool) -> torch.Tensor:
    """1-D blending weight of one tile: 1 inside; at a side that borders another tile, 0 for the first
    overlap//4 pixels (their context was cut off) and a linear ramp over the next overlap - 2*(overlap//4)."""
    margin = overlap // 4
    ramp = max(overlap - 2 * margin, 1)
    d = torch.arange(size, dtype=torch.float32)
    w = torch.ones(size)
    if inner_before:
        w = torch.minimum(w, ((d - margin + 1) / (ramp + 1)).clamp(0, 1))
    if inner_after:
        w = torch.minimum(w, ((size - d - margin) / (ramp + 1)).clamp(0, 1))
    return w


@torch.no_grad()
def restore_tensor(
    model: nn.Module, image: torch.Tensor, tile: int | None = None, overlap: int = 32
) -> torch.Tensor:
    """Restore (B, 3, H, W) in [0, 1]; with `tile`, run overlapping tiles and cross-fade them.

    Exact for networks whose receptive radius is at most overlap//4. DyNet's attention and prompts
    use whole-image statistics, so for DyNet tiles are an approximation (see the README).
    """
    if tile is None or (image.shape[-2] <= tile and image.shape[-1] <= tile):
        return model(image)
    tile = -(-tile // MULTIPLE) * MULTIPLE
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap={overlap} must be in [0, tile={tile})")
    h, w = image.shape[-2:]
    th, tw = min(tile, h), min(tile, w)
    out = torch.zeros_like(image)
    weight = torch.zeros((1, 1, h, w), dtype=image.dtype, device=image.device)
    for y in _starts(h, th, th - overlap):
        wy = _weights(th, overlap, y > 0, y + th < h)
        for x in _starts(w, tw, tw - overlap):
            wx = _weights(tw, overlap, x > 0, x + tw < w)
            mask = (wy[:, None] * wx[None, :]).to(image)
            out[..., y : y + th, x : x + tw] += model(image[..., y : y + th, x : x + tw]) * mask
            weight[..., y : y + th, x : x + tw] += mask
    return out / weight


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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.tobytes())
    tmp.replace(path)


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
        help="tile side in pixels (rounded up to a multiple of 8); default: whole image",
    )
    parser.add_argument(
        "--overlap", type=int, default=32, help="overlap between tiles in pixels (default 32)"
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


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 1 when any input could not be restored."""
    from tqdm import tqdm

    from dynet_ref.checkpoints import CheckpointError, load_model

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
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
        restored = restore_tensor(model, image, args.tile, args.overlap)
        write_png(args.out / f"{path.stem}.png", to_uint8(restored))
    log.info("restored %d of %d images into %s", len(paths) - failed, len(paths), args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
