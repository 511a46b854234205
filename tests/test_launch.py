"""kernels._launch: the fast launch path lays arguments out exactly as numba-cuda's own launch does, its
type key never maps two Numba types to one compiled kernel, and it declines where it cannot run."""

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kernels
from kernels import _launch
from kernels.reference import random_case, reference
from kernels.reference import run as run_twins


class Dev:
    """A device array as far as a launch can tell: a CUDA array interface at a made-up address."""

    def __init__(self, shape, dtype, strides=None, ptr=0x7F00_0000_1000, readonly=False):
        self.shape, self.dtype, self.strides, self.ptr = tuple(shape), np.dtype(dtype), strides, ptr
        self.__cuda_array_interface__ = {"shape": self.shape, "typestr": self.dtype.str, "strides": strides,
                                         "data": (ptr, readonly), "version": 3}


def _args():
    """The slicing kernel's argument groups as the reconstructor passes them (CuPy-like arrays)."""
    d8, d4 = Dev((0,), "<i8"), Dev((0,), "<i4")
    src = kernels.Source(Dev((2, 50), "<i8"), Dev((1, 50), "<i4", ptr=0x7F00_0000_9000), d8, d8, d4)
    runs = kernels.Runs(Dev((5,), "<i8"), Dev((4,), "<i8"), Dev((4,), "<i8"))
    tail = kernels.Source(Dev((2, 0), "<i8"), Dev((1, 0), "<i4"), d8, d8, d4)
    flt = kernels.Filter(Dev((3,), "|b1"), 2, True, False)
    ex = kernels.Examples(*(Dev((6,), "<i8", ptr=0x7F00_0001_0000 + 64 * i) for i in range(6)))
    return (src, runs, tail, flt, ex, 17, Dev((6, 5), "<i8"))


def _numba_layout(args):
    """What numba-cuda's ``_Kernel._prepare_args`` appends for ``args``: its own code, run without a GPU by
    standing in for the one call that needs a device (turning an argument into a device array)."""
    from numba.cuda import dispatcher
    from numba.cuda.typing.typeof import Purpose, typeof

    class Layout:
        def __init__(self, a):
            face = a.__cuda_array_interface__
            self.strides_in_bytes = face["strides"]
            self.is_contiguous_c, self.is_contiguous_f = face["strides"] is None, False

    class DevAry:
        def __init__(self, a):
            self.size, self.dtype, self.ptr, self.shape = int(np.prod(a.shape)), a.dtype, a.ptr, a.shape
            self._layout = Layout(a)

    class Hint:
        def __init__(self, a):
            self.a = a

        def to_device(self, retr, stream=0):
            return DevAry(self.a)

    kernel = dispatcher._Kernel.__new__(dispatcher._Kernel)
    kernel.extensions = []
    types = [typeof(a, Purpose.argument) for a in args]
    out = []
    orig = dispatcher.wrap_arg
    dispatcher.wrap_arg = Hint
    try:
        for t, v in zip(types, args):
            dispatcher._Kernel._prepare_args(kernel, t, v, 0, [], out)
    finally:
        dispatcher.wrap_arg = orig
    return types, out


def _plain(xs):
    return [(type(x).__name__, x.value) if isinstance(x, ctypes._SimpleCData) else x for x in xs]


def _compare_with_numba() -> str:
    """Run in a process without the simulator (numba's real launch code; no GPU is touched)."""
    odd = (Dev((2, 3), "<i8", strides=(8, 16)), Dev((), "<i8"), Dev((4,), "<i4", strides=(8,)),
           Dev((2, 0), "<f8"), 7, True, 2.5)  # F-order, 0-d, strided, empty; the scalar kinds
    for args in (_args(), odd):
        types, want = _numba_layout(args)
        got = []
        _launch.marshal(types, args, got)
        if _plain(got) != _plain(want):
            return f"DIFFERENT\n{_plain(got)}\n{_plain(want)}"
    assert 0x7F00_0000_9000 in _plain(_numba_layout(_args())[1])  # the 4-byte lane's pointer is in there
    return "same"


def test_marshal_matches_numba_prepare_args():
    """The layout is numba-cuda's own ``_prepare_args`` output for the slicing kernel's arguments: a
    numba-cuda upgrade that changes its launch ABI fails here, on CPU, before any GPU run."""
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parent), str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", "import test_launch as t; print(t._compare_with_numba())"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "same", r.stdout


