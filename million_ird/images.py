"""The one image reader and writer of the toolkit (verify checks files; every stage decodes them here).

Reading rules (documented for users):
- decoded with OpenCV, Pillow as the fallback for what OpenCV lacks (multi-frame GIF: first frame);
- channel order RGB; gray stays 2-D (HxW) unless `rgb=True` asks for three channels;
- an alpha channel is dropped: colour values are used as stored, never composited;
- 8- and 16-bit samples are kept as they are; `to_uint8` reduces 16 bits by round(v / 257);
- anything else (float TIFF/EXR, 2 or 5+ channels, undecodable bytes) raises `ImageError` naming the file.
Writing is lossless PNG, 8- or 16-bit, through a temp name then rename.

A path may also name a member of a tar shard by its bytes: `SHARD.tar#OFFSET+NBYTES` (what the
patches table records; see `million_ird.shards`): the reader seeks there and decodes those bytes.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from million_ird.atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm")
MEMBER_REF = re.compile(r"^(?P<shard>.+\.tar)#(?P<offset>\d+)\+(?P<nbytes>\d+)$")
PNG_LEVEL = 3  # zlib level: lossless at any level; 3 is ~2x faster than the default 6 for ~5% more bytes


class ImageError(ValueError):
    """A file that cannot be read as an 8/16-bit gray, RGB or RGBA image (message names the file)."""


def member_ref(shard: str | Path, offset: int, nbytes: int) -> str:
    """The path string that names `nbytes` bytes at `offset` of a tar shard (read by `read_image`)."""
    return f"{shard}#{offset}+{nbytes}"


def resolve(root: Path, path: str | Path) -> Path:
    """A path as the store records it made usable: absolute as is, else relative to the store root `root`."""
    p = Path(path)
    return p if p.is_absolute() else Path(root) / p


def is_image_file(path: str | Path) -> bool:
    """True when the file name has one of the image suffixes the toolkit reads."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.seek(0)
            if im.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(im, dtype=np.uint16)
            rgb = im.convert("L" if im.mode in ("L", "1", "LA", "I") else "RGB")
            arr = np.asarray(rgb)
            return arr[:, :, ::-1].copy() if arr.ndim == 3 else arr  # BGR like OpenCV
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"cannot decode {path}: {exc}") from exc


def decode(data: bytes | np.ndarray, name: str | Path = "<bytes>", rgb: bool = False) -> np.ndarray:
    """Decode encoded image bytes by the rules of the module docstring (`name` only labels errors)."""
    buf = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        if isinstance(name, Path) and name.exists():
            img = _pillow(name)
        else:
            raise ImageError(f"cannot decode {name}: not an image OpenCV reads")
    return _normalise(img, name, rgb)


def read_bytes(path: str | Path) -> bytes:
    """The encoded bytes of an image file or of a shard member (`SHARD.tar#OFFSET+NBYTES`)."""
    ref = MEMBER_REF.match(str(path))
    if not ref:
        return Path(path).read_bytes()
    with open(ref["shard"], "rb") as fh:
        fh.seek(int(ref["offset"]))
        raw = fh.read(int(ref["nbytes"]))
    if len(raw) != int(ref["nbytes"]):
        raise ImageError(f"{path}: the shard ends before the member's {ref['nbytes']} bytes")
    return raw


def read_image(path: str | Path, rgb: bool = False) -> np.ndarray:
    """Read an image file or shard member: HxWx3 RGB or HxW gray (HxWx3 with `rgb=True`), uint8 or uint16."""
    try:
        if MEMBER_REF.match(str(path)):
            return decode(read_bytes(path), Path(path), rgb)
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return decode(data, Path(path), rgb)


def _normalise(img: np.ndarray, name: str | Path, rgb: bool) -> np.ndarray:
    if img.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{name}: unsupported sample type {img.dtype} (need 8- or 16-bit integer images)")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3:
        if img.shape[2] not in (3, 4):
            raise ImageError(f"{name}: {img.shape[2]} channels; expected gray, RGB or RGBA")
        img = np.ascontiguousarray(img[:, :, 2::-1])  # BGR(A) -> RGB, alpha dropped
    elif rgb:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return img


def to_uint8(img: np.ndarray) -> np.ndarray:
    """8-bit samples as they are; 16-bit ones reduced by round(v / 257) (the toolkit's one 16-bit reduction)."""
    if img.dtype == np.uint8:
        return img
    return np.floor(img.astype(np.float32) / np.float32(257.0) + np.float32(0.5)).astype(np.uint8)


def encode_png(img: np.ndarray) -> bytes:
    """Lossless PNG bytes of an RGB or gray image, 8- or 16-bit."""
    bgr = img[:, :, ::-1] if img.ndim == 3 else img
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr), [cv2.IMWRITE_PNG_COMPRESSION, PNG_LEVEL])
    if not ok:
        raise ImageError(f"cannot encode a {img.shape} {img.dtype} image as PNG")
    return buf.tobytes()


def write_png(path: Path, img: np.ndarray) -> Path:
    """Write an RGB or gray image as lossless PNG through a temp name, then rename."""
    data = encode_png(img)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path
