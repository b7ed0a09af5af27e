"""The MATLAB-behaviour primitives: rgb2gray, imresize(0.5), shape lookup."""

from __future__ import annotations

import numpy as np

from million_ird.iqa import nss


def test_gray_matches_matlab_rgb2gray_on_every_rgb_triple() -> None:
    v = np.arange(256**3, dtype=np.uint32)
    img = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], -1).astype(np.uint8).reshape(4096, 4096, 3)
    c = (0.298936021293775, 0.587043074451121, 0.114020904255103)
    ref = np.floor(img[..., 0] * c[0] + img[..., 1] * c[1] + img[..., 2] * c[2] + 0.5)
    assert np.array_equal(nss.to_gray(img), ref)


def _matlab_imresize_half_1d(x: np.ndarray) -> np.ndarray:
    """MATLAB's imresize contributions for scale 0.5 along axis 0, written out index by index."""
    n = x.shape[0]
    out_len = int(np.ceil(n * 0.5))
    width = 4 / 0.5
    aux = np.concatenate([np.arange(n), np.arange(n)[::-1]])
    rows = []
    for i in range(1, out_len + 1):
        u = i / 0.5 + 0.5 * (1 - 1 / 0.5)
        left = int(np.floor(u - width / 2))
        idx = left + np.arange(int(np.ceil(width)) + 2)
        t = 0.5 * (u - idx)
        a = np.abs(t)
        w = 0.5 * np.where(a <= 1, 1.5 * a**3 - 2.5 * a**2 + 1,
                           np.where(a <= 2, -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2, 0))
        w = w / w.sum()
        src = aux[np.mod(idx - 1, 2 * n)]
        rows.append((w[:, None] * x[src]).sum(axis=0))
    return np.stack(rows)


def test_imresize_half_matches_matlab_contributions() -> None:
    rng = np.random.default_rng(0)
    for shape in ((17, 12), (16, 21), (9, 9)):
        x = rng.uniform(0, 255, shape)
        ref = _matlab_imresize_half_1d(_matlab_imresize_half_1d(x).T).T
        assert np.allclose(nss.imresize_half(x), ref, atol=1e-9)


def test_aggd_lookup_is_first_argmin_of_the_grid() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(0, 0.8, 2000), nss.R_AGGD[[0, 5, 9800]], [np.nan, -1.0, 2.0]])
    brute = np.array([0 if np.isnan(v) else int(np.argmin((nss.R_AGGD - v) ** 2)) for v in x])
    assert np.array_equal(nss._first_argmin_sorted(nss.R_AGGD, x), brute)


def test_aggd_fit_recovers_a_gaussian_shape() -> None:
    v = np.random.default_rng(2).normal(0, 3.0, (1, 400_000))
    alpha, left, right = nss.aggd_fit(nss.aggd_stats(v), v.shape[1])
    assert abs(alpha[0] - 2.0) < 0.05 and abs(left[0] - 3.0) < 0.05 and abs(right[0] - 3.0) < 0.05
