"""The CUDA kernels on a real GPU against their CPU twins and the NumPy reference, on random cases.

Marked ``gpu``: skipped unless Numba sees a real device (conftest's ``no_real_gpu``); run there with
``NUMBA_ENABLE_CUDASIM=0 python -m pytest -m gpu``. The simulator runs these kernels' Python bodies
(``test_kernels``); only a device shows what its compiler, its memory model and the fast launch path do.
Block sizes: the production one and 8 threads, so small cases still span many tiles.
"""

import numpy as np
import pytest

import kernels
from kernels import _common
from kernels.reference import random_case, reference, run

pytestmark = pytest.mark.gpu

PRODUCTION_THREADS = _common.CUDA_THREADS  # read at import; the conftest lowers it per test
THREADS = [PRODUCTION_THREADS, 8]
FILTERS = [(None, None), ((1, 3), None), (None, 300), ((0, 2), 500), ((7,), None)]
PADS = ((0, -1), (5,))


@pytest.fixture
def stream():
    from numba import cuda
    return cuda.stream()


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _agree(cp, case, max_len, right, actions, window, jagged, stream):
    """CUDA == CPU == reference, every output slot; each twin's fused call checked against its pair by ``run``."""
    got = run(kernels.slice_cuda, kernels.assemble_cuda, case, max_len, right, actions, window, *PADS, xp=cp,
              jagged=jagged, stream=stream, fused=kernels.slice_assemble_cuda)
    stream.synchronize()
    cpu = run(kernels.slice_cpu, kernels.assemble_cpu, case, max_len, right, actions, window, *PADS, jagged=jagged,
              fused=kernels.slice_assemble_cpu)
    want = reference(case, max_len, right, actions, window, *PADS)
    for g, c, w, name in zip(got, cpu, want, ("8-byte columns", "4-byte columns", "lengths")):
        np.testing.assert_array_equal(_host(g), c, err_msg=f"CUDA != CPU twin: {name}")
        np.testing.assert_array_equal(c, w, err_msg=f"CPU twin != reference: {name}")


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("block", range(4))
def test_random_cases(cp, stream, monkeypatch, threads, block):
    """Fifty random cases per block of seeds: sparse and dense seqs, every filter shape, both alignments,
    padded and jagged rows (the second and later launches of a kernel take the fast launch path)."""
    monkeypatch.setattr(_common, "CUDA_THREADS", threads)
    rng = np.random.default_rng(block)
    for seed in range(50 * block, 50 * block + 50):
        case = random_case(seed, n_users=int(rng.integers(1, 12)), n_ex=int(rng.integers(1, 40)),
                           max_hist=int(rng.integers(0, 600)), max_tail=int(rng.integers(0, 40)),
                           sparse=bool(seed % 2))
        actions, window = FILTERS[int(rng.integers(len(FILTERS)))]
        _agree(cp, case, int(rng.integers(1, 300)), bool(rng.integers(2)), actions, window,
               bool(rng.integers(2)), stream)


EDGE = {
    "no examples": (dict(seed=0, n_ex=0), 3, False, None, None),
    "empty history and tail": (dict(seed=5, n_users=2, max_hist=0, max_tail=0), 4, True, None, None),
    "max_len 1": (dict(seed=1), 1, False, None, None),
    "max_len past history": (dict(seed=2, max_hist=50), 500, True, None, None),
    "everything filtered": (dict(seed=3), 10, False, (99,), None),
    "window drops all": (dict(seed=4), 10, True, None, -5000),
    "longer than a tile": (dict(seed=13, n_users=2, n_ex=3, max_hist=1200, max_tail=400), 1000, False, None, None),
    "long, filtered, right": (dict(seed=13, n_users=2, n_ex=3, max_hist=1200, max_tail=400), 400, True, (0, 1, 2),
                              900),
}


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("jagged", [False, True])
@pytest.mark.parametrize("edge", EDGE.values(), ids=EDGE.keys())
def test_edge_cases(cp, stream, monkeypatch, threads, jagged, edge):
    monkeypatch.setattr(_common, "CUDA_THREADS", threads)
    shape, max_len, right, actions, window = edge
    _agree(cp, random_case(**shape), max_len, right, actions, window, jagged, stream)


def test_imm_hw_zero_hides_every_stored_event(cp, stream):
    case = random_case(6, max_tail=0)
    case["imm_hw"][:] = 0
    _agree(cp, case, 4, False, None, None, False, stream)
