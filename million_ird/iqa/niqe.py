"""NIQE (Mittal, Soundararajan, Bovik 2013), reproducing LIVE's MATLAB release, vectorised over blocks.

Algorithm (MATLAB `computequality.m` with 96x96 blocks, no overlap): gray = rgb2gray(uint8); crop to
whole blocks; at two scales (the second from `imresize(0.5)`) compute MSCN coefficients with a
replicate-padded 7x7 Gaussian, then per block 18 AGGD features (the coefficients and their
products with the block-circularly-shifted neighbours [0 1], [1 0], [1 1], [1 -1]). The score is
the Mahalanobis-like distance between the pristine MVG and the MVG of the image's blocks
(`nanmean`, `nancov`, `pinv` of the averaged covariances).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
from scipy.special import gamma as gamma_fn

from million_ird.iqa import nss
from million_ird.iqa.registry import Metric, MetricOptions, register

log = logging.getLogger(__name__)

NIQE_VERSION = "niqe-live-1"
BLOCK = 96
SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
DEFAULT_PARAMS = "niqe_pris_live.npz"


@dataclass(frozen=True)
class NiqeParams:
    """A pristine multivariate Gaussian: mean (36,), covariance (36, 36) and the file's sha256."""

    mu: np.ndarray
    cov: np.ndarray
    sha256: str
    source: str


def load_niqe_params(path: str | Path | None = None) -> NiqeParams:
    """Load a pristine model (.npz with `mu`, `cov`); None loads LIVE's model shipped in the package."""
    if path is None:
        ref = resources.files("million_ird.iqa") / "data" / DEFAULT_PARAMS
        raw, source = ref.read_bytes(), f"package:{DEFAULT_PARAMS}"
    else:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"NIQE parameter file {p} not found; create one with `million-ird iqa fit-niqe`")
        raw, source = p.read_bytes(), str(p)
    with np.load(io.BytesIO(raw)) as d:
        if "mu" not in d or "cov" not in d:
            raise ValueError(f"NIQE parameter file {source} lacks keys 'mu' and 'cov' (has {sorted(d.keys())})")
        mu, cov = np.asarray(d["mu"], np.float64).reshape(-1), np.asarray(d["cov"], np.float64)
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise ValueError(f"NIQE parameter file {source}: need mu (36,) and cov (36,36), got {mu.shape}, {cov.shape}")
    return NiqeParams(mu=mu, cov=cov, sha256=hashlib.sha256(raw).hexdigest(), source=source)


def _blocks(a: np.ndarray, b: int) -> np.ndarray:
    """(H, W) with H, W multiples of b -> contiguous (n_blocks, b, b), row-major block order."""
    h, w = a.shape
    return np.ascontiguousarray(a.reshape(h // b, b, w // b, b).swapaxes(1, 2)).reshape(-1, b, b)


def _scale_features(s: np.ndarray, b: int) -> np.ndarray:
    """The 18 per-block AGGD features of MSCN map `s` split into b x b blocks -> (n_blocks, 18)."""
    blk = _blocks(s, b)
    nb, n = blk.shape[0], b * b
    cols = []
    alpha, left, right = nss.aggd_fit(nss.aggd_stats(blk.reshape(nb, n)), n)
    const = np.sqrt(gamma_fn(1.0 / alpha) / gamma_fn(3.0 / alpha))
    cols += [alpha, (left + right) * const / 2.0]
    for shift in SHIFTS:
        pair = blk * np.roll(blk, shift, axis=(1, 2))
        alpha, left, right = nss.aggd_fit(nss.aggd_stats(pair.reshape(nb, n)), n)
        const = np.sqrt(gamma_fn(1.0 / alpha) / gamma_fn(3.0 / alpha))
        bl, br = left * const, right * const
        cols += [alpha, (br - bl) * gamma_fn(2.0 / alpha) / gamma_fn(1.0 / alpha), bl, br]
    return np.stack(cols, axis=1)


def niqe_features(img: np.ndarray, block: int = BLOCK, dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Per-block NIQE features (n_blocks, 36) and per-block sharpness (mean local sigma at scale 1)."""
    gray = nss.to_gray(img)
    h, w = gray.shape
    if h < block or w < block:
        raise ValueError(f"image is {w}x{h}; NIQE needs at least {block}x{block} pixels (one block)")
    im = gray[: h // block * block, : w // block * block].astype(np.float64)
    feats, sharp = [], None
    for scale in (1, 2):
        s, sigma = nss.mscn(im, cv2.BORDER_REPLICATE)
        b = block // scale
        feats.append(_scale_features(s.astype(dtype), b))
        if scale == 1:
            sharp = _blocks(sigma, b).reshape(-1, b * b).mean(axis=1)
            im = nss.imresize_half(im)
    assert sharp is not None
    return np.concatenate(feats, axis=1), sharp


def _nan_mvg(feat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB nanmean (per column) and nancov (complete rows; one row gives zeros)."""
    mu = np.nanmean(feat, axis=0)
    rows = feat[~np.isnan(feat).any(axis=1)]
    if rows.shape[0] < 2:
        return mu, np.zeros((feat.shape[1], feat.shape[1]))
    return mu, np.cov(rows, rowvar=False)


def niqe_from_features(feat: np.ndarray, params: NiqeParams) -> float:
    """NIQE distance between the pristine model and the MVG fitted to `feat` (n_blocks, 36)."""
    mu, cov = _nan_mvg(feat)
    a = (params.cov + cov) / 2.0
    inv = np.linalg.pinv(a, rcond=max(a.shape) * np.finfo(np.float64).eps)
    d = params.mu - mu
    return float(np.sqrt(d @ inv @ d))


def niqe(img: np.ndarray, params: NiqeParams | None = None) -> float:
    """NIQE of an RGB (HxWx3) or gray (HxW) image, uint8/uint16; lower is better."""
    params = params or load_niqe_params()
    feat, _ = niqe_features(img)
    return niqe_from_features(feat, params)


def fit_niqe(images: Iterable[np.ndarray], sharpness_threshold: float = 0.75, block: int = BLOCK) -> dict[str, np.ndarray]:
    """Fit a pristine model: blocks sharper than `threshold` x each image's sharpest, nanmean + nancov."""
    kept = []
    for img in images:
        feat, sharp = niqe_features(img, block=block, dtype=np.float64)
        kept.append(feat[sharp > sharpness_threshold * sharp.max()])
    if not kept:
        raise ValueError("fit_niqe got no images")
    allf = np.concatenate(kept, axis=0)
    if allf.shape[0] < 37:
        raise ValueError(f"only {allf.shape[0]} sharp blocks; a 36-D covariance needs far more (add pristine images)")
    mu, cov = _nan_mvg(allf)
    return {"mu": mu, "cov": cov, "n_blocks": np.int64(allf.shape[0])}


@register("niqe")
class NiqeMetric(Metric):
    """NIQE with LIVE's pristine model, or a model from `MetricOptions.niqe_params` (fit-niqe output)."""

    version = NIQE_VERSION
    lower_is_better = True

    def __init__(self, options: MetricOptions) -> None:
        super().__init__(options)
        self._params: NiqeParams | None = None

    def setup(self) -> None:
        """Load the pristine model once."""
        if self._params is None:
            self._params = load_niqe_params(self.options.niqe_params)

    @property
    def params_sha256(self) -> str:
        """sha256 of the pristine-model file."""
        self.setup()
        assert self._params is not None
        return self._params.sha256

    def score(self, img: np.ndarray) -> float:
        """NIQE of one image."""
        self.setup()
        return niqe(img, self._params)
