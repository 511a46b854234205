"""Both kernel twins (CPU njit, CUDA in the simulator) against one plain NumPy reference."""

import types

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

import kernels
from kernels._common import CUDA_THREADS
from kernels.reference import random_case as make_case
from kernels.reference import reference
from kernels.reference import run as run_twins


def run(twin, case, max_len, right, actions, window, pad8, pad4, jagged=False):
    fns = {"cpu": (kernels.slice_cpu, kernels.assemble_cpu), "cuda-sim": (kernels.slice_cuda, kernels.assemble_cuda),
           "jit": (_slice_jit, _assemble_jit)}[twin]
    # each twin's fused slice + assembly (padded) must give the pair's rows and sel, checked by run_twins
    fused = {"cpu": kernels.slice_assemble_cpu, "cuda-sim": kernels.slice_assemble_cuda,
             "jit": _slice_assemble_jit}[twin]
    return run_twins(*fns, case, max_len, right, actions, window, pad8, pad4, jagged=jagged, fused=fused)


def check(twin, case, max_len, right=False, actions=None, window=None, pad8=(0, -1), pad4=(5,), jagged=False):
    got = run(twin, case, max_len, right, actions, window, pad8, pad4, jagged)
    want = reference(case, max_len, right, actions, window, pad8, pad4)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


TWINS = ["cpu", "jit", "cuda-sim"]  # jit: the CPU twin's entry points for compiled callers, on one thread


@njit
def _one_thread_slice(src, runs, tail, flt, ex, max_len, sel):
    numba.set_num_threads(1)  # as the DALI operator runs them: one Numba thread per DALI thread
    kernels.slice_jit(src, runs, tail, flt, ex, max_len, sel)


@njit
def _one_thread_assemble(src, runs, tail, flt, ex, sel, max_len, right, pad, out):
    numba.set_num_threads(1)
    kernels.assemble_jit(src, runs, tail, flt, ex, sel, max_len, right, pad, out)


@njit
def _one_thread_slice_assemble(src, runs, tail, flt, ex, sel, max_len, right, pad, out):
    numba.set_num_threads(1)
    kernels.slice_assemble_jit(src, runs, tail, flt, ex, sel, max_len, right, pad, out)


def _on_one_thread(compiled):
    """A twin's entry point for compiled callers, called as the DALI operator calls it (one Numba thread),
    the caller's thread count restored after; nothing runs for no examples, as the other twins do."""
    def call(*args, stream=0):
        before = numba.get_num_threads()
        try:
            if args[4].r_lo.shape[0]:  # ex: every twin takes (src, runs, tail, flt, ex, ...)
                compiled(*args)
        finally:
            numba.set_num_threads(before)
    return call


_slice_jit = _on_one_thread(_one_thread_slice)
_assemble_jit = _on_one_thread(_one_thread_assemble)
_slice_assemble_jit = _on_one_thread(_one_thread_slice_assemble)
_PRODUCTION_THREADS = CUDA_THREADS  # as shipped (read at import); the conftest lowers it per test


FILTERS = st.sampled_from([(None, None), ((1, 3), None), (None, 300), ((0, 2), 500), ((7,), None)])


CASES = dict(seed=st.integers(0, 2**31), max_len=st.integers(1, 40), right=st.booleans(), filt=FILTERS,
             sparse=st.booleans(), jagged=st.booleans())


def _random_case(twin, seed, max_len, right, filt, sparse, jagged):
    case = make_case(seed, sparse=sparse)
    check(twin, case, max_len, right, actions=filt[0], window=filt[1], jagged=jagged)


@pytest.mark.parametrize("twin", TWINS)
@settings(max_examples=25, deadline=None)
@given(**CASES)
def test_random_cases_match_reference(twin, **case):
    _random_case(twin, **case)


@pytest.mark.slow
@pytest.mark.parametrize("twin", TWINS)
@settings(max_examples=300, deadline=None)
@given(**CASES)
def test_many_random_cases_match_reference(twin, **case):
    _random_case(twin, **case)


