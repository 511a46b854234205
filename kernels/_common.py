"""What both kernel families share: the argument groups, the event predicate, the binary search and
the CUDA compilation switch.

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


class Events(NamedTuple):
    """Per event of the source (immutable rows, then logged tails): what slicing and filtering read."""

    seq: np.ndarray  # int64, immutable rows only (tails need no search)
    ts: np.ndarray  # int64; may be empty when the filter has no window
    etype: np.ndarray  # int32; may be empty when the filter has no type set


class Filter(NamedTuple):
    """A projection's event predicate: ``type_ok[code - type_base]`` says a type is kept."""

    type_ok: np.ndarray  # bool
    type_base: int
    use_types: bool
    use_window: bool


class Examples(NamedTuple):
    """Per example ``b`` (all int64 ``[B]``): its immutable rows ``[u_lo, u_hi)`` of the source, the
    versioned cut ``seq < imm_hw``, its tail ``[t_lo, t_hi)`` and the window start ``ts_min``."""

    u_lo: np.ndarray
    u_hi: np.ndarray
    imm_hw: np.ndarray
    t_lo: np.ndarray
    t_hi: np.ndarray
    ts_min: np.ndarray


class Words(NamedTuple):
    """Columns as raw words, ``[C, n]``: 8-byte ones (int64, float64) and 4-byte ones (int32, float32)."""

    w8: np.ndarray
    w4: np.ndarray


class Padded(NamedTuple):
    """The assembly's output: ``[C8, B, max_len]`` and ``[C4, B, max_len]`` words plus ``lengths [B]``."""

    w8: np.ndarray
    w4: np.ndarray
    lengths: np.ndarray


@njit(inline="always")
def keep_event(i, ev, flt, ts_min):
    """True when event ``i`` passes the projection's event-type set and time window."""
    if flt.use_types:
        k = ev.etype[i] - flt.type_base
        if k < 0 or k >= flt.type_ok.shape[0] or not flt.type_ok[k]:
            return False
    if flt.use_window and ev.ts[i] < ts_min:
        return False
    return True


@njit(inline="always")
def lower_bound(seq, lo, hi, value):
    """First position in ``seq[lo:hi]`` (sorted) whose value is ``>= value``."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if seq[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


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
_DEVICE = {}


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
    """A shared CUDA device function (``keep``, ``lower_bound`` or ``scan``), compiled once."""
    if name not in _DEVICE:
        fn = {"keep": keep_event.py_func, "lower_bound": lower_bound.py_func, "scan": _scan_inclusive}[name]
        _DEVICE[name] = cuda.jit(device=True)(fn)
    return _DEVICE[name]


class CudaKernel:
    """Launches the kernel that ``build(threads)`` returns, compiled once per block size.

    ``build``'s module refers to ``cuda`` as a global; it is bound here, on first launch.
    """

    def __init__(self, build):
        self.build = build
        self._compiled = {}

    def __call__(self, blocks, *args):
        if blocks == 0:  # nothing to do: no launch (a zero-size grid is an error in CUDA)
            return
        threads = CUDA_THREADS
        kernel = self._compiled.get(threads)
        if kernel is None:
            global cuda
            from numba import cuda as numba_cuda
            cuda = self.build.__globals__["cuda"] = numba_cuda
            kernel = self._compiled[threads] = self.build(threads)
        kernel[blocks, threads](*args)
