"""Compaction policy: which segments a ``compact()`` merges (size-tiered, as in Cassandra)."""

from __future__ import annotations

TIER_RATIO = 2  # segments within 2x of each other are one size tier
TIER_MIN = 4  # merge a tier once it holds this many segments


def run_start(rows: list) -> int:
    """Index of the oldest segment of the newest size tier to merge, or ``len(rows)`` if none is due.

    Only a contiguous run of the newest segments can merge (a user's seqs must stay in segment order);
    the run grows backwards while each older segment is within ``TIER_RATIO`` of the run's largest,
    and merges once it has ``TIER_MIN`` members. Each event is so rewritten about log4(N) times, and a
    large base segment is left alone until the tiers above it grow comparable.
    """
    if not rows:
        return 0
    first, biggest = len(rows) - 1, rows[-1]
    while first > 0 and rows[first - 1] <= TIER_RATIO * max(biggest, 1) and biggest <= TIER_RATIO * rows[first - 1]:
        first -= 1
        biggest = max(biggest, rows[first])
    return first if len(rows) - first >= TIER_MIN else len(rows)
