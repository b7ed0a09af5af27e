"""BRISQUE (Mittal, Moorthy, Bovik 2012), reproducing LIVE's MATLAB release and its libsvm model.

Algorithm (`brisquescore.m`): gray = rgb2gray(uint8); at two scales (the second from
`imresize(0.5)`) compute MSCN coefficients with a zero-padded 7x7 Gaussian (`filter2 'same'`),
a GGD fit of the coefficients and AGGD fits of their products with the circularly shifted
neighbours [0 1], [1 0], [1 1], [-1 1] -> 36 features. Features are printed with `%f`, scaled
by `svm-scale -r allrange` (which prints `%g`) and fed to LIVE's epsilon-SVR (RBF kernel),
whose prediction we compute here in NumPy: sum_i coef_i exp(-gamma |sv_i - x|^2) - rho.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
from scipy.special import gamma as gamma_fn

from million_ird.iqa import nss
from million_ird.iqa.registry import Metric, MetricOptions, register

log = logging.getLogger(__name__)

BRISQUE_VERSION = "brisque-live-1"
SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))
DEFAULT_PARAMS = "brisque_live.npz"
MIN_SIDE = 16


@dataclass(frozen=True)
class BrisqueModel:
    """LIVE's SVR: support vectors, dual coefficients, RBF gamma, rho and the svm-scale ranges."""

    sv: np.ndarray
    coef: np.ndarray
    gamma: float
    rho: float
    lower: float
    upper: float
    fmin: np.ndarray
    fmax: np.ndarray
    sha256: str


def load_brisque_model(path: str | Path | None = None) -> BrisqueModel:
    """Load a converted BRISQUE model (.npz); None loads LIVE's model shipped in the package."""
    if path is None:
        raw = (resources.files("million_ird.iqa") / "data" / DEFAULT_PARAMS).read_bytes()
    else:
        raw = Path(path).read_bytes()
    with np.load(io.BytesIO(raw)) as d:
        return BrisqueModel(sv=d["sv"].astype(np.float64), coef=d["coef"].astype(np.float64),
                            gamma=float(d["gamma"]), rho=float(d["rho"]), lower=float(d["scale_lower"]),
                            upper=float(d["scale_upper"]), fmin=d["feature_min"].astype(np.float64),
                            fmax=d["feature_max"].astype(np.float64), sha256=hashlib.sha256(raw).hexdigest())


def _scale_features(s: np.ndarray) -> list[float]:
    """The 18 BRISQUE features of one MSCN map."""
    alpha, std = nss.ggd_fit(s)
    feats = [alpha, std * std]
    n = s.size
    for shift in SHIFTS:
        pair = s * np.roll(s, shift, axis=(0, 1))
        a, left, right = nss.aggd_fit(nss.aggd_stats(pair.reshape(1, n)), n)
        a0, l0, r0 = float(a[0]), float(left[0]), float(right[0])
        const = np.sqrt(gamma_fn(1.0 / a0)) / np.sqrt(gamma_fn(3.0 / a0))
        mean = (r0 - l0) * (gamma_fn(2.0 / a0) / gamma_fn(1.0 / a0)) * const
        feats += [a0, float(mean), l0 * l0, r0 * r0]
    return feats


def brisque_features(img: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """The 36 BRISQUE features (two scales) of an RGB or gray image."""
    im = nss.to_gray(img).astype(np.float64, copy=False)
    if min(im.shape) < MIN_SIDE:
        raise ValueError(f"image is {im.shape[1]}x{im.shape[0]}; BRISQUE needs at least {MIN_SIDE} px per side")
    feats: list[float] = []
    for scale in (1, 2):
        s, _ = nss.mscn(im, cv2.BORDER_CONSTANT)
        feats += _scale_features(s.astype(dtype))
        if scale == 1:
            im = nss.imresize_half(im)
    return np.asarray(feats, dtype=np.float64)


def svm_scale(feat: np.ndarray, model: BrisqueModel) -> np.ndarray:
    """`%f` printing, then libsvm svm-scale (exact ends map to the bounds) and its `%g` printing."""
    x = np.array([float(f"{v:f}") for v in feat])
    with np.errstate(divide="ignore", invalid="ignore"):
        y = model.lower + (model.upper - model.lower) * (x - model.fmin) / (model.fmax - model.fmin)
    y = np.where(x == model.fmin, model.lower, np.where(x == model.fmax, model.upper, y))
    return np.array([float(f"{v:g}") for v in y])


def svr_predict(x: np.ndarray, model: BrisqueModel) -> float:
    """epsilon-SVR prediction with an RBF kernel: sum coef * exp(-gamma |sv - x|^2) - rho."""
    d2 = ((model.sv - x[None, :]) ** 2).sum(axis=1)
    return float(model.coef @ np.exp(-model.gamma * d2) - model.rho)


def brisque_from_features(feat: np.ndarray, model: BrisqueModel) -> float:
    """BRISQUE score from the 36 raw features."""
    if not np.all(np.isfinite(feat)):
        return float("nan")
    return svr_predict(svm_scale(feat, model), model)


def brisque(img: np.ndarray, model: BrisqueModel | None = None) -> float:
    """BRISQUE of an RGB (HxWx3) or gray (HxW) image, uint8/uint16; lower is better."""
    model = model or load_brisque_model()
    return brisque_from_features(brisque_features(img), model)


@register("brisque")
class BrisqueMetric(Metric):
    """BRISQUE with LIVE's SVR model shipped in the package."""

    version = BRISQUE_VERSION
    lower_is_better = True

    def __init__(self, options: MetricOptions) -> None:
        super().__init__(options)
        self._model: BrisqueModel | None = None

    def setup(self) -> None:
        """Load the SVR once."""
        if self._model is None:
            self._model = load_brisque_model()

    @property
    def params_sha256(self) -> str:
        """sha256 of the converted model file."""
        self.setup()
        assert self._model is not None
        return self._model.sha256

    def score(self, img: np.ndarray) -> float:
        """BRISQUE of one image."""
        self.setup()
        return brisque(img, self._model)
