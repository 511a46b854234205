"""The compaction policy's write amplification and segment count, simulated over a year of daily seals."""

import pytest

from engine.serving._compaction import MAX_SEGMENTS, TIER_MIN, TIER_RATIO, plan


def newest_run_only(rows):
    """The previous policy (reference): only the newest run of similar segments may merge."""
    first, biggest = len(rows) - 1, rows[-1]
    while first > 0 and rows[first - 1] <= TIER_RATIO * biggest and biggest <= TIER_RATIO * rows[first - 1]:
        first -= 1
        biggest = max(biggest, rows[first])
    return (first, len(rows)) if len(rows) - first >= TIER_MIN else (len(rows), len(rows))


def simulate(policy, days, base=30.0, every=2):
    """Daily seals of one unit onto a base of ``base`` units, compact() every ``every`` days."""
    segs, rewritten, most = [base], 0.0, 1
    for d in range(days):
        segs.append(1.0)
        if (d + 1) % every == 0:
            a, b = policy(segs)
            if b - a > 1:
                rewritten += sum(segs[a:b])
                segs = [*segs[:a], sum(segs[a:b]), *segs[b:]]
        most = max(most, len(segs))
    return rewritten / days, most


def test_plan_merges_the_cheapest_due_tier_anywhere():
    assert plan([100, 40, 40, 40, 40, 9, 1]) == (1, 5)  # an older tier, not only the newest run
    assert plan([100, 10, 10, 10, 10, 40, 40, 40, 40]) == (1, 5)  # the cheaper of two due tiers
    assert plan([1, 2, 3], max_segments=2) == (0, 2)  # the hard bound: cheapest window of neighbours
    assert plan([5, 1, 1, 5], max_segments=3) == (1, 3)


@pytest.mark.parametrize("days", [60, 365])
def test_segments_stay_bounded_with_logarithmic_rewrites(days):
    old_amp, old_most = simulate(newest_run_only, days)
    amp, most = simulate(plan, days)
    assert most <= 12 < old_most  # 94 segments after a year before, a reader now opens at most 12
    assert most <= MAX_SEGMENTS
    assert amp <= 4.0  # units rewritten per unit sealed: about log4 of the data's growth
