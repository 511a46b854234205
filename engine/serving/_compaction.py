"""Compaction policy: which contiguous segments a ``compact()`` merges (size-tiered, as in Cassandra).

Only contiguous segments can merge (a user's seqs must stay in segment order), and the merged segment
takes their place. A *tier* is a contiguous run of segments within ``TIER_RATIO`` of each other; one
due for merging holds at least ``TIER_MIN`` of them. Every tier is considered, not only the newest:
with only the newest run, a tier of merged segments is never merged again once a fresh seal lands
behind it, and the number of segments a reader opens grows linearly with the days (94 after a year of
daily seals and a compaction every other day, against at most 12 here; see tests/test_compaction.py).
Each event is so rewritten about log4(N) times, and a large base is left alone until the tiers above
it grow comparable.

``MAX_SEGMENTS`` is a hard bound on top. Past it, a *balanced* window merges: one whose largest segment
is at most ``BALANCE`` of the window, the cheapest per segment removed. Tiers are fragile (one segment
off by 2x, from a busy day or an old/recent split, breaks a run of four), so a long-lived store does
reach the bound; merging there the cheapest neighbours whatever their sizes would fold each fresh
seal into the same growing segment: after 3 to 5 years of simulated daily seals each event would be
rewritten 20 to 61 times where daily volumes vary by 30-60% (some days' events over 200 times), 7 to 10
times after 5 flat years. A balanced merge at least doubles the segment each of its events lies in (an
old/recent split aside), as a tier merge does (four within 2x: the largest is at most 2/5), so rewrites
stay logarithmic: at most 5.6 per event and 10 for any day's events in the same simulations
(bench/bench_compaction.py, tests/test_compaction.py).
"""

from __future__ import annotations

import numpy as np

TIER_RATIO = 2  # segments within 2x of each other are one size tier
TIER_MIN = 4  # merge a tier once it holds this many segments
MAX_SEGMENTS = 16  # never leave a reader more segments to open than this
BALANCE = 0.5  # past MAX_SEGMENTS, merge a window whose largest segment is at most half of it


def _tiers(rows: list, ratio: float = TIER_RATIO):
    """(first, stop) of each maximal run of segments within ``ratio`` of each other, newest first."""
    stop = len(rows)
    while stop > 0:
        first, lo, hi = stop - 1, rows[stop - 1], rows[stop - 1]
        while first > 0 and max(hi, rows[first - 1]) <= ratio * max(min(lo, rows[first - 1]), 1):
            first -= 1
            lo, hi = min(lo, rows[first]), max(hi, rows[first])
        yield first, stop
        stop = first


def cheapest_window(rows: list, k: int) -> tuple:
    """``(first, first + k)``: the ``k`` neighbours with the fewest rows (ties: the newest)."""
    cost = np.convolve(np.asarray(rows, np.float64), np.ones(k), "valid")
    first = len(cost) - 1 - int(np.argmin(cost[::-1]))
    return first, first + k


def balanced_window(rows: list, k: int, balance: float = BALANCE) -> tuple:
    """``(first, stop)``: the window of at least ``k`` neighbours whose largest segment holds at most
    ``balance`` of its rows, with the fewest rows per segment removed (ties: the newest); else the
    cheapest ``k`` neighbours, whatever their sizes."""
    n, best = len(rows), None
    for a in range(n - k + 1):
        big, total = max(rows[a:a + k - 1], default=0), sum(rows[a:a + k - 1])
        for z in range(a + k, n + 1):  # windows a..z-1, widening: running largest and total
            big, total = max(big, rows[z - 1]), total + rows[z - 1]
            if big <= balance * total and (best is None or (total / (z - a - 1), -a) < best[0]):
                best = ((total / (z - a - 1), -a), a, z)
    return (best[1], best[2]) if best else cheapest_window(rows, k)


def plan(rows: list, max_segments: int = MAX_SEGMENTS, tier_min: int = TIER_MIN,
         tier_ratio: float = TIER_RATIO) -> tuple:
    """``(first, stop)``: merge segments ``first..stop-1`` into one; ``first == stop`` when none is due.

    ``rows``: each segment's row count, in seal order. The cheapest ``tier_min`` neighbours of a due tier merge
    (fewest rows rewritten); past ``max_segments``, a balanced window (``balanced_window``) that restores
    the bound. The store uses the defaults; bench/bench_compaction.py replays other settings against them.
    """
    n = len(rows)
    if n > max(max_segments, 1):
        return balanced_window(rows, n - max(max_segments, 1) + 1)
    # within a tier, exactly tier_min neighbours merge: a tier's size bounds what one compaction rewrites
    due = [(sum(rows[a:a + tier_min]), -a, a) for f, b in _tiers(rows, tier_ratio) for a in range(f, b - tier_min + 1)]
    if not due:
        return n, n
    first = min(due)[2]
    return first, first + tier_min
