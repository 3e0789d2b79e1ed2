"""Counter-based random numbers for sampling: one uniform per (seed, token index, stream), a
hash (splitmix64) rather than a generator's state, so a seeded row draws the same numbers alone
or in any batch, and a step needs one number per row instead of one per vocabulary entry."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MASK64 = (1 << 64) - 1
# Added to the seed once per stream (the 64-bit golden ratio, splitmix64's own increment):
# stream 0 is the plain (seed, counter) hash, each later stream an unrelated sequence.
STREAM_STEP = 0x9E3779B97F4A7C15


def uniform(seed: int, counter: int, stream: int = 0) -> float:
    """splitmix64 of (seed, counter, stream), as a float in [0, 1)."""
    seed = (seed + stream * STREAM_STEP) & MASK64
    x = (seed * 0x9E3779B97F4A7C15 + (counter + 1) * 0xD1B54A32D192ED03) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    x ^= x >> 31
    return (x >> 11) / float(1 << 53)


def seed_array(seeds: Sequence[int]) -> np.ndarray:
    """Seeds as uint64 (any Python int: negative or wider ones wrap as ``uniform`` wraps them)."""
    return np.array([seed & MASK64 for seed in seeds], dtype=np.uint64)


def uniforms(seeds: np.ndarray, counters: np.ndarray, stream: int | np.ndarray = 0) -> np.ndarray:
    """``uniform`` for every row at once (the same bits: uint64 arithmetic wraps at 2**64);
    ``seeds`` as ``seed_array`` gives them. Arrays of seeds, counters and streams broadcast."""
    c = counters.astype(np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        x = seeds + np.asarray(stream, dtype=np.uint64) * np.uint64(STREAM_STEP)
        x = x * np.uint64(0x9E3779B97F4A7C15) + c * np.uint64(0xD1B54A32D192ED03)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    out: np.ndarray = (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return out
