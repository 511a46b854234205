"""Compaction: the policy's rewrites and segment count over a year of daily seals; the old/recent split."""

import numpy as np
import pytest

import engine
from engine.serving import _segments
from engine.serving._compaction import MAX_SEGMENTS, TIER_MIN, TIER_RATIO, plan
from uih.workload import COLUMNS
from uih.workload import random_events as make_events


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


DAY = 86_400_000_000


def _store(root, events, split):
    store = engine.UIHStore.create(root, columns=COLUMNS)
    store.append(events)
    if not split:  # the same store with the recent/old split switched off: the reference
        with pytest.MonkeyPatch.context() as m:
            m.setattr(_segments, "OLD_SHARE_MIN", 2.0)
            store.seal(101 * DAY)
    else:
        store.seal(101 * DAY)
    return store


@pytest.mark.parametrize("proj", [dict(max_len=50, window_us=10 * DAY), dict(max_len=4000),
                                  dict(max_len=30, actions=[1, 2], window_us=40 * DAY)], ids=["window", "all", "types"])
def test_a_long_seal_splits_old_from_recent_and_reconstructs_the_same(tmp_path, rng, proj):
    ev = make_events(rng, range(20), 20_000, t0=0, span=100 * DAY)
    split, ref = _store(tmp_path / "a", ev, True), _store(tmp_path / "b", ev, False)
    segs = split._manifest["segments"]
    assert len(segs) == 2 and len(ref._manifest["segments"]) == 1
    horizon = int(ev["ts"].max()) - _segments.RECENT_US  # relative to the newest event sealed
    assert split.view.index(0, "main")["ts_max"].max() < horizon <= split.view.index(1, "main")["ts_max"].min()
    req = {"user_id": np.arange(20, dtype=np.int64), "request_ts": np.full(20, 101 * DAY, np.int64)}
    p = engine.Projection(["item_id", "ts", "action"], **proj)
    a = engine.Reconstructor(split, p, device="cpu").reconstruct(split.snapshot(req))
    b = engine.Reconstructor(ref, p, device="cpu").reconstruct(ref.snapshot(req))
    assert all(np.array_equal(a[c], b[c]) for c in ["item_id", "ts", "action", "lengths"])
    assert a["lengths"].sum() > 0
    split.compact(full=True)  # the merge splits again, relative to the newest sealed event
    assert len(split._manifest["segments"]) == 2
    c = engine.Reconstructor(split, p, device="cpu").reconstruct(split.snapshot(req))
    assert all(np.array_equal(a[k], c[k]) for k in ["item_id", "ts", "action", "lengths"])
