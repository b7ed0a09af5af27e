"""A 63-bit DCT perceptual hash (pHash) of an image, its centre-crop variants, and an "informative" test.

The hash, step by step:

1. luma Y = 0.299 R + 0.587 G + 0.114 B (OpenCV's RGB2GRAY, rounded to the input's integer type), on the
   0-255 scale (uint16 input is divided by 257);
2. optionally the central box of `region` times the height and width (rounded, centred);
3. area resize (cv2.INTER_AREA) to 32x32, ignoring the aspect ratio;
4. orthonormal 2-D DCT (cv2.dct) of the 32x32 float32 thumbnail;
5. the 8x8 block of the lowest frequencies, *without* the DC term: 63 AC coefficients. The DC (the mean
   brightness) is dropped because it always exceeds the median of the AC terms, so it would be a constant
   bit that carries nothing and makes every hash look alike in its top bit;
6. bit = coefficient > median of the 63 coefficients (strict), so every hash has exactly 31 one bits and the
   Hamming distance between two hashes is always even.

Bit layout and sign convention: AC coefficient k (row-major order over the 8x8 block, DC skipped, k = 0..62)
is bit 62 - k. Bit 63 is always 0, so every hash lies in [0, 2**63) and is stored in an int64 column
unchanged (non-negative); no two's-complement wrapping ever happens. `million_ird.hash_index` works on the
uint64 bit pattern (`as_uint64`), so any 64-bit values, negative int64 included, index correctly.

Crops. A global pHash moves by 10-20 bits when 3-5% is cut off each side, because the whole frame rescales.
A centre-box variant fixes most of it: if B is A cut by c per side, B's full frame is A's central box of
1 - 2c, so comparing every variant of one image with every variant of the other (full and `CENTRE`, 4
comparisons) lands within 1-2% of the right scale for crops of 3-5%. Test images, being few, get a ladder of
boxes (`TEST_REGIONS`) so a store copy cut by up to ~7% per side meets a rung. Measured distances on the
scikit-image photos are printed by `benchmarks/bench_dedup.py --distances` and summarised in
`million_ird.dedup` (they set its default radius).

Informative images. Near-uniform images (solid colours, smooth ramps, radial gradients) have AC coefficients
that are all (nearly) equal, mostly 0: the median threshold then turns rounding noise, or nothing at all,
into bits, and unrelated flat images collide (every solid colour gets the bits of cv2.dct's float
round-off, whatever its colour). `structure` measures how far
the coefficients sit from the threshold: the 25th percentile of |c - median(c)| over the 63 AC coefficients,
in orthonormal-DCT units on the 0-255 scale (1 unit = a pattern of 1 grey level rms over the thumbnail),
taken as the smaller of the full frame and the centre box. An image is informative when structure >=
`STRUCTURE_MIN` (3.0), i.e. at least three quarters of its bits are decided by a margin of 3 units or more.
Measured (`benchmarks/bench_dedup.py --distances`): solid colours and
ramps 0.00, a ramp with noise sigma 3 0.07, a radial gradient 0.02, uniform noise 0.96, the brick texture 1.6
(a fine texture averages out to a near-flat thumbnail), the synthetic colour wheel 2.0 (radially symmetric:
a quarter of its coefficients are ~0, and its quadrants hash like those of the retina photo), then the
photographs: Hubble deep field 4.9, moon 5.6, grass 5.9, all others 7 to 48. Images that are
not informative are never grouped by hash; they can still be grouped by an exact sha256.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

BITS = 63  # bits used by a hash (bit 63 is always 0)
THUMB = 32  # side of the resized thumbnail
LOW = 8  # side of the low-frequency block
CENTRE = 0.92  # side fraction of the centre box stored next to the full-frame hash
TEST_REGIONS = (1.0, 0.98, 0.96, 0.94, 0.92, 0.90, 0.88, 0.86)  # boxes hashed for each test-set image
STRUCTURE_MIN = 3.0  # images with structure below this are not informative
_WEIGHTS = np.left_shift(np.uint64(1), np.arange(BITS - 1, -1, -1, dtype=np.uint64))


@dataclass(frozen=True)
class ImageHash:
    """The per-image half of dedup: full-frame hash, centre-box hash, structure and the informative flag."""

    phash: int
    phash_centre: int
    structure: float
    informative: bool


def luma(image: np.ndarray) -> np.ndarray:
    """Luma on the 0-255 scale (float32) of a uint8/uint16 gray HxW, RGB HxWx3 or RGBA HxWx4 array."""
    if image.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"phash needs a uint8 or uint16 image, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] in (3, 4):  # OpenCV's RGB2GRAY uses the same weights, rounded
        code = cv2.COLOR_RGB2GRAY if image.shape[2] == 3 else cv2.COLOR_RGBA2GRAY
        gray = cv2.cvtColor(np.ascontiguousarray(image), code).astype(np.float32)
    elif image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        gray = image.reshape(image.shape[:2]).astype(np.float32)
    else:
        raise ValueError(f"phash needs a HxW, HxWx3 or HxWx4 image, got shape {image.shape}")
    if image.dtype == np.uint16:
        gray *= np.float32(1 / 257.0)
    return gray


def centre_box(gray: np.ndarray, region: float) -> np.ndarray:
    """The central box covering `region` (0 < region <= 1) of the height and of the width."""
    if not 0.0 < region <= 1.0:
        raise ValueError(f"region must be in (0, 1], got {region}")
    h, w = gray.shape[:2]
    bh, bw = max(1, round(h * region)), max(1, round(w * region))
    y, x = (h - bh) // 2, (w - bw) // 2
    return gray[y:y + bh, x:x + bw]


def ac_coefficients(gray: np.ndarray) -> np.ndarray:
    """The 63 low-frequency AC coefficients (8x8 block, DC dropped, row-major) of a luma array."""
    thumb = cv2.resize(np.ascontiguousarray(gray, np.float32), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    return cv2.dct(thumb)[:LOW, :LOW].ravel()[1:].astype(np.float64)


def bits_to_int(bits: np.ndarray) -> int:
    """Pack 63 booleans (first = most significant, bit 62) into a non-negative Python int."""
    return int(np.bitwise_or.reduce(np.where(bits, _WEIGHTS, np.uint64(0))))


def _hash_and_margin(gray: np.ndarray) -> tuple[int, float]:
    """(hash, 25th percentile of |c - median|) of a luma array."""
    coeffs = ac_coefficients(gray)
    median = np.median(coeffs)
    return bits_to_int(coeffs > median), float(np.percentile(np.abs(coeffs - median), 25))


def phash(image: np.ndarray, region: float = 1.0) -> int:
    """The 63-bit pHash (a non-negative int, fits int64) of the image or of its central `region` box."""
    return _hash_and_margin(centre_box(luma(image), region))[0]


def hash_variants(image: np.ndarray, regions: tuple[float, ...] = TEST_REGIONS) -> np.ndarray:
    """The pHash of each central box in `regions` (int64 array), e.g. the ladder used for test images."""
    gray = luma(image)
    return np.array([_hash_and_margin(centre_box(gray, r))[0] for r in regions], np.int64)


def structure(image: np.ndarray) -> float:
    """How far the AC coefficients sit from the median threshold (min over full frame and centre box)."""
    return hash_image(image).structure


def informative(image: np.ndarray) -> bool:
    """Whether the hash carries information (structure >= STRUCTURE_MIN); see the module docstring."""
    return hash_image(image).informative


def hash_image(image: np.ndarray, centre: float = CENTRE) -> ImageHash:
    """Full-frame hash, centre-box hash, structure and informative flag, from one luma conversion."""
    gray = luma(image)
    full, margin_full = _hash_and_margin(gray)
    box, margin_box = _hash_and_margin(centre_box(gray, centre))
    value = min(margin_full, margin_box)
    return ImageHash(full, box, value, value >= STRUCTURE_MIN)


def hamming(a: int, b: int) -> int:
    """Hamming distance between two 64-bit hashes (ints, signed or not)."""
    return bin((int(a) ^ int(b)) & 0xFFFF_FFFF_FFFF_FFFF).count("1")


def to_int64(value: int) -> int:
    """The int64 that stores a 64-bit pattern (identity for pHashes, which never set bit 63)."""
    value = int(value) & 0xFFFF_FFFF_FFFF_FFFF
    return value - (1 << 64) if value >= 1 << 63 else value


def from_int64(value: int) -> int:
    """The unsigned 64-bit pattern of an int64 read back from storage."""
    return int(value) & 0xFFFF_FFFF_FFFF_FFFF
