"""Registry of degradations: a decorator that refuses duplicate names and `get(name)` with a helpful miss."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)


class DegradationError(ValueError):
    """Bad input or parameters for a degradation (the message names the parameter and the fix)."""


class Degradation(Protocol):
    """A degradation: (uint8 HxWx3 image, generator, **params) -> (uint8 HxWx3, params actually used)."""

    def __call__(self, image: np.ndarray, rng: np.random.Generator, **params: Any) -> tuple[np.ndarray, dict]:
        """Degrade `image` with draws from `rng`."""
        ...


_REGISTRY: dict[str, Degradation] = {}


def check_image(image: np.ndarray, name: str) -> None:
    """Raise DegradationError unless `image` is a uint8 HxWx3 array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{type(image).__name__} {getattr(image, 'dtype', '?')} {getattr(image, 'shape', '?')}"
        raise DegradationError(f"{name}: expected a uint8 HxWx3 RGB image, got {got}; convert it first")


def register(name: str) -> Callable[[Callable[..., tuple[np.ndarray, dict]]], Degradation]:
    """Register a degradation under `name`; a second registration of the same name is an error."""

    def wrap(fn: Callable[..., tuple[np.ndarray, dict]]) -> Degradation:
        if name in _REGISTRY:
            raise ValueError(f"degradation {name!r} is already registered; pick another name")

        @functools.wraps(fn)
        def checked(image: np.ndarray, rng: np.random.Generator, **params: Any) -> tuple[np.ndarray, dict]:
            check_image(image, name)
            if not isinstance(rng, np.random.Generator):
                raise DegradationError(f"{name}: rng must be a numpy Generator (see degradations.rng), "
                                       f"got {type(rng).__name__}")
            try:
                out, used = fn(image, rng, **params)
            except TypeError as exc:  # unknown keyword: name the valid ones
                raise DegradationError(f"{name}: {exc}") from exc
            return out, used

        checked.degradation_name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = checked
        return checked

    return wrap


def get(name: str) -> Degradation:
    """The degradation registered as `name` (the error lists the valid names)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DegradationError(f"unknown degradation {name!r}; valid names: {', '.join(names())}") from None


def names() -> list[str]:
    """All registered degradation names, sorted."""
    return sorted(_REGISTRY)


def apply(name: str, image: np.ndarray, rng: np.random.Generator, **params: Any) -> tuple[np.ndarray, dict]:
    """Look up `name` and apply it: shorthand for get(name)(image, rng, **params)."""
    return get(name)(image, rng, **params)


def draw(rng: np.random.Generator, value: Any, param: str, integer: bool = False) -> float | int:
    """A number as given, or a uniform draw from a (low, high) pair (inclusive ints when `integer`)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] > value[1]:
            raise DegradationError(f"parameter {param}={value!r}: give a number or a (low, high) pair, low <= high")
        lo, hi = value
        return int(rng.integers(int(lo), int(hi) + 1)) if integer else float(rng.uniform(lo, hi))
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
        raise DegradationError(f"parameter {param}={value!r}: give a number or a (low, high) pair")
    return int(value) if integer else float(value)


def check_range(value: float, param: str, lo: float, hi: float) -> None:
    """Raise DegradationError naming `param` when `value` is outside [lo, hi]."""
    if not lo <= value <= hi:
        raise DegradationError(f"parameter {param}={value!r} is out of range; use a value in [{lo}, {hi}]")