def test_marshal_lays_out_arrays_scalars_and_groups():
    from numba.cuda import types as nt
    a = Dev((2, 3), "<i4", ptr=4096)
    got = []
    _launch.marshal((nt.Array(nt.int32, 2, "C"), nt.Tuple((nt.int64, nt.boolean)), nt.float64),
                    (a, (7, True), 0.5), got)
    assert _plain(got) == [0, 0, 6, 4, 4096, 2, 3, 12, 4, ("c_long", 7), True, ("c_double", 0.5)]
    with pytest.raises(NotImplementedError):
        _launch.marshal((nt.complex64,), (1j,), [])


def test_type_key_separates_what_numba_types_differently():
    key = _launch.type_key
    same = key((Dev((4,), "<i8"), 3)) == key((Dev((9,), "<i8", ptr=8), 5))
    assert same  # the sizes, addresses and scalar values are not types
    assert key((Dev((4,), "<i8"),)) == key((Dev((4,), "<i8", strides=(8,)),))  # explicit C strides
    assert key((Dev((4,), "<i8"),)) != key((Dev((4,), "<i4"),))  # dtype
    assert key((Dev((4,), "<i8"),)) != key((Dev((4, 1), "<i8"),))  # rank
    assert key((Dev((4,), "<i8"),)) != key((Dev((4,), "<i8", readonly=True),))
    assert key((Dev((4,), "<i8"),)) != key((Dev((4,), "<i8", strides=(16,)),))  # a strided view: layout "A"
    assert key((1,)) != key((True,)) != key((1.0,))
    # a non-C layout keys on its exact shape and strides, so no two such arrays share a guessed layout
    assert key((Dev((2, 3), "<i8", strides=(8, 16)),)) != key((Dev((2, 3), "<i8", strides=(8, 32)),))


def test_simulator_kernels_decline_and_the_dispatcher_launches(monkeypatch):
    """The simulator's kernels have no compiled overloads: the fast path declines and the results are
    the dispatcher's (checked against the NumPy reference); so does UIH_CUDA_FAST_LAUNCH=0."""
    case = random_case(4, n_ex=5)
    args = (case, 6, True, (0, 1), 400, (0, -1), (5,))
    for env in ("1", "0"):
        monkeypatch.setenv("UIH_CUDA_FAST_LAUNCH", env)
        from kernels import slicing
        slicing._kernel.fast.clear()
        slicing._kernel._compiled.clear()
        got = run_twins(kernels.slice_cuda, kernels.assemble_cuda, *args)
        for g, w in zip(got, reference(*args)):
            np.testing.assert_array_equal(g, w)
        fast = next(iter(slicing._kernel.fast.values()))
        assert fast.launches == 0 and not fast(1, 8, 0, (np.zeros(1),))


class FakeDispatcher:
    """A compiled dispatcher as FastLaunch sees it: overloads keyed by argument types."""

    def __init__(self, compiled):
        from numba.cuda.typing.typeof import Purpose, typeof
        self.typeof = lambda a: typeof(a, Purpose.argument)
        self.overloads = {}
        self.compiled = compiled

    def typeof_pyval(self, a):
        return self.typeof(a)


def _overload(types, debug=False):
    lib = type("L", (), {"get_cufunc": lambda self: type("F", (), {"kernel": "cufunc"})()})()
    return type("O", (), {"argument_types": types, "cooperative": False, "debug": debug, "_codelibrary": lib})()


def _fast(fake, launched, device=lambda: 0):
    return _launch.FastLaunch(fake, device=device, api=(
        lambda stream, config, kernel, *a: launched.append((stream, config, kernel, a)),
        lambda **kw: kw, lambda s: ("stream", s), "is_cooperative"))


def test_fast_launch_learns_after_the_dispatcher_then_reuses(monkeypatch):
    from numba.cuda import types as nt
    launched = []
    fake = FakeDispatcher(None)
    fl = _fast(fake, launched)
    monkeypatch.setattr(_launch._common, "unsynced", lambda a: a)
    args = (Dev((3,), "<i8", ptr=64), 5)
    assert not fl(2, 32, 0, args)  # unseen: the dispatcher launches (and compiles) first
    types = (nt.Array(nt.int64, 1, "C"), nt.int64)
    fake.overloads[types] = _overload(types)
    assert not fl(2, 32, 0, args)  # still unseen: only ``learn``, after a dispatcher launch, decides
    fl.learn(args)
    stream = type("S", (), {"handle": 7})()
    assert fl(2, 32, stream, args) and fl(3, 32, stream, (Dev((9,), "<i8", ptr=128), 6))
    assert [(x[0], x[1]["grid"], x[2]) for x in launched] == [(("stream", stream), (2, 1, 1), "cufunc"),
                                                               (("stream", stream), (3, 1, 1), "cufunc")]
    assert _plain(launched[1][3]) == [0, 0, 9, 8, 128, 9, 8, ("c_long", 6)]
    assert fl.launches == 2


