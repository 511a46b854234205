"""Both kernel twins (CPU njit, CUDA in the simulator) against one plain NumPy reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels


def make_case(seed, n_users=4, n_ex=6, max_hist=30, max_tail=5, n_types=4, sparse=False):
    """Random source: per-user seq-sorted rows (maybe starting above 0 or skipping seqs) and tails."""
    rng = np.random.default_rng(seed)
    hist = rng.integers(0, max_hist + 1, n_users)
    if rng.random() < 0.3:
        hist[rng.integers(0, n_users)] = 0  # an empty history
    seq_parts = []
    for h in hist:
        start = int(rng.integers(0, 5))
        s = np.arange(start, start + (3 * h if sparse else h))
        seq_parts.append(np.sort(rng.choice(s, h, replace=False)) if sparse else s)
    u_off = np.r_[0, np.cumsum(hist)]
    n_imm = int(u_off[-1])
    user = rng.integers(0, n_users, n_ex)
    tail_len = rng.integers(0, max_tail + 1, n_ex)
    tail_len[rng.random(n_ex) < 0.3] = 0  # empty tails
    t_off = n_imm + np.r_[0, np.cumsum(tail_len)]
    n_src = int(t_off[-1])
    seq = np.concatenate(seq_parts + [np.zeros(n_src - n_imm, np.int64)]).astype(np.int64)
    top = np.array([p[-1] + 1 if len(p) else 0 for p in seq_parts])
    imm_hw = np.array([rng.integers(0, top[u] + 2) for u in user], np.int64)
    imm_hw[rng.random(n_ex) < 0.2] = 0
    return {
        "seq": seq, "ts": rng.integers(0, 1000, n_src).astype(np.int64),  # non-monotonic: late arrivals
        "etype": rng.integers(0, n_types, n_src).astype(np.int32),
        "u_lo": u_off[user].astype(np.int64), "u_hi": u_off[user + 1].astype(np.int64), "imm_hw": imm_hw,
        "t_lo": t_off[:-1].astype(np.int64), "t_hi": t_off[1:].astype(np.int64),
        "request_ts": rng.integers(0, 1200, n_ex).astype(np.int64),
        "src8": rng.integers(-2**62, 2**62, (2, n_src)).astype(np.int64),
        "src4": rng.integers(-2**30, 2**30, (1, n_src)).astype(np.int32),
    }


def reference(case, max_len, right, actions, window, pad8, pad4):
    """SPEC §3 by the book, one example at a time."""
    B = len(case["u_lo"])
    out8 = np.empty((case["src8"].shape[0], B, max_len), np.int64)
    out4 = np.empty((case["src4"].shape[0], B, max_len), np.int32)
    out8[:] = np.asarray(pad8)[:, None, None]
    out4[:] = np.asarray(pad4)[:, None, None]
    lengths = np.zeros(B, np.int32)
    for b in range(B):
        rows = [i for i in range(case["u_lo"][b], case["u_hi"][b]) if case["seq"][i] < case["imm_hw"][b]]
        rows += list(range(case["t_lo"][b], case["t_hi"][b]))
        kept = [i for i in rows if (actions is None or case["etype"][i] in actions) and
                (window is None or case["ts"][i] >= case["request_ts"][b] - window)]
        kept = kept[len(kept) - min(len(kept), max_len):]
        n = len(kept)
        off = max_len - n if right else 0
        out8[:, b, off:off + n] = case["src8"][:, kept]
        out4[:, b, off:off + n] = case["src4"][:, kept]
        lengths[b] = n
    return out8, out4, lengths


def run(twin, case, max_len, right, actions, window, pad8, pad4):
    slice_k, assemble_k = (kernels.slice_cpu, kernels.assemble_cpu) if twin == "cpu" else \
        (kernels.slice_cuda, kernels.assemble_cuda)
    B = len(case["u_lo"])
    type_ok, type_base = kernels.type_table(actions)
    ts_min = case["request_ts"] - window if window is not None else np.full(B, kernels.NO_WINDOW)
    sel = np.zeros((B, 5), np.int64)
    slice_k(case["seq"], case["ts"], case["etype"], type_ok, type_base, case["u_lo"], case["u_hi"],
            case["imm_hw"], case["t_lo"], case["t_hi"], ts_min, max_len, actions is not None,
            window is not None, sel)
    out8 = np.full((case["src8"].shape[0], B, max_len), 77, np.int64)  # garbage: every slot must be written
    out4 = np.full((case["src4"].shape[0], B, max_len), 77, np.int32)
    lengths = np.full(B, -1, np.int32)
    assemble_k(case["src8"], case["src4"], case["ts"], case["etype"], type_ok, type_base, ts_min, sel,
               case["t_hi"], max_len, right, actions is not None, window is not None,
               np.asarray(pad8, np.int64), np.asarray(pad4, np.int32), out8, out4, lengths)
    return out8, out4, lengths


def check(twin, case, max_len, right=False, actions=None, window=None, pad8=(0, -1), pad4=(5,)):
    got = run(twin, case, max_len, right, actions, window, pad8, pad4)
    want = reference(case, max_len, right, actions, window, pad8, pad4)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


TWINS = ["cpu", "cuda-sim"]


FILTERS = st.sampled_from([(None, None), ((1, 3), None), (None, 300), ((0, 2), 500), ((7,), None)])


@pytest.mark.parametrize("twin", TWINS)
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), max_len=st.integers(1, 40), right=st.booleans(), filt=FILTERS,
       sparse=st.booleans())
def test_random_cases_match_reference(twin, seed, max_len, right, filt, sparse):
    case = make_case(seed, sparse=sparse)
    check(twin, case, max_len, right, actions=filt[0], window=filt[1])


EDGE = {
    "max_len-1": dict(max_len=1),
    "huge-max_len": dict(max_len=500),
    "right": dict(max_len=12, right=True),
    "everything-filtered": dict(max_len=10, actions=(99,)),
    "window-drops-all": dict(max_len=10, window=-5000),
    "types-and-window-right": dict(max_len=6, actions=(0, 1), window=400, right=True),
}


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("edge", EDGE.values(), ids=EDGE.keys())
def test_edge_cases(twin, edge):
    for seed in range(3):
        check(twin, make_case(seed), **edge)


@pytest.mark.parametrize("twin", TWINS)
def test_empty_history_empty_tail_imm_hw_zero(twin):
    case = make_case(5, n_users=2, max_hist=0, max_tail=0)
    check(twin, case, 4, right=True)
    case = make_case(6, max_tail=0)
    case["imm_hw"][:] = 0
    check(twin, case, 4)


@pytest.mark.parametrize("twin", TWINS)
def test_no_examples_launches_nothing(twin):
    case = make_case(0, n_ex=0)
    out = run(twin, case, 3, False, None, None, (0, 0), (0,))
    assert out[0].shape == (2, 0, 3) and out[2].shape == (0,)


def test_backward_scan_is_bounded():
    """Unfiltered slicing is O(1) per example: the result is independent of data older than needed."""
    case = make_case(1, max_hist=1000, max_tail=3)
    sel = np.zeros((len(case["u_lo"]), 5), np.int64)
    args = (case["seq"], case["ts"], case["etype"], *kernels.type_table(None), case["u_lo"], case["u_hi"],
            case["imm_hw"], case["t_lo"], case["t_hi"], np.zeros(len(sel), np.int64), 4, False, False, sel)
    kernels.slice_cpu(*args)
    n = sel[:, 2] + sel[:, 4]
    assert (n <= 4).all() and (sel[:, 1] - sel[:, 0] == sel[:, 2]).all()
