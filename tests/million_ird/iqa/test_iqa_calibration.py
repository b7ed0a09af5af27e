"""NIQE and BRISQUE against LIVE's MATLAB releases on TID2013 calibration images."""

from __future__ import annotations

import numpy as np
import pytest
from iqa_helpers import calib

from million_ird.iqa import brisque, niqe

# MATLAB values (LIVE releases, MATLAB given rgb2gray of the image): shared/iqa/README.md
MATLAB_NIQE = {"I03": 15.7536293917814, "I04": 3.65492152353770, "I06": 3.23547743716998}
MATLAB_BRISQUE = {"I03": 94.6421, "I04": -0.107618}


def _close(ours: float, ref: float) -> bool:
    """The issue's bound: 0.5% relative, or 0.01 absolute when |score| < 2."""
    return abs(ours - ref) <= (0.01 if abs(ref) < 2 else 0.005 * abs(ref))


@pytest.mark.parametrize("name", sorted(MATLAB_NIQE))
def test_niqe_matches_matlab(name: str) -> None:
    ours = niqe.niqe(calib(name))
    assert _close(ours, MATLAB_NIQE[name]), (name, ours, MATLAB_NIQE[name])


@pytest.mark.parametrize("name", sorted(MATLAB_BRISQUE))
def test_brisque_matches_matlab(name: str) -> None:
    ours = brisque.brisque(calib(name))
    assert _close(ours, MATLAB_BRISQUE[name]), (name, ours, MATLAB_BRISQUE[name])


def test_float32_statistics_do_not_move_scores() -> None:
    """The fast path (float32 block statistics) stays within 0.05% of an all-float64 run."""
    for name in ("I03", "I04", "I19"):
        img = calib(name)
        p = niqe.load_niqe_params()
        f32 = niqe.niqe_from_features(niqe.niqe_features(img, dtype=np.float32)[0], p)
        f64 = niqe.niqe_from_features(niqe.niqe_features(img, dtype=np.float64)[0], p)
        assert abs(f32 - f64) <= 5e-4 * abs(f64)
        m = brisque.load_brisque_model()
        b32 = brisque.brisque_from_features(brisque.brisque_features(img, np.float32), m)
        b64 = brisque.brisque_from_features(brisque.brisque_features(img, np.float64), m)
        assert abs(b32 - b64) <= max(5e-4 * abs(b64), 2e-3)
