"""verify_bytes: real format from magic bytes, full decode, bomb guard, bit depth."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from curation_helpers import encode
from PIL import Image

from million_ird.stages.verify import verify_bytes


@pytest.mark.parametrize("fmt,name", [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp"), ("BMP", "bmp"),
                                      ("TIFF", "tiff"), ("GIF", "gif")])
def test_good_images_report_real_format_and_size(fmt: str, name: str) -> None:
    v = verify_bytes(encode(fmt, 123, 45))
    assert v.error is None and v.format == name and (v.width, v.height) == (123, 45)


def test_channels_and_bit_depth() -> None:
    gray16 = io.BytesIO()
    Image.fromarray(np.arange(64 * 32, dtype=np.uint16).reshape(32, 64) * 30).save(gray16, "PNG")
    v = verify_bytes(gray16.getvalue())
    assert (v.channels, v.bit_depth) == (1, 16)
    rgba = verify_bytes(encode("PNG", 20, 10, mode="RGBA"))
    assert (rgba.channels, rgba.bit_depth) == (4, 8)


@pytest.mark.parametrize("data,reason", [
    (b"", "empty file"),
    (b"<html><body>hi</body></html>", "HTML"),
    (bytes(range(256)) * 4, "unknown file signature"),
])
def test_non_images_fail_with_reason(data: bytes, reason: str) -> None:
    v = verify_bytes(data)
    assert v.error is not None and reason in v.error


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_files_fail(fmt: str) -> None:
    data = encode(fmt, 400, 300)
    v = verify_bytes(data[: len(data) * 2 // 3])
    assert v.error is not None and ("truncated" in v.error or "corrupt" in v.error)


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    idat = b"IDAT" + zlib.compress(b"\x00" * 10)
    tail = struct.pack(">I", 10) + idat + struct.pack(">I", zlib.crc32(idat))
    return b"\x89PNG\r\n\x1a\n" + body + tail


def test_decompression_bomb_guard_fails_without_decoding() -> None:
    v = verify_bytes(_png_header_only(30000, 30000))  # 900 MP declared, a few bytes of data
    assert v.error is not None and "decompression-bomb guard" in v.error and "900.0 MP" in v.error
    assert verify_bytes(encode("PNG", 100, 100), max_pixels=5000).error.startswith("decompression-bomb")
