"""What both kernel families share: the argument groups, the event predicate, the run lookups (which
run holds a virtual position, where the versioned cut falls) and the CUDA compilation switch.

Arguments travel in a few named groups instead of a wall of positionals; Numba passes NamedTuples of
arrays and scalars to ``njit`` functions and CUDA kernels alike, so both twins take the same groups.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

# Threads per CUDA block. A compile-time constant because shared-memory scans are sized by it; the
# tests lower it (and call ``reset_cuda``) so the simulator can exercise multi-tile paths on tiny inputs.
CUDA_THREADS = 256

NO_WINDOW = np.iinfo(np.int64).min

# Columns of ``sel`` (int64 ``[B, SEL_COLUMNS]``), which the slicing kernel writes and the assembly kernel
# reads, one row per example: its kept immutable events pass the filter in virtual positions
# ``[SEL_IMM_LO, SEL_IMM_HI)`` of the runs (``SEL_N_IMM`` of them), its kept logged events in
# ``[SEL_TAIL_LO, ex.t_hi)`` of the tail (``SEL_N_TAIL`` of them). Numba freezes these as constants.
SEL_IMM_LO = 0
SEL_IMM_HI = 1
SEL_N_IMM = 2
SEL_TAIL_LO = 3
SEL_N_TAIL = 4
SEL_COLUMNS = 5


class Source(NamedTuple):
    """Where events are read from: columns as raw words (``[C8, n]`` 8-byte and ``[C4, n]`` 4-byte lanes,
    the output columns first) and the lanes slicing and filtering read, each 1-D over the same ``n``
    positions (views of lanes, or empty where nothing reads them)."""

    w8: np.ndarray
    w4: np.ndarray
    seq: np.ndarray  # int64; read only by runs with sparse seqs (``Runs.seq0 < 0``)
    ts: np.ndarray  # int64; read only when the filter has a window
    etype: np.ndarray  # integer; read only when the filter has a type set


class Runs(NamedTuple):
    """The immutable events as runs of consecutive positions of a ``Source``, in a virtual order:
    user-major, ``seq`` order inside a user. Run ``j`` holds virtual positions ``[start[j], start[j+1])``
    at source positions ``pos[j] + k``, with seqs ``seq0[j] + k`` (dense) or, where ``seq0[j] < 0``,
    ``src.seq[pos[j] + k]`` (sparse, increasing). Runs are never empty."""

    start: np.ndarray  # int64 [R + 1]
    pos: np.ndarray  # int64 [R]
    seq0: np.ndarray  # int64 [R]


class Filter(NamedTuple):
    """A projection's event predicate: ``type_ok[code - type_base]`` says a type is kept."""

    type_ok: np.ndarray  # bool
    type_base: int
    use_types: bool
    use_window: bool


class Examples(NamedTuple):
    """Per example ``b`` (all int64 ``[B]``): its user's runs ``[r_lo, r_hi)``, the versioned cut
    ``seq < imm_hw``, its tail ``[t_lo, t_hi)`` of the tail source and the window start ``ts_min``."""

    r_lo: np.ndarray
    r_hi: np.ndarray
    imm_hw: np.ndarray
    t_lo: np.ndarray
    t_hi: np.ndarray
    ts_min: np.ndarray


class Words(NamedTuple):
    """One word per column: 8-byte ones (int64, float64) and 4-byte ones (int32, float32)."""

    w8: np.ndarray
    w4: np.ndarray


class Output(NamedTuple):
    """The assembly's output: rows of ``[C8, N]`` and ``[C4, N]`` words plus ``lengths [B]``. Row ``b``
    starts at ``starts[b]`` and is ``width`` words wide (padded), or exactly its length when
    ``width == 0`` (jagged: ``starts`` are then the offsets of the values)."""

    w8: np.ndarray
    w4: np.ndarray
    lengths: np.ndarray
    starts: np.ndarray  # int64 [B]
    width: int


@njit(inline="always")
def keep_event(i, src, flt, ts_min):
    """True when event ``i`` of ``src`` passes the projection's event-type set and time window."""
    if flt.use_types:
        k = src.etype[i] - flt.type_base
        if k < 0 or k >= flt.type_ok.shape[0] or not flt.type_ok[k]:
            return False
    if flt.use_window and src.ts[i] < ts_min:
        return False
    return True


@njit(inline="always")
def run_of(runs, r_lo, r_hi, v):
    """The run in ``[r_lo, r_hi)`` that holds virtual position ``v``."""
    lo, hi = r_lo, r_hi
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if runs.start[mid] <= v:
            lo = mid
        else:
            hi = mid
    return lo


