"""Helpers for curation tests: generated images, fault responses, the real CLI in a subprocess."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from million_ird.httpserver import Response


def encode(fmt: str, width: int, height: int, seed: int = 0, mode: str = "RGB") -> bytes:
    """A smooth-plus-noise test image of the given size, encoded as `fmt`."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (np.sin(xx / 17.0 + seed) + np.cos(yy / 11.0)) * 60 + 128
    img = np.clip(base[..., None] + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    pil = Image.fromarray(img).convert(mode)
    buf = io.BytesIO()
    pil.save(buf, fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


GOOD = {
    "/img/a.png": ("PNG", 320, 240), "/img/b.png": ("PNG", 96, 128), "/img/c.jpg": ("JPEG", 640, 480),
    "/img/d.jpg": ("JPEG", 200, 150), "/img/e.webp": ("WEBP", 300, 200), "/img/f.webp": ("WEBP", 160, 90),
}


def fault_routes() -> dict[str, Response]:
    """Responses that must each fail with a meaningful reason."""
    jpeg = encode("JPEG", 640, 480, seed=9)
    return {
        "/bad/404": Response(b"gone", 404, "text/plain"),
        "/bad/500": Response(b"oops", 500, "text/plain"),
        "/bad/429": Response(b"slow down", 429, "text/plain"),
        "/bad/truncated.jpg": Response(jpeg[: len(jpeg) // 2], content_type="image/jpeg"),
        "/bad/page.html": Response(b"<!DOCTYPE html><html><body>not an image</body></html>", content_type="text/html"),
        "/bad/random.bin": Response(np.random.default_rng(3).bytes(5000)),
        "/bad/slow.png": Response(encode("PNG", 32, 32), content_type="image/png", delay=6.0),
        "/bad/noai.png": Response(encode("PNG", 40, 30), content_type="image/png", headers=(("X-Robots-Tag", "noai"),)),
        "/bad/empty.png": Response(b"", content_type="image/png"),
    }


def cli(*args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real `million-ird` command line in a subprocess."""
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    proc = subprocess.run([sys.executable, "-m", "million_ird.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"million-ird {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
