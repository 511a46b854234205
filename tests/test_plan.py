"""The compiled per-chunk planners against plain references: a chunk's users and window starts
(``_plan.plan_chunk``), a segment part's rows per user (``_segment_index.select_runs``) and its runs
placed in the arena."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.serving import _segment_index
from engine.training import _plan


def _window_start(rts, window_us):
    """The window start by Python integers: ``request_ts - window_us``, floored at the smallest int64."""
    lo = -(1 << 63)
    return np.array([max(int(r) - window_us, lo) for r in rts], np.int64)


@st.composite
def chunks(draw):
    n = draw(st.integers(0, 40))
    uid = np.array(draw(st.lists(st.integers(0, 12), min_size=n, max_size=n)), np.int64)
    imm_hw = np.array(draw(st.lists(st.integers(-3, 60), min_size=n, max_size=n)), np.int64)  # < 0: refused
    big = st.integers(-(1 << 63), (1 << 63) - 1)
    rts = np.array(draw(st.lists(big, min_size=n, max_size=n)), np.int64)
    window = draw(st.one_of(st.none(), st.integers(0, (1 << 63) - 1)))
    sealed_users = np.array(sorted(draw(st.sets(st.integers(0, 12)))), np.int64)
    sealed_end = np.array(draw(st.lists(st.integers(0, 60), min_size=len(sealed_users),
                                        max_size=len(sealed_users))), np.int64)
    return uid, imm_hw, rts, window, draw(st.integers(1, 80)), sealed_users, sealed_end


@settings(max_examples=300, deadline=None)
@given(chunks())
def test_plan_chunk_matches_numpy(chunk):
    uid, imm_hw, rts, window, max_len, su, se = chunk
    version = np.arange(len(uid), dtype=np.int64)[::-1] * 3
    got, ts_min = _plan.plan_chunk(uid, imm_hw, rts, window, max_len, su, se, version=version)
    assert got.newest == (int(version.max()) if len(uid) else -1)
    assert got.imm_min == min(0, int(imm_hw.min()) if len(uid) else 0)
    assert _plan.plan_chunk(uid, imm_hw, rts, window, max_len, su, se)[0].newest == -1
    want_ts = np.full(len(uid), np.iinfo(np.int64).min, np.int64) if window is None else _window_start(rts, window)
    assert np.array_equal(ts_min, want_ts)
    users, inv = np.unique(uid, return_inverse=True)
    assert np.array_equal(got.users, users) and np.array_equal(got.inv, inv.reshape(-1))
    hi = np.zeros(len(users), np.int64)
    np.maximum.at(hi, inv, imm_hw)
    lo = np.full(len(users), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(lo, inv, imm_hw - max_len)
    ts = np.full(len(users), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(ts, inv, want_ts)
    assert np.array_equal(got.seq_hi, hi) and np.array_equal(got.seq_lo, lo) and np.array_equal(got.ts_lo, ts)
    sealed = np.array([dict(zip(su.tolist(), se.tolist())).get(u, 0) for u in uid.tolist()], np.int64)
    bad = np.flatnonzero(imm_hw > sealed)
    assert got.bad == (int(bad[0]) if len(bad) else -1)
    if len(bad):
        assert got.bad_sealed == sealed[bad[0]]


@st.composite
def parts(draw):
    """A main part: events sorted by (user, seq), dense seqs per user from a random start, ts with late
    arrivals (not monotone in seq)."""
    counts = draw(st.lists(st.one_of(st.integers(1, 40), st.integers(500, 1500)), min_size=1, max_size=5))
    users = np.array(sorted(draw(st.sets(st.integers(0, 20), min_size=len(counts), max_size=len(counts)))))
    uid = np.repeat(users, counts)
    seq = np.concatenate([np.arange(c) + draw(st.integers(0, 50)) for c in counts]).astype(np.int64)
    rng = np.random.default_rng(draw(st.integers(0, 1 << 30)))
    ts = (seq * 10 + rng.integers(-3000, 10, len(seq)) * (rng.random(len(seq)) < 0.05)).astype(np.int64)
    return uid, seq, ts


@settings(max_examples=100, deadline=None)
@given(parts(), st.data())
def test_select_runs_keeps_every_needed_row(part, data):
    uid, seq, ts = part
    idx = {c: np.asarray(v) for c, v in _segment_index.build(uid, seq, ts).to_pydict().items() if c != "ts_ckpt"}
    ck = _segment_index.build(uid, seq, ts).column("ts_ckpt").combine_chunks()
    idx["ts_ckpt"], idx["ts_ckpt_offsets"] = np.asarray(ck.values), np.asarray(ck.offsets).astype(np.int64)
    q = np.array(sorted(data.draw(st.sets(st.integers(0, 22), min_size=1, max_size=8))), np.int64)
    lo = np.array(data.draw(st.lists(st.integers(-10, 700), min_size=len(q), max_size=len(q))), np.int64)
    hi = lo + np.array(data.draw(st.lists(st.integers(0, 1600), min_size=len(q), max_size=len(q))), np.int64)
    window = data.draw(st.booleans())
    ts_min = np.array(data.draw(st.lists(st.integers(-100, 12000), min_size=len(q), max_size=len(q))),
                      np.int64) if window else None
    ranks, r0, cnt, q0 = _segment_index.select_runs(idx, q, lo, hi, ts_min, True)
    got = {int(r): (int(a), int(c), int(s)) for r, a, c, s in zip(ranks, r0, cnt, q0)}
    for k, u in enumerate(q.tolist()):
        rows = np.flatnonzero(uid == u)
        need = rows[(seq[rows] >= lo[k]) & (seq[rows] < hi[k])]
        if window:
            need = need[ts[need] >= ts_min[k]]
        if not len(need):
            continue
        assert k in got, f"user {u} has rows to read"
        a, c, s = got[k]
        assert c > 0 and a <= need[0] and need[-1] < a + c and s == seq[a]  # every needed row, seqs aligned
        assert rows[0] <= a and a + c <= rows[-1] + 1  # never another user's rows
        span = rows[(seq[rows] >= lo[k]) & (seq[rows] < hi[k])]
        if not window:
            assert (a, c) == (int(span[0]), len(span))  # no window: exactly the seq range
    assert all(c > 0 for _, c, _ in got.values())  # only users with rows to read


def test_select_runs_skips_whole_old_strides_only():
    """A window that starts inside the second checkpoint stride skips exactly the first stride."""
    uid, seq = np.full(1500, 3), np.arange(1500, dtype=np.int64)
    ts = seq * 10
    ts[700] = 0  # a late arrival inside the kept stride stays
    t = _segment_index.build(uid, seq, ts)
    ck = t.column("ts_ckpt").combine_chunks()
    idx = {c: t.column(c).to_numpy() for c in _segment_index.COLUMNS}
    idx["ts_ckpt"], idx["ts_ckpt_offsets"] = np.asarray(ck.values), np.asarray(ck.offsets).astype(np.int64)
    one = np.array([3])
    got = _segment_index.select_runs(idx, one, np.array([0]), np.array([1500]), np.array([6000]), True)
    assert [int(v[0]) for v in got] == [0, _segment_index.TS_STRIDE, 1500 - _segment_index.TS_STRIDE,
                                        _segment_index.TS_STRIDE]
    got = _segment_index.select_runs(idx, one, np.array([0]), np.array([1500]), np.array([20000]), True)
    assert len(got[0]) == 0  # nothing new enough: the user is not read at all


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_placing_runs_matches_numpy(data):
    """``place_pieces`` and ``run_offsets`` against the NumPy steps they replace."""
    from engine.training import _reads
    n_users = data.draw(st.integers(1, 6))
    bstart = np.cumsum([0] + data.draw(st.lists(st.integers(1, 50), min_size=1, max_size=8))).astype(np.int64)
    k = data.draw(st.integers(0, n_users))
    ranks = np.array(sorted(data.draw(st.sets(st.integers(0, n_users - 1), min_size=k, max_size=k))), np.int64)
    r0 = np.array([data.draw(st.integers(0, int(bstart[-1]) - 1)) for _ in ranks], np.int64)
    cnt = np.array([data.draw(st.integers(0, int(bstart[-1] - a))) for a in r0], np.int64)
    q0 = np.array(data.draw(st.lists(st.integers(0, 1000), min_size=k, max_size=k)), np.int64)
    run, blk, lo, num, need, which = _reads.cut_at_blocks(bstart, r0, cnt)
    slots = np.array(data.draw(st.permutations(range(len(need)))), np.int64)
    dense = data.draw(st.booleans())
    rank, pos, seq0 = _reads.place_pieces(slots, which, blk, lo, run, bstart, ranks, r0, q0, 16, dense)
    assert np.array_equal(rank, ranks[run])
    assert np.array_equal(pos, slots[which] * 16 + (lo - bstart[blk]))
    assert np.array_equal(seq0, q0[run] + (lo - r0[run]) if dense else np.full(len(run), -1))
    start, user_runs = _reads.run_offsets(num, rank, n_users)
    assert np.array_equal(start, np.r_[0, np.cumsum(num)])
    assert np.array_equal(user_runs, np.r_[0, np.cumsum(np.bincount(rank, minlength=n_users))])
    # both at once, as one part's pieces are placed
    got = _reads.place_runs(slots, which, blk, lo, run, bstart, ranks, r0, q0, 16, dense, num, n_users)
    for g, w in zip(got, (start, pos, seq0, user_runs)):
        assert np.array_equal(g, w)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=8), st.data(), st.sampled_from([np.int32, np.int64]))
def test_examples_match_numpy(counts, data, offsets_type):
    user_runs = np.r_[0, np.cumsum(counts)].astype(np.int64)
    inv = np.array(data.draw(st.lists(st.integers(0, max(len(counts) - 1, 0)), max_size=20 if counts else 0)),
                   np.int64)
    n = len(inv)
    imm_hw = np.array(data.draw(st.lists(st.integers(0, 1 << 40), min_size=n, max_size=n)), np.int64)
    t_off = np.cumsum([0] + data.draw(st.lists(st.integers(0, 9), min_size=n, max_size=n))).astype(offsets_type)
    ts_min = np.array(data.draw(st.lists(st.integers(-(1 << 63), (1 << 63) - 1), min_size=n, max_size=n)), np.int64)
    got = _plan.examples(user_runs, inv, imm_hw, t_off, ts_min)
    want = (user_runs[:-1][inv], user_runs[1:][inv], imm_hw, t_off[:-1], t_off[1:], ts_min)
    for g, w in zip(got, want):
        assert g.dtype == np.int64 and g.flags.c_contiguous and np.array_equal(g, w)
