"""What both kernel families share: the event predicate and the CUDA compilation switch."""

from __future__ import annotations

import numpy as np
from numba import njit

# Threads per CUDA block. A compile-time constant because shared-memory scans are sized by it; the
# tests lower it (and call ``reset_cuda``) so the simulator can exercise multi-tile paths on tiny inputs.
CUDA_THREADS = 256

NO_WINDOW = np.iinfo(np.int64).min


@njit(inline="always")
def keep_event(i, etype, type_ok, type_base, ts, ts_min, use_types, use_window):
    """True when event ``i`` passes the projection's event-type set and time window."""
    if use_types:
        k = etype[i] - type_base
        if k < 0 or k >= type_ok.shape[0] or not type_ok[k]:
            return False
    if use_window and ts[i] < ts_min:
        return False
    return True


def type_table(actions):
    """(lookup table, base code) for an event-type set: ``type_ok[code - base]`` says kept."""
    if actions is None or len(actions) == 0:
        return np.zeros(1, np.bool_), 0
    codes = np.asarray(sorted(actions), np.int64)
    base = int(codes[0])
    ok = np.zeros(int(codes[-1]) - base + 1, np.bool_)
    ok[codes - base] = True
    return ok, base


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
    """A shared CUDA device function (``keep_event`` or ``scan``), compiled once."""
    if name not in _DEVICE:
        _DEVICE[name] = cuda.jit(device=True)({"keep": keep_event.py_func, "scan": _scan_inclusive}[name])
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