EDGE = {
    "max_len-1": dict(max_len=1),
    "huge-max_len": dict(max_len=500),
    "right": dict(max_len=12, right=True),
    "everything-filtered": dict(max_len=10, actions=(99,)),
    "window-drops-all": dict(max_len=10, window=-5000),
    "types-and-window-right": dict(max_len=6, actions=(0, 1), window=400, right=True),
    "jagged": dict(max_len=12, jagged=True),
    "jagged-filtered": dict(max_len=7, actions=(0, 2), window=500, jagged=True),
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


@pytest.fixture
def launches(monkeypatch):
    """Every simulated kernel launch's grid, and a zero-size grid refused the way real CUDA refuses it."""
    from numba.cuda.simulator.kernel import FakeCUDAKernel
    grids = []
    real = FakeCUDAKernel.__getitem__

    def getitem(self, config):
        blocks = int(np.prod(config[0]))
        if blocks == 0:
            raise RuntimeError("CUDA_ERROR_INVALID_VALUE: zero-size grid")
        grids.append(blocks)
        grids.streams.append(config[2] if len(config) > 2 else None)
        return real(self, config)
    grids = _Launches()
    monkeypatch.setattr(FakeCUDAKernel, "__getitem__", getitem)
    return grids


class _Launches(list):
    def __init__(self):
        super().__init__()
        self.streams = []


@pytest.mark.parametrize("n_ex", [0, 3])
def test_no_examples_launches_nothing(launches, n_ex):
    """B = 0 must not launch (CUDA rejects an empty grid); B > 0 launches one block per example."""
    check("cuda-sim", make_case(0, n_ex=n_ex), 3)
    assert launches == [] if n_ex == 0 else launches and set(launches) == {n_ex}


def test_kernels_launch_on_the_stream_given(launches):
    """Both CUDA twins launch on the caller's stream (the backend passes its consumer stream, ordered
    after the producer's copies by an event), never implicitly on the legacy default stream."""
    from numba import cuda
    stream = cuda.stream()
    case = make_case(3, n_ex=4)
    args = (case, 5, True, (0, 2), 300, (0, -1), (5,))
    got = run_twins(kernels.slice_cuda, kernels.assemble_cuda, *args, stream=stream,
                    fused=kernels.slice_assemble_cuda)
    assert len(launches) == 4 and launches.streams == [stream] * 4  # the pair, then the fused twin's two
    for g, w in zip(got, reference(*args)):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("fused", [kernels.slice_assemble_cpu, kernels.slice_assemble_cuda])
def test_fused_twins_refuse_jagged_output(fused):
    """Jagged rows start at offsets the slicing's counts give, which a fused call cannot know first."""
    z = np.zeros(0, np.int64)
    out = kernels.Output(np.zeros((1, 0), np.int64), np.zeros((0, 0), np.int32), np.zeros(0, np.int32), z, 0)
    with pytest.raises(ValueError, match="padded"):
        fused(None, None, None, None, None, np.zeros((0, 5), np.int64), 4, False, None, out)


def test_device_arguments_are_imported_without_a_host_sync(monkeypatch):
    """CuPy arrays (anything with a CUDA array interface) reach the kernel through
    ``as_cuda_array(sync=False)``: streams are ordered by events, never by a host wait per launch."""
    from kernels import _common

    class Exported:
        __cuda_array_interface__ = {"shape": (3,), "typestr": "<i8", "data": (0, False), "version": 3, "stream": 7}
    calls = []
    monkeypatch.setattr(_common, "cuda", types.SimpleNamespace(
        as_cuda_array=lambda a, sync=True: calls.append(sync) or ("imported", a)))
    x = Exported()
    runs = kernels.Runs(x, np.zeros(2, np.int64), x)
    got = _common.unsynced((runs, 5, x))
    assert calls == [False, False, False]
    assert isinstance(got[0], kernels.Runs) and got[0].start == ("imported", x) and got[1] == 5
    assert got[0].pos is runs.pos  # host arrays (the simulator's) pass untouched


@pytest.mark.parametrize("max_len, right, actions, window", [(1000, False, None, None), (400, True, (0, 1, 2), 900)],
                         ids=["unfiltered-left", "types-window-right"])
def test_production_block_size(monkeypatch, max_len, right, actions, window):
    """The block size the kernels launch with on a GPU (the autouse fixture shrinks it to 8): histories
    and a tail longer than one 256-thread tile, a versioned cut inside the history."""
    from kernels import _common
    monkeypatch.setattr(_common, "CUDA_THREADS", _PRODUCTION_THREADS)
    case = make_case(13, n_users=2, n_ex=3, max_hist=1200, max_tail=400)
    hist = case["start"][case["r_hi"]] - case["start"][case["r_lo"]]  # each example's stored events
    assert hist.min() > 2 * _PRODUCTION_THREADS
    assert (case["t_hi"] - case["t_lo"]).max() > _PRODUCTION_THREADS
    check("cuda-sim", case, max_len, right, actions, window)


@pytest.mark.parametrize("twin", TWINS)
def test_runs_split_anywhere_give_the_same_rows(twin):
    """A user's events cut into more runs, placed elsewhere, must not change any example."""
    case = make_case(11, n_users=3, n_ex=8, max_hist=60, max_tail=4)
    want = reference(case, 20, False, (0, 1), 600, (0, -1), (5,))
    # split every run in two and move the second halves to the end of the arena
    start, pos = case["start"], case["pos"]
    new_start, new_pos, new_seq0 = [0], [], []
    n_src = case["seq"].shape[0]
    extra = {k: [] for k in ("seq", "ts", "etype", "src8", "src4")}
    remap = np.zeros(len(pos) + 1, np.int64)
    for j in range(len(pos)):
        remap[j] = len(new_pos)
        n = start[j + 1] - start[j]
        h = n // 2
        for lo, cnt in ((0, h), (h, n - h)):
            if cnt == 0:
                continue
            if lo == 0:
                new_pos.append(pos[j])
            else:
                new_pos.append(n_src + sum(len(v) for v in extra["seq"]))
                for k in extra:
                    a = case[k]
                    extra[k].append(a[..., pos[j] + lo:pos[j] + lo + cnt])
            new_seq0.append(case["seq0"][j] + lo if case["seq0"][j] >= 0 else -1)
            new_start.append(new_start[-1] + cnt)
    remap[len(pos)] = len(new_pos)
    case2 = dict(case)
    for k in extra:
        case2[k] = np.concatenate([case[k], *extra[k]], axis=-1)
    case2.update(start=np.array(new_start, np.int64), pos=np.array(new_pos, np.int64),
                 seq0=np.array(new_seq0, np.int64), r_lo=remap[case["r_lo"]], r_hi=remap[case["r_hi"]])
    got = run(twin, case2, 20, False, (0, 1), 600, (0, -1), (5,))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_backward_scan_is_bounded():
    """Unfiltered slicing is O(1) per example: the result is independent of data older than needed."""
    case = make_case(1, max_hist=1000, max_tail=3)
    sel = np.zeros((len(case["r_lo"]), kernels.SEL_COLUMNS), np.int64)
    src = kernels.Source(case["src8"], case["src4"], case["seq"], case["ts"], case["etype"])
    tail = kernels.Source(case["tail8"], case["tail4"], np.zeros(0, np.int64), case["tail_ts"], case["tail_etype"])
    ex = kernels.Examples(case["r_lo"], case["r_hi"], case["imm_hw"], case["t_lo"], case["t_hi"],
                          np.zeros(len(sel), np.int64))
    runs = kernels.Runs(case["start"], case["pos"], case["seq0"])
    kernels.slice_cpu(src, runs, tail, kernels.make_filter(None, False), ex, 4, sel)
    n = sel[:, kernels.SEL_N_IMM] + sel[:, kernels.SEL_N_TAIL]
    assert (n <= 4).all()
    assert (sel[:, kernels.SEL_IMM_HI] - sel[:, kernels.SEL_IMM_LO] == sel[:, kernels.SEL_N_IMM]).all()


def test_each_cached_compiled_function_has_its_own_disk_cache_entry():
    """Numba's disk cache keys compiled code by the Python function, not by the build options: two
    dispatchers of one function (say a serial and a parallel build) would share an entry, and whichever
    compiled first would serve both: every filtered tenant's slicing could run the serial build, many times
    slower. Every cached dispatcher of the engine and the kernels must wrap a function of its own."""
    import importlib
    import pkgutil

    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    import engine
    import kernels as kernels_pkg
    owners = {}
    for pkg in (engine, kernels_pkg):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            mod = importlib.import_module(info.name)
            for obj in vars(mod).values():
                if isinstance(obj, CPUDispatcher) and not isinstance(obj._cache, NullCache):
                    owners.setdefault(obj.py_func, set()).add(id(obj))
    assert owners, "no cached dispatcher found: the check looks in the wrong place"
    shared = {f.__qualname__: len(d) for f, d in owners.items() if len(d) > 1}
    assert not shared, f"functions compiled by more than one cached dispatcher: {shared}"


def test_every_cached_function_is_stamped_with_all_project_sources(tmp_path):
    """A cached function's machine code holds what it inlines and calls from other modules (the fused
    kernel inlines slicing.py's per-example code, the DALI operator calls both kernels), so its cache must
    go stale when any of those files changes, not only its own (``kernels._cache``)."""
    import importlib
    import pkgutil

    from numba.core.caching import NullCache
    from numba.core.registry import CPUDispatcher

    import engine
    import kernels as kernels_pkg
    from kernels import _cache
    cached = []
    for pkg in (engine, kernels_pkg):
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            mod = importlib.import_module(info.name)
            cached += [o for o in vars(mod).values()
                       if isinstance(o, CPUDispatcher) and not isinstance(o._cache, NullCache)]
    assert len(cached) > 10
    for d in cached:
        loc = d._cache._impl.locator
        assert isinstance(loc, _cache.ProjectCacheLocator), (d.py_func.__qualname__, type(loc))
        assert loc.get_source_stamp() == _cache.project_stamp()
    files = {f for f, _, _ in _cache.project_stamp()}
    assert {"kernels/slicing.py", "kernels/_common.py", "engine/training/_plan.py",
            "dali_plugin/_assemble_op.py"} <= files
    # anything outside the project keeps Numba's own locators
    outside = tmp_path / "mod.py"
    outside.write_text("def f():\n    return 1\n")
    assert _cache.ProjectCacheLocator.from_function(lambda: 1, str(outside)) is None
