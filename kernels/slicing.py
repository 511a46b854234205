"""Versioned slicing: per example, which stored and logged events its sequence holds.

Contract (both twins). For example ``b``:

* the user's immutable rows are ``[u_lo[b], u_hi[b])`` of the source, sorted by ``seq``; only rows with
  ``seq < imm_hw[b]`` are visible (found by binary search: the source may start after seq 0 or skip seqs);
* its logged tail is ``[t_lo[b], t_hi[b])`` of the source;
* scanning backwards from the newest visible event, keep events that pass the event-type set and the
  window (``ts >= ts_min[b]``) until ``max_len`` are kept, touching no older event than needed.

Output ``sel[b] = (imm_lo, imm_hi, n_imm, tail_lo, n_tail)``: the kept events are exactly those passing
the filter in ``[imm_lo, imm_hi)`` (``n_imm`` of them) and in ``[tail_lo, t_hi[b])`` (``n_tail``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _common
from ._common import keep_event


@njit(inline="always")
def _lower_bound(seq, lo, hi, value):
    while lo < hi:
        mid = (lo + hi) >> 1
        if seq[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(parallel=True, cache=True)
def _slice_cpu(seq, ts, etype, type_ok, type_base, u_lo, u_hi, imm_hw, t_lo, t_hi, ts_min, max_len,
               use_types, use_window, sel):
    for b in prange(u_lo.shape[0]):
        imm_hi = _lower_bound(seq, u_lo[b], u_hi[b], imm_hw[b])
        filtered = use_types or use_window
        # tail first: it holds the newest events
        n_tail = 0
        tail_lo = t_hi[b]
        if not filtered:
            n_tail = min(t_hi[b] - t_lo[b], max_len)
            tail_lo = t_hi[b] - n_tail
        else:
            i = t_hi[b] - 1
            while i >= t_lo[b] and n_tail < max_len:
                if keep_event(i, etype, type_ok, type_base, ts, ts_min[b], use_types, use_window):
                    n_tail += 1
                    tail_lo = i
                i -= 1
        need = max_len - n_tail
        n_imm = 0
        imm_lo = imm_hi
        if not filtered:
            n_imm = min(imm_hi - u_lo[b], need)
            imm_lo = imm_hi - n_imm
        else:
            i = imm_hi - 1
            while i >= u_lo[b] and n_imm < need:
                if keep_event(i, etype, type_ok, type_base, ts, ts_min[b], use_types, use_window):
                    n_imm += 1
                    imm_lo = i
                i -= 1
        sel[b, 0] = imm_lo
        sel[b, 1] = imm_hi
        sel[b, 2] = n_imm
        sel[b, 3] = tail_lo
        sel[b, 4] = n_tail


def slice_cpu(seq, ts, etype, type_ok, type_base, u_lo, u_hi, imm_hw, t_lo, t_hi, ts_min, max_len,
              use_types, use_window, sel):
    """CPU twin (``numba.njit(parallel=True)``, one example per iteration); see the module contract."""
    if u_lo.shape[0]:
        _slice_cpu(seq, ts, etype, type_ok, type_base, u_lo, u_hi, imm_hw, t_lo, t_hi, ts_min, max_len,
                   use_types, use_window, sel)


cuda = None  # bound to numba.cuda by CudaKernel on first launch


def _build_cuda(threads):
    keep = _common.device("keep")
    scan_inclusive = _common.device("scan")

    @cuda.jit
    def kernel(seq, ts, etype, type_ok, type_base, u_lo, u_hi, imm_hw, t_lo, t_hi, ts_min, max_len,
               use_types, use_window, sel):
        """One block per example; threads scan a tile of events backwards, a block scan counts kept."""
        b = cuda.blockIdx.x
        if b >= u_lo.shape[0]:
            return
        tid = cuda.threadIdx.x
        scan = cuda.shared.array(threads, np.int32)
        bcast = cuda.shared.array(4, np.int64)
        if tid == 0:
            lo, hi = u_lo[b], u_hi[b]
            while lo < hi:
                mid = (lo + hi) >> 1
                if seq[mid] < imm_hw[b]:
                    lo = mid + 1
                else:
                    hi = mid
            bcast[0] = lo
        cuda.syncthreads()
        imm_hi = bcast[0]
        cuda.syncthreads()
        filtered = use_types or use_window
        for part in range(2):  # 0: tail (newest), 1: immutable rows
            if part == 0:
                start, stop = t_lo[b], t_hi[b]
                need = max_len
            else:
                start, stop = u_lo[b], imm_hi
                need = max_len - sel_tail_n(sel, b)
            if not filtered:
                n = min(stop - start, need)
                if tid == 0:
                    store_sel(sel, b, part, stop - n, stop, n)
                cuda.syncthreads()
                continue
            got = 0
            first = stop
            top = stop  # exclusive upper end of the current tile
            while top > start and got < need:
                i = top - 1 - tid
                k = 1 if (i >= start and keep(i, etype, type_ok, type_base, ts, ts_min[b], use_types,
                                              use_window)) else 0
                scan[tid] = k
                cuda.syncthreads()
                scan_inclusive(scan, tid, threads)  # thread order = newest to oldest
                total = scan[threads - 1]
                # the oldest event this tile contributes: the kept one whose running count hits the target
                if k == 1 and scan[tid] == min(total, need - got):
                    bcast[1] = i
                cuda.syncthreads()
                if total > 0:
                    first = bcast[1]
                got = min(got + total, need)
                top -= threads
                cuda.syncthreads()
            if tid == 0:
                store_sel(sel, b, part, first, stop, got)
            cuda.syncthreads()

    @cuda.jit(device=True)
    def sel_tail_n(sel, b):
        return sel[b, 4]

    @cuda.jit(device=True)
    def store_sel(sel, b, part, lo, hi, n):
        if part == 0:
            sel[b, 3] = lo
            sel[b, 4] = n
        else:
            sel[b, 0] = lo
            sel[b, 1] = hi
            sel[b, 2] = n

    return kernel


def slice_cuda(seq, ts, etype, type_ok, type_base, u_lo, u_hi, imm_hw, t_lo, t_hi, ts_min, max_len,
               use_types, use_window, sel):
    """CUDA twin (one block per example, ``CUDA_THREADS`` threads); see the module contract."""
    _kernel(u_lo.shape[0], seq, ts, etype, type_ok, type_base, u_lo, u_hi, imm_hw, t_lo, t_hi, ts_min, max_len,
            use_types, use_window, sel)


_kernel = _common.CudaKernel(_build_cuda)
