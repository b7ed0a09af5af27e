"""JPEG compression through OpenCV's libjpeg (record the OpenCV version: bytes depend on the build)."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from degradations.registry import DegradationError, check_range, draw, register


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """The JPEG bytes OpenCV writes for an RGB uint8 image at `quality`."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise DegradationError(f"jpeg: OpenCV failed to encode a {image.shape} image at quality {quality}")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode JPEG bytes to an RGB uint8 image."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@register("jpeg")
def jpeg(image: np.ndarray, rng: np.random.Generator, quality: Any = 50) -> tuple[np.ndarray, dict]:
    """Encode with OpenCV at `quality` (1..100, or an inclusive (low, high) range) and decode."""
    q = int(draw(rng, quality, "quality", integer=True))
    check_range(q, "quality", 1, 100)
    out = decode_jpeg(encode_jpeg(image, q))
    return out, {"quality": q, "opencv": cv2.__version__}
