"""Seeding: identical bytes across processes, PYTHONHASHSEED values and DataLoader worker counts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import degradations
from degradations.rng import rng_from_seed, sample_rng, sample_seed, seed_sequence

ROOT = Path(__file__).resolve().parents[2]
SNIPPET = ("import hashlib, numpy as np, degradations as D;"
           "img = np.full((32, 32, 3), 128, np.uint8);"
           "outs = [D.apply('gaussian_noise', img, D.sample_rng(7, f'id-{i}', 'noise'), sigma=25)[0] for i in range(4)];"
           "print(hashlib.sha256(b''.join(o.tobytes() for o in outs)).hexdigest(), D.sample_seed(7, 'id-0', 'noise'))")


def _run_with_hashseed(hashseed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hashseed, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_same_bytes_in_other_processes_with_any_hashseed() -> None:
    assert _run_with_hashseed("0") == _run_with_hashseed("12345") == _run_with_hashseed("random")


def test_different_ids_epochs_operations_and_seeds_differ() -> None:
    base = sample_rng(0, "a", "noise").random(4)
    for other in (sample_rng(0, "b", "noise"), sample_rng(0, "a", "jpeg"), sample_rng(1, "a", "noise"),
                  sample_rng(0, "a", "noise", epoch=1)):
        assert not np.array_equal(base, other.random(4))
    assert np.array_equal(base, sample_rng(0, "a", "noise").random(4))


def test_integer_operations_are_indices_and_stay_distinct_from_strings() -> None:
    assert seed_sequence(0, "a", 3).spawn_key[-1] == 3
    assert seed_sequence(0, "a", "3").spawn_key[-1] != 3


def test_stored_seed_recreates_the_generator() -> None:
    s = sample_seed(5, "pair-1", "rain")
    assert 0 <= s < 2**63 and s == sample_seed(5, "pair-1", "rain") != sample_seed(5, "pair-2", "rain")
    assert np.array_equal(rng_from_seed(s).random(3), rng_from_seed(s).random(3))
    with pytest.raises(ValueError, match="seed"):
        rng_from_seed(-1)


class _Noisy:
    """A tiny map-style dataset that degrades a constant image per index."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> np.ndarray:
        img = np.full((16, 16, 3), 100, np.uint8)
        rng = degradations.sample_rng(11, f"sample-{i}", "noise")
        return degradations.apply("gaussian_noise", img, rng, sigma=(5, 50))[0]


def test_identical_bytes_with_zero_or_two_dataloader_workers() -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    def collect(workers: int) -> list[bytes]:
        loader = DataLoader(_Noisy(), batch_size=None, num_workers=workers, shuffle=False)
        return [t.numpy().tobytes() for t in loader]

    assert torch.is_tensor(next(iter(DataLoader(_Noisy(), batch_size=None))))
    zero, two = collect(0), collect(2)
    assert zero == two and len(set(zero)) == 6
