"""Per-sample random generators seeded by (global seed, sample id, operation), reproducible everywhere.

A generator is `numpy.random.Generator(PCG64(SeedSequence(global_seed, spawn_key=key)))` where `key` is
the four 32-bit words of blake2b(sample_id), the epoch and a 32-bit word of the operation. Python's salted
`hash()` and the global RNG are never used, so the same triple gives the same bytes in any process, any
DataLoader worker count and any PYTHONHASHSEED.
"""

from __future__ import annotations

import hashlib

import numpy as np

MAX_SEED = 2**63 - 1


def _words(text: str, n: int) -> tuple[int, ...]:
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=4 * n).digest()
    return tuple(int.from_bytes(digest[4 * i: 4 * i + 4], "little") for i in range(n))


def _operation_word(operation: str | int) -> int:
    if isinstance(operation, (int, np.integer)) and not isinstance(operation, bool):
        if operation < 0:
            raise ValueError(f"operation index {operation} must be >= 0")
        return int(operation) & 0xFFFFFFFF
    return _words(str(operation), 1)[0]


def seed_sequence(global_seed: int, sample_id: str | int, operation: str | int = 0,
                  epoch: int = 0) -> np.random.SeedSequence:
    """The SeedSequence for one (global seed, sample id, operation, epoch)."""
    if int(global_seed) < 0 or int(epoch) < 0:
        raise ValueError(f"global_seed={global_seed} and epoch={epoch} must be >= 0")
    key = (*_words(str(sample_id), 4), int(epoch), _operation_word(operation))
    return np.random.SeedSequence(int(global_seed), spawn_key=key)


def sample_rng(global_seed: int, sample_id: str | int, operation: str | int = 0,
               epoch: int = 0) -> np.random.Generator:
    """A fresh PCG64 generator for one sample and one operation."""
    return np.random.Generator(np.random.PCG64(seed_sequence(global_seed, sample_id, operation, epoch)))


def sample_seed(global_seed: int, sample_id: str | int, operation: str | int = 0, epoch: int = 0) -> int:
    """A 63-bit integer seed for one sample (what a pair row stores in its `seed` column)."""
    state = seed_sequence(global_seed, sample_id, operation, epoch).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) | (int(state[1]) << 32)) & MAX_SEED)


def rng_from_seed(seed: int) -> np.random.Generator:
    """The generator a stored per-sample `seed` stands for."""
    if not 0 <= int(seed) <= MAX_SEED:
        raise ValueError(f"seed {seed} must be in [0, 2**63-1]")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed))))
