"""Local folders of images (DIV2K, Flickr2K, LSDIR, NTIRE): rows verified in place, never downloaded."""

from __future__ import annotations

import os
from pathlib import Path

from tqdm import tqdm

from million_ird.sources.common import IngestConfig, IngestError, SourceBatch, local_image_id
from million_ird.stages.verify import header_size

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def _declared_size(path: Path) -> tuple[int | None, int | None]:
    """Width and height from the file header, read as the verifier reads it (so Pillow's own pixel
    limit, lower than the verifier's --max-pixels, does not blank big images); None when unreadable."""
    return header_size(path) or (None, None)


def read_folder(root: Path, cfg: IngestConfig, batch: SourceBatch) -> None:
    """Every image file under `root` (recursively, sorted) becomes an images row with an absolute path."""
    if not root.is_dir():
        raise IngestError(f"{root}: no such folder; pass the unzipped dataset folder to --folder")
    root = root.resolve()
    files = sorted(
        Path(d) / f for d, _, names in os.walk(root) for f in names
        if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith(".")
    )
    if not files:
        raise IngestError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found; "
                          "check that the archive was unzipped there")
    for path in tqdm(files, desc=f"scan {root.name}", unit="file", leave=False):
        rel = path.relative_to(root).as_posix()
        width, height = _declared_size(path)
        origin = f"{root}/{rel}"
        if cfg.min_side and (width is None or height is None or min(width, height) < cfg.min_side):
            batch.reject(cfg.source, origin, f"below --min-side {cfg.min_side}: size {width}x{height}",
                         path=str(path))
            continue
        batch.images.append({
            "image_id": local_image_id(cfg.source, rel), "source": cfg.source, "url": None,
            "path": str(path), "width": width, "height": height, "caption": None, "extra": None,
            "origin": origin,
        })
