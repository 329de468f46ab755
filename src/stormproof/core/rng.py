"""Deterministic draws for the core, from the run's seed: no ``random`` module, no state.

Jitter must be the same when a run is replayed, so every draw is a pure hash
of (seed, task index, attempt number): replay and simulation agree by
construction, and the order in which draws happen cannot matter.
"""

from __future__ import annotations

_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def unit(seed: int, *keys: int) -> float:
    """A number in [0, 1) fixed by the seed and the keys."""
    h = _splitmix64(seed & _MASK)
    for key in keys:
        h = _splitmix64(h ^ (key & _MASK))
    return (h >> 11) / float(1 << 53)
