"""Compaction policy: which contiguous segments a ``compact()`` merges (size-tiered, as in Cassandra).

Only contiguous segments can merge (a user's seqs must stay in segment order), and the merged segment
takes their place. A *tier* is a contiguous run of segments within ``TIER_RATIO`` of each other; one
due for merging holds at least ``TIER_MIN`` of them. Every tier is considered, not only the newest:
with only the newest run, a tier of merged segments is never merged again once a fresh seal lands
behind it, and the number of segments a reader opens grows linearly with the days (94 after a year of
daily seals and a compaction every other day, against at most 12 here; see tests/test_compaction.py).
Each event is so rewritten about log4(N) times, and a large base is left alone until the tiers above
it grow comparable. ``MAX_SEGMENTS`` is a hard bound on top: past it, the cheapest contiguous window
that brings the count back merges, whatever the sizes.
"""

from __future__ import annotations

import numpy as np

TIER_RATIO = 2  # segments within 2x of each other are one size tier
TIER_MIN = 4  # merge a tier once it holds this many segments
MAX_SEGMENTS = 16  # never leave a reader more segments to open than this


def _tiers(rows: list):
    """(first, stop) of each maximal run of segments within TIER_RATIO of each other, newest first."""
    stop = len(rows)
    while stop > 0:
        first, lo, hi = stop - 1, rows[stop - 1], rows[stop - 1]
        while first > 0 and max(hi, rows[first - 1]) <= TIER_RATIO * max(min(lo, rows[first - 1]), 1):
            first -= 1
            lo, hi = min(lo, rows[first]), max(hi, rows[first])
        yield first, stop
        stop = first


def plan(rows: list, max_segments: int = MAX_SEGMENTS) -> tuple:
    """``(first, stop)``: merge segments ``first..stop-1`` into one; ``first == stop`` when none is due.

    ``rows``: each segment's row count, in seal order. The cheapest ``TIER_MIN`` neighbours of a due tier merge
    (fewest rows rewritten); past ``max_segments``, the cheapest window of neighbours that restores the bound.
    """
    n = len(rows)
    if n > max(max_segments, 1):
        k = n - max(max_segments, 1) + 1
        cost = np.convolve(np.asarray(rows, np.float64), np.ones(k), "valid")
        first = len(cost) - 1 - int(np.argmin(cost[::-1]))  # ties: the newest window
        return first, first + k
    # within a tier, exactly TIER_MIN neighbours merge: a tier's size bounds what one compaction rewrites
    due = [(sum(rows[a:a + TIER_MIN]), -a, a) for f, b in _tiers(rows) for a in range(f, b - TIER_MIN + 1)]
    if not due:
        return n, n
    first = min(due)[2]
    return first, first + TIER_MIN
