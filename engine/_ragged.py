"""Ragged-array helpers (``values``/``lengths``/``offsets``) and sorted-key lookups, vectorized."""

from __future__ import annotations

import numpy as np


def range_indices(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each (s, n), without a Python loop."""
    lengths = np.asarray(lengths, np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.cumsum(lengths) - lengths
    keep = lengths > 0
    base = np.repeat(np.asarray(starts, np.int64)[keep] - offsets[keep], lengths[keep])
    return base + np.arange(total, dtype=np.int64)


def offsets_of(lengths: np.ndarray) -> np.ndarray:
    """``B + 1`` offsets of ragged rows with the given lengths."""
    out = np.zeros(len(lengths) + 1, np.int64)
    np.add.accumulate(lengths, out=out[1:])  # np.cumsum, without its Python wrapper (per-chunk overhead)
    return out


def group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """First position of each run of equal values in ``sorted_keys``."""
    if len(sorted_keys) == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def find(sorted_keys: np.ndarray, queries: np.ndarray) -> tuple:
    """(position, found) of each query in ``sorted_keys``; a position is only meaningful where found."""
    if len(sorted_keys) == 0:
        return np.zeros(len(queries), np.int64), np.zeros(len(queries), bool)
    pos = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return pos, sorted_keys[pos] == queries


def lookup(sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray, default=0) -> np.ndarray:
    """``values[k]`` where ``sorted_keys[k] == q`` for each query, else ``default``."""
    pos, hit = find(sorted_keys, queries)
    out = np.full(len(queries), default, dtype=values.dtype if len(values) else np.int64)
    out[hit] = values[pos[hit]]
    return out
