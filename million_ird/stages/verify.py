"""Verify one image file: real format from magic bytes, full decode, size, channels, bit depth, sha256.

A file over `--max-bytes` fails from `stat` alone, before it is read; the sha256 is computed over
chunks and the decoder reads the file itself, so no file is ever held in memory whole.

Pillow's own decompression-bomb guard (`PIL.Image.MAX_IMAGE_PIXELS`, process-wide) is left as it is
for every other reader in the process; the verifier applies its own `--max-pixels` check instead:

- The header is parsed by the plugin class of the format sniffed from the magic bytes, not by
  `Image.open`: `Image.open` is where Pillow checks the size against its global limit, so going
  straight to the plugin lets the verifier's header check be the only one, per call, without
  touching the global. For JPEG, PNG and BMP that is the whole story.
- The GIF, TIFF and WebP plugins also consult the global limit themselves (WebP while parsing the
  header, TIFF when allocating the decode buffer, GIF for frames and disposal areas). Only when such
  an image is above Pillow's limit (TIFF, GIF: seen from the header; WebP: when its header parse
  raises `DecompressionBombError`) but within `--max-pixels` does the verifier raise the global, to
  exactly `max_pixels`, for that one decode (`_pillow_limit_at_least`). The raise is serialised by a lock so
  concurrent verifier threads (download.py runs the verifier in a thread pool) cannot interleave
  set/restore and leave the global changed; it is never set to None, so other readers keep a guard
  (at worst the verifier's own limit) during that decode, and it is restored right after.

Pillow's warnings are not silenced here either: `warnings.catch_warnings` swaps the process-wide
filter list, and entered from several threads at once it can leave "ignore" installed for good.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    UnidentifiedImageError,
    WebPImagePlugin,
)

from million_ird.netguard import DEFAULT_MAX_BYTES, too_large

DEFAULT_MAX_PIXELS = 200_000_000
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif", "bmp": "bmp", "tiff": "tif"}
_BITS = {"1": 1, "L": 8, "P": 8, "RGB": 8, "RGBA": 8, "CMYK": 8, "YCbCr": 8, "LA": 8, "PA": 8,
         "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}

# the plugin that parses each sniffed format (JPEG: the base image, never the MPO wrapper)
_PLUGINS: dict[str, type[ImageFile.ImageFile]] = {
    "jpeg": JpegImagePlugin.JpegImageFile, "png": PngImagePlugin.PngImageFile,
    "webp": WebPImagePlugin.WebPImageFile, "gif": GifImagePlugin.GifImageFile,
    "bmp": BmpImagePlugin.BmpImageFile, "tiff": TiffImagePlugin.TiffImageFile,
}
# plugins that check Image.MAX_IMAGE_PIXELS again while decoding (WebP checks once, in its header parse)
_SELF_CHECKING = frozenset({"gif", "tiff"})
_LIMIT_LOCK = threading.Lock()
_CHUNK = 1 << 20


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


def _bit_depth(head: bytes, fmt: str, mode: str) -> int:
    if fmt == "png" and len(head) > 24:
        return head[24]  # IHDR bit depth (Pillow may reduce 16-bit RGB to 8-bit)
    return _BITS.get(mode, 8)


class _OverPillowLimit(Exception):
    """This image must be decoded with Pillow's limit raised (see the module docstring)."""


@contextmanager
def _pillow_limit_at_least(pixels: int) -> Iterator[None]:
    """Raise Pillow's global limit to `pixels` for one decode: serialised, never None, restored after."""
    with _LIMIT_LOCK:
        before = Image.MAX_IMAGE_PIXELS
        raise_it = before is not None and before < pixels
        if raise_it:
            Image.MAX_IMAGE_PIXELS = pixels
        try:
            yield
        finally:
            if raise_it:
                Image.MAX_IMAGE_PIXELS = before


def _decode(fh: BinaryIO, fmt: str, max_pixels: int, raised: bool) -> tuple[int, int, str | None, int]:
    """Width, height, mode and channels after a full decode; mode None when the header exceeds `max_pixels`."""
    fh.seek(0)
    with _PLUGINS[fmt](fh) as im:  # not Image.open: its size check reads the global limit
        width, height = im.size
        if width * height > max_pixels:
            return width, height, None, 0
        limit = Image.MAX_IMAGE_PIXELS
        if not raised and fmt in _SELF_CHECKING and limit is not None and width * height > limit:
            raise _OverPillowLimit
        mode = im.mode
        im.load()
        return width, height, mode, len(im.getbands())


def _header(fh: io.BufferedIOBase, fmt: str) -> tuple[int, int]:
    fh.seek(0)
    with _PLUGINS[fmt](fh) as im:
        return im.size


def header_size(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int] | None:
    """Width and height from the file header alone (no decode), as the verifier sees them; None when unreadable."""
    try:
        with path.open("rb") as fh:
            fmt = sniff_format(fh.read(16))
            if fmt is None:
                return None
            try:
                return _header(fh, fmt)
            except Image.DecompressionBombError:  # WebP checks Pillow's limit while parsing its header
                with _pillow_limit_at_least(max_pixels):
                    return _header(fh, fmt)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _sha256(fh: BinaryIO) -> str:
    """Hex sha256 of the whole stream, read in chunks (never the whole file in memory)."""
    digest = hashlib.sha256()
    fh.seek(0)
    while chunk := fh.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def verify_stream(fh: BinaryIO, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Verified:
    """Check the seekable stream `fh` (`size` bytes) is one complete, decodable image within `max_pixels`."""
    if size == 0:
        return Verified("empty file (0 bytes)")
    fh.seek(0)
    head = fh.read(256)
    digest = _sha256(fh)
    fmt = sniff_format(head[:16])
    if fmt is None:
        return Verified(_not_image_reason(head), bytes=size, sha256=digest)
    try:
        try:
            width, height, mode, channels = _decode(fh, fmt, max_pixels, raised=False)
        except (_OverPillowLimit, Image.DecompressionBombError):  # GIF/TIFF/WebP above Pillow's own limit
            with _pillow_limit_at_least(max_pixels):
                width, height, mode, channels = _decode(fh, fmt, max_pixels, raised=True)
    except Image.DecompressionBombError as exc:  # e.g. a GIF frame far larger than its declared screen
        return Verified(f"decompression-bomb guard: {exc}", fmt, bytes=size, sha256=digest)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        return Verified(f"corrupt or truncated {fmt}: {exc}", fmt, bytes=size, sha256=digest)
    if mode is None:
        return Verified(f"decompression-bomb guard: {width}x{height} = {width * height / 1e6:.1f} MP "
                        f"> {max_pixels / 1e6:.1f} MP (raise --max-pixels to allow)",
                        fmt, width, height, bytes=size, sha256=digest)
    return Verified(None, fmt, width, height, channels, _bit_depth(head, fmt, mode), size, digest)


def verify_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Verified:
    """Check `data` is one complete, decodable image no larger than `max_pixels` (checked from the header)."""
    return verify_stream(io.BytesIO(data), len(data), max_pixels)


def verify_file(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES) -> Verified:
    """verify_stream on a file, refused unread when over `max_bytes` (0: no limit); OS errors fail with the reason.

    The size comes from `stat` before anything is read; the hash is streamed and the decoder reads the
    file itself, so the file's bytes are never held in memory whole.
    """
    try:
        size = path.stat().st_size
        if max_bytes and size > max_bytes:
            return Verified(too_large(size, max_bytes), bytes=size)
        with path.open("rb") as fh:
            return verify_stream(fh, size, max_pixels)
    except OSError as exc:
        return Verified(f"cannot read {path}: {exc.strerror or exc}")
