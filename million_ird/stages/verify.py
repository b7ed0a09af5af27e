"""Verify one image file: real format from magic bytes, full decode, size, channels, bit depth, sha256."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 200_000_000
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif", "bmp": "bmp", "tiff": "tif"}
_BITS = {"1": 1, "L": 8, "P": 8, "RGB": 8, "RGBA": 8, "CMYK": 8, "YCbCr": 8, "LA": 8, "PA": 8,
         "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}

Image.MAX_IMAGE_PIXELS = None  # the bomb guard below decides, before any pixel is decoded


@dataclass(frozen=True)
class Verified:
    """What verification found; `error` is None for a good image."""

    error: str | None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    channels: int | None = None
    bit_depth: int | None = None
    bytes: int = 0
    sha256: str | None = None

    @property
    def extension(self) -> str:
        """File extension for the real format."""
        return EXTENSIONS.get(self.format or "", "bin")


def sniff_format(head: bytes) -> str | None:
    """The image format named by the file's magic bytes, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def _not_image_reason(head: bytes) -> str:
    text = head.lstrip()[:64].lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"<")):
        return "not an image: the server sent HTML/XML text"
    if text.startswith((b"{", b"[")):
        return "not an image: the server sent JSON"
    return "not an image: unknown file signature " + head[:8].hex()


def _bit_depth(data: bytes, fmt: str, mode: str) -> int:
    if fmt == "png" and len(data) > 24:
        return data[24]  # IHDR bit depth (Pillow may reduce 16-bit RGB to 8-bit)
    return _BITS.get(mode, 8)


def verify_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Verified:
    """Check `data` is one complete, decodable image no larger than `max_pixels`."""
    size = len(data)
    if size == 0:
        return Verified("empty file (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    fmt = sniff_format(data[:16])
    if fmt is None:
        return Verified(_not_image_reason(data[:256]), bytes=size, sha256=digest)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if width * height > max_pixels:
                    return Verified(f"decompression-bomb guard: {width}x{height} = {width * height / 1e6:.1f} MP "
                                    f"> {max_pixels / 1e6:.1f} MP (raise --max-pixels to allow)",
                                    fmt, width, height, bytes=size, sha256=digest)
                mode = im.mode
                im.load()
                channels = len(im.getbands())
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        return Verified(f"corrupt or truncated {fmt}: {exc}", fmt, bytes=size, sha256=digest)
    return Verified(None, fmt, width, height, channels, _bit_depth(data, fmt, mode), size, digest)


def verify_file(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Verified:
    """verify_bytes on a file; a missing or unreadable file fails with the OS reason."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Verified(f"cannot read {path}: {exc.strerror or exc}")
    return verify_bytes(data, max_pixels)
