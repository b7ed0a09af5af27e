"""Fixtures for dynet_ref tests: a tiny DyNet (width 8) with seeded weights."""

from __future__ import annotations

import pytest
import torch

from dynet_ref.model import DyNet

TINY_WIDTH = 8


@pytest.fixture
def tiny() -> DyNet:
    """A width-8 DyNet-S in eval mode, deterministic weights."""
    torch.manual_seed(0)
    return DyNet("S", width=TINY_WIDTH).eval()


@pytest.fixture
def image() -> torch.Tensor:
    """One seeded 3x40x56 image in [0, 1]."""
    return torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(1))
