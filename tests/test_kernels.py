"""Both kernel twins (CPU njit, CUDA in the simulator) against one plain NumPy reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels.reference import random_case as make_case
from kernels.reference import reference
from kernels.reference import run as run_twins


def run(twin, case, max_len, right, actions, window, pad8, pad4):
    fns = (kernels.slice_cpu, kernels.assemble_cpu) if twin == "cpu" else (kernels.slice_cuda, kernels.assemble_cuda)
    return run_twins(*fns, case, max_len, right, actions, window, pad8, pad4)


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
    ev = kernels.Events(case["seq"], case["ts"], case["etype"])
    ex = kernels.Examples(case["u_lo"], case["u_hi"], case["imm_hw"], case["t_lo"], case["t_hi"],
                          np.zeros(len(sel), np.int64))
    kernels.slice_cpu(ev, kernels.make_filter(None, False), ex, 4, sel)
    n = sel[:, 2] + sel[:, 4]
    assert (n <= 4).all() and (sel[:, 1] - sel[:, 0] == sel[:, 2]).all()