def test_fast_launch_declines_what_it_cannot_launch(monkeypatch):
    """Types compiled under another key, host arrays where an array goes (the dispatcher copies
    those), debug builds (numba checks their error flag) and a kernel of another device."""
    from numba.cuda import types as nt
    launched, device = [], [0]
    fake = FakeDispatcher(None)
    fl = _fast(fake, launched, device=lambda: device[0])
    monkeypatch.setattr(_launch._common, "unsynced", lambda a: a)
    other = (Dev((3,), "<i4"), 5)  # nothing compiled for these types: declined for good
    fl.learn(other)
    assert not fl(1, 32, 0, other) and fl._known[_launch.type_key(other)] is False
    host = (np.zeros(3, np.int64), 5)
    fake.overloads[(nt.Array(nt.int64, 1, "C"), nt.int64)] = _overload((nt.Array(nt.int64, 1, "C"), nt.int64))
    fl.learn(host)
    assert not fl(1, 32, 0, host) and fl._known[_launch.type_key(host)] is False
    dbg = (Dev((3,), "<f8"), 5)
    fake.overloads[(nt.Array(nt.float64, 1, "C"), nt.int64)] = _overload((nt.Array(nt.float64, 1, "C"), nt.int64),
                                                                          debug=True)
    fl.learn(dbg)
    assert not fl(1, 32, 0, dbg)
    ok = (Dev((3,), "<i8"), 5)
    fl.learn(ok)
    assert fl(1, 32, 0, ok)
    device[0] = 1  # another current device: its cufunc is not known yet, so the dispatcher loads it
    assert not fl(1, 32, 0, ok)
    fl.learn(ok)
    assert fl(1, 32, 0, ok) and fl.launches == 2


def test_python_int_keys_follow_numbas_typing():
    from numba.cuda.typing.typeof import Purpose, typeof
    values = [0, -1, 5, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, True, False, np.int32(3), np.int64(3), 2.5]
    for a in values:
        for b in values:
            if _launch.type_key((a,)) == _launch.type_key((b,)):
                assert typeof(a, Purpose.argument) == typeof(b, Purpose.argument), (a, b)
    assert _launch.type_key((1 << 64,)) != _launch.type_key((1,))


def test_missing_internals_warn_once_naming_the_numba_cuda_version(monkeypatch):
    """Another numba-cuda without the internals the fast path uses: the dispatcher launches, and the user
    is told once per process, with the installed version, instead of finding a 10x slower launch."""
    import warnings
    from importlib.metadata import version

    monkeypatch.setitem(sys.modules, "numba.cuda._compat", None)  # importing it raises ImportError
    monkeypatch.setenv("UIH_CUDA_FAST_LAUNCH", "1")
    _launch.warn_slow_launch.cache_clear()
    with warnings.catch_warnings(record=True) as seen:  # the simulator declines silently
        warnings.simplefilter("always")
        _launch.FastLaunch(FakeDispatcher(compiled=None))
    assert not [w for w in seen if issubclass(w.category, _launch.SlowLaunchWarning)]
    monkeypatch.setattr(_launch, "_simulator", lambda: False)  # a real GPU build of another numba-cuda
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        first = _launch.FastLaunch(FakeDispatcher(compiled=None))
        second = _launch.FastLaunch(FakeDispatcher(compiled=None))
    assert first._api is None and second._api is None and not first(1, 8, 0, (np.zeros(1),))
    slow = [w for w in seen if issubclass(w.category, _launch.SlowLaunchWarning)]
    assert len(slow) == 1, [str(w.message) for w in seen]
    assert f"numba-cuda {version('numba-cuda')}" in str(slow[0].message)
    _launch.warn_slow_launch.cache_clear()
    monkeypatch.setenv("UIH_CUDA_FAST_LAUNCH", "0")  # the user's choice: no warning
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _launch.FastLaunch(FakeDispatcher(compiled=None))
    assert not [w for w in seen if issubclass(w.category, _launch.SlowLaunchWarning)]
