"""Recycles large host buffers once nothing references them any more, across the whole process.

A fresh multi-megabyte ``np.empty`` is backed by new pages that the kernel zeroes on first touch. NumPy
asks for transparent huge pages for arrays of 4 MiB and more, so each fault zeroes 2 MiB, after
compacting memory when no huge page is free: a cost that swings from pass to pass (more after a Polars
query or a torch op churned memory). A training job makes a new reconstructor per pass, each with its
own output pool and decoded-group arena; with memory of their own, every pass faulted a few hundred
megabytes afresh and its run time was bimodal. So every buffer handed out here is kept in one
process-wide reserve: the next request of the same shape and dtype, from whichever pool or arena,
gets an idle one, already faulted in.

A buffer is reused only when its reference count shows that no batch, view or torch tensor (DLPack
keeps a reference) still uses it, so recycling never overwrites data a caller holds. The reserve keeps
at most ``RESERVE_BYTES`` of buffers: past it, idle ones are forgotten (least recently handed out
first) before the next request looks for one.
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np

RESERVE_BYTES = 1 << 30

_lock = threading.Lock()
_reserve: list[np.ndarray] = []  # every recycled buffer, least recently handed out first
_held = 0  # their bytes, kept as they come and go: summing them costs microseconds on every request


def _unlock_in_child() -> None:
    """A child forked while another thread held the lock (a prefetch thread taking a buffer) would wait on
    it for ever: the child starts with a lock of its own. Its copy of the reserve is sound: a buffer that
    thread was moving is at worst missing from it or still counted as in use, never handed out twice."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_unlock_in_child)


def _idle_refcount() -> int:
    probe = [np.empty(1)]
    for a in probe:
        return sys.getrefcount(a)
    return 0


_IDLE = _idle_refcount()  # a buffer's count while only the reserve holds it (read in a loop like the probe's)


def host_empty(shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)``, backed by an idle buffer of the reserve where one has that shape and dtype
    (its old contents stay: callers write every element they read)."""
    # a tuple check rather than np.ndim, whose conversion costs microseconds on every batch
    shape = tuple(int(n) for n in shape) if isinstance(shape, (tuple, list)) else \
        tuple(int(n) for n in np.atleast_1d(shape))
    dtype = np.dtype(dtype)
    with _lock:
        _trim()
        for i in range(len(_reserve)):
            a = _reserve[i]  # indexed, not enumerated: enumerate's tuple would hold one more reference
            if a.shape == shape and a.dtype == dtype and sys.getrefcount(a) == _IDLE:
                _reserve.append(_reserve.pop(i))  # most recently handed out: forgotten last
                return a
        a = np.empty(shape, dtype)
        _reserve.append(a)
        global _held
        _held += a.nbytes
        return a


def _trim() -> None:
    """Forget the least recently handed out idle buffers while the reserve holds more than its bound."""
    global _held
    i = 0
    while _held > RESERVE_BYTES and i < len(_reserve):
        a = _reserve[i]
        if sys.getrefcount(a) == _IDLE:
            _held -= a.nbytes
            del _reserve[i]
        else:
            i += 1


def reserved_bytes() -> int:
    """Bytes of the buffers the reserve holds (in use or idle)."""
    with _lock:
        return _held
