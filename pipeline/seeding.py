"""Random generators keyed on the seed and what they are for, never on global state.

`rng(seed, "augment", record_id, variant)` gives the same draws for that record and variant
whatever the order, batch size or number of workers that reach it.
"""
from __future__ import annotations

import hashlib
import random

import numpy as np


def derive_seed(seed: int, *keys: object, bits: int = 64) -> int:
    """A non-negative integer seed from `seed` and `keys` (BLAKE2b, so keys never collide by sum)."""
    digest = hashlib.blake2b(repr((seed, *keys)).encode("utf-8"), digest_size=16).digest()
    return int.from_bytes(digest, "big") >> (128 - bits)


def rng(seed: int, *keys: object) -> np.random.Generator:
    """A numpy Generator for (seed, *keys)."""
    return np.random.default_rng(derive_seed(seed, *keys, bits=128))


def seed_globals(seed: int, *keys: object) -> None:
    """Seed Python's and numpy's global generators, for libraries that draw only from those (nlpaug).

    Use only around one call into such a library, with keys naming the record and variant.
    """
    value = derive_seed(seed, *keys, bits=32)
    random.seed(value)
    np.random.seed(value)
