"""Natural test images shipped with scikit-image (no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

NATURAL = ("astronaut", "chelsea", "coffee", "rocket")


@pytest.fixture(scope="session")
def natural_images() -> dict[str, np.ndarray]:
    """Four natural colour photographs (uint8 RGB)."""
    return {name: getattr(skimage.data, name)() for name in NATURAL}


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """One 512x512 natural colour photograph."""
    return skimage.data.astronaut()
