"""Reproducible image degradations (numpy/OpenCV only): registry, seeding, pre-training corruption."""

# explicit imports register every degradation (no directory scanning)
from degradations import compose, haze, jpeg, mask, noise, rain, recipes  # noqa: F401
from degradations.registry import Degradation, DegradationError, apply, get, names, register
from degradations.rng import rng_from_seed, sample_rng, sample_seed

__all__ = ["Degradation", "DegradationError", "apply", "get", "names", "register", "rng_from_seed",
           "sample_rng", "sample_seed"]