@njit(inline="always")
def visible_end(runs, seq, r_lo, r_hi, imm_hw):
    """Virtual position of the first event of runs ``[r_lo, r_hi)`` with ``seq >= imm_hw`` (the cut)."""
    lo, hi = r_lo, r_hi
    while lo < hi:  # first run whose first seq is >= imm_hw
        mid = (lo + hi) >> 1
        first = runs.seq0[mid] if runs.seq0[mid] >= 0 else seq[runs.pos[mid]]
        if first < imm_hw:
            lo = mid + 1
        else:
            hi = mid
    if lo == r_lo:
        return runs.start[r_lo]
    j = lo - 1  # the cut lies inside run j or at its end
    n = runs.start[j + 1] - runs.start[j]
    if runs.seq0[j] >= 0:
        return runs.start[j] + min(n, imm_hw - runs.seq0[j])
    # sparse seqs: binary search inside the run (written out: a device function cannot call a dispatcher)
    a, z = runs.pos[j], runs.pos[j] + n
    while a < z:
        mid = (a + z) >> 1
        if seq[mid] < imm_hw:
            a = mid + 1
        else:
            z = mid
    return runs.start[j] + a - runs.pos[j]


def make_filter(actions, use_window: bool) -> Filter:
    """The ``Filter`` of an event-type set (None: every type) and whether a time window applies."""
    if actions is None or len(actions) == 0:
        return Filter(np.zeros(1, np.bool_), 0, actions is not None, bool(use_window))
    codes = np.asarray(sorted(actions), np.int64)
    base = int(codes[0])
    ok = np.zeros(int(codes[-1]) - base + 1, np.bool_)
    ok[codes - base] = True
    return Filter(ok, base, True, bool(use_window))


# ---- CUDA side: compiled on first use, so importing kernels never touches CUDA ------------------
cuda = None  # numba.cuda once bound; a module global because the simulator patches kernel globals
_DEVICE: dict = {}


def _scan_inclusive(buf, tid, threads):
    """In-place inclusive block scan of ``buf[:threads]`` (Hillis-Steele); every thread must call it."""
    step = 1
    while step < threads:
        v = buf[tid - step] if tid >= step else 0
        cuda.syncthreads()
        buf[tid] += v
        cuda.syncthreads()
        step *= 2


def device(name):
    """A shared CUDA device function (``keep_event``, ``scan``, ``run_of`` or ``visible_end``), compiled once."""
    if name not in _DEVICE:
        fn = {"keep_event": keep_event.py_func, "scan": _scan_inclusive, "run_of": run_of.py_func,
              "visible_end": visible_end.py_func}[name]
        _DEVICE[name] = cuda.jit(device=True)(fn)
    return _DEVICE[name]


class CudaKernel:
    """Launches the kernel that ``build(threads)`` returns, compiled once per block size.

    ``build``'s module refers to ``cuda`` as a global; it is bound here, on first launch.
    """

    def __init__(self, build):
        self.build = build
        self._compiled = {}
        self.fast = {}  # block size -> FastLaunch (kernels._launch): the launch path once types are known

    def __call__(self, blocks, stream, *args):
        if blocks == 0:  # nothing to do: no launch (a zero-size grid is an error in CUDA)
            return
        threads = CUDA_THREADS
        kernel = self._compiled.get(threads)
        if kernel is None:
            global cuda
            from numba import cuda as numba_cuda

            from ._launch import FastLaunch
            cuda = self.build.__globals__["cuda"] = numba_cuda
            built = self.build(threads)
            self.fast[threads] = FastLaunch(built)  # before _compiled: another thread may read both
            kernel = self._compiled[threads] = built
        fast = self.fast.get(threads)
        # an explicit stream: the caller orders it after the producer's copies (an event), never the
        # legacy default stream, which would serialise against every other stream of the device
        if fast is None or not fast(blocks, threads, stream, args):
            kernel[blocks, threads, stream](*(unsynced(a) for a in args))
            if fast is not None:
                fast.learn(args)  # the dispatcher has compiled these types by now


def unsynced(a):
    """``a`` with every CUDA-array-interface member imported without a stream sync.

    Numba's default synchronizes, on the host, the stream each argument was exported on (CuPy: the
    current stream) at every launch, which would make each launch wait for the previous kernels. The
    backend orders streams with events instead, so that wait is never needed.
    """
    if isinstance(a, tuple):
        items = [unsynced(v) for v in a]
        return type(a)(*items) if hasattr(a, "_fields") else tuple(items)
    if hasattr(a, "__cuda_array_interface__") and not hasattr(a, "device_ctypes_pointer"):  # numba's pass as is
        return cuda.as_cuda_array(a, sync=False)
    return a
