"""Compaction: the policy's rewrites and segment count over years of daily seals; the old/recent split."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
from engine.serving import _segments
from engine.serving._compaction import BALANCE, MAX_SEGMENTS, TIER_MIN, TIER_RATIO, cheapest_window, plan
from uih.workload import COLUMNS
from uih.workload import random_events as make_events


def newest_run_only(rows):
    """A simpler policy to compare against: only the newest run of similar segments may merge."""
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
    assert plan([5, 1, 1, 5], max_segments=3) == (1, 3)  # the hard bound: a balanced window of neighbours
    # [1, 2] is the cheapest pair, but 2 is most of it: all three, the largest half of them, merge instead
    assert plan([1, 2, 3], max_segments=2) == (0, 3)
    assert plan([10, 1, 1, 1, 1, 10], max_segments=5) == (1, 5)  # 4 small ones: cheapest per segment removed
    assert plan([1, 100], max_segments=1) == (0, 2)  # no balanced window: the cheapest one, whatever it holds


def cheapest_bound(rows):
    """A simpler hard bound to compare against: past MAX_SEGMENTS, the cheapest neighbours whatever their
    sizes."""
    n = len(rows)
    return cheapest_window(rows, n - MAX_SEGMENTS + 1) if n > MAX_SEGMENTS else plan(rows)


@pytest.mark.parametrize("days", [60, 365])
def test_segments_stay_bounded_with_logarithmic_rewrites(days):
    _, run_most = simulate(newest_run_only, days)
    amp, most = simulate(plan, days)
    assert most <= 12 < run_most  # newest-run-only leaves 94 segments after a year for a reader to open
    assert most <= MAX_SEGMENTS
    assert amp <= 4.0  # units rewritten per unit sealed: about log4 of the data's growth


def simulate_years(policy, daily, every=2, recent=28):
    """Seals of ``daily[d]`` units on day d onto a 180-day backfill, compact() every ``every`` days, each
    written segment split old/recent like ``write_segments``. Returns (rewrites per unit sealed, most
    rewrites of one day's events, most segments after a compaction)."""
    days = len(daily)
    span = 180 + days

    def split(units, newest):
        old = units.copy()
        old[max(newest - recent + 1 + 180, 0):] = 0
        keep = _segments.OLD_SHARE_MIN * units.sum() <= old.sum() < units.sum()
        return [old, units - old] if keep else [units]

    segs = split(np.r_[np.ones(180), np.zeros(days)], -1)
    rewrites, written, most = np.zeros(span), 0.0, 0
    for d in range(days):
        segs.append(np.zeros(span))
        segs[-1][180 + d] = daily[d]
        if (d + 1) % every:
            continue
        a, b = policy([s.sum() for s in segs])
        assert 0 <= a <= b <= len(segs)  # a contiguous window of the segments there are
        if b - a > 1:
            merged = sum(segs[a:b])
            written += merged.sum()
            rewrites += merged > 0
            segs = [*segs[:a], *split(merged, d), *segs[b:]]
        most = max(most, len(segs))
    return written / daily.sum(), int(rewrites.max()), most


@pytest.mark.parametrize("years,sigma,seed", [(3, 0.3, 0), (3, 0.6, 1), (5, 0.0, 0), (5, 0.3, 2)])
def test_rewrites_stay_logarithmic_when_daily_volumes_vary(years, sigma, seed):
    """Busy and quiet days break size tiers, so a long-lived store reaches the hard bound: merging there
    balanced windows keeps rewrites per event about log(N), where the cheapest neighbours would not."""
    daily = np.random.default_rng(seed).lognormal(0, sigma, 365 * years)
    amp, worst, most = simulate_years(plan, daily)
    cheap_amp, cheap_worst, _ = simulate_years(cheapest_bound, daily)
    assert amp <= 6.0 and worst <= 12  # log2 of the store's growth bounds what a day's events see
    assert cheap_amp > 1.8 * amp and cheap_worst > 5 * worst  # cheapest: 9.8 to 43 per event, 77 to 188 for some days'
    assert most <= MAX_SEGMENTS + 1  # after each compaction; +1: its output may split old/recent


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 10_000), min_size=2, max_size=40), st.integers(1, 20))
def test_the_hard_bound_merges_a_contiguous_window_that_restores_it(rows, bound):
    a, b = plan(rows, max_segments=bound)
    assert 0 <= a <= b <= len(rows)
    if len(rows) > bound:
        assert len(rows) - (b - a) + 1 <= bound  # one merged segment in their place: within the bound
        if max(rows[a:b]) > BALANCE * sum(rows[a:b]):  # not balanced: only when no window of that width is
            k = len(rows) - bound + 1
            assert all(max(rows[i:j]) > BALANCE * sum(rows[i:j])
                       for i in range(len(rows)) for j in range(i + k, len(rows) + 1))
            assert (a, b) == cheapest_window(rows, k)


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
