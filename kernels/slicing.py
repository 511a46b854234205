"""Versioned slicing: per example, which stored and logged events its sequence holds.

Contract (both twins): ``slice(src: Source, runs: Runs, tail: Source, flt: Filter, ex: Examples, max_len,
sel)``. For example ``b``:

* the user's immutable events are the runs ``[ex.r_lo[b], ex.r_hi[b])`` of ``src`` (virtual positions
  ``[runs.start[r_lo], runs.start[r_hi])``, in seq order); only events with ``seq < ex.imm_hw[b]`` are
  visible (found by binary search over the runs, then by arithmetic or inside one sparse run);
* its logged tail is ``[ex.t_lo[b], ex.t_hi[b])`` of ``tail``;
* scanning backwards from the newest visible event, keep events that pass ``flt`` (event-type set and
  window ``ts >= ex.ts_min[b]``) until ``max_len`` are kept, touching no older event than needed.

Output ``sel[b] = (imm_lo, imm_hi, n_imm, tail_lo, n_tail)`` (its columns ``_common.SEL_*``): the kept
events are exactly those passing the filter in virtual positions ``[imm_lo, imm_hi)`` (``n_imm`` of them)
and in ``[tail_lo, t_hi[b])`` of the tail (``n_tail``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _common
from ._common import SEL_IMM_HI, SEL_IMM_LO, SEL_N_IMM, SEL_N_TAIL, SEL_TAIL_LO, keep_event, run_of, visible_end


@njit(inline="always")
def _scan_range(src, flt, ts_min, base, lo, hi, need, n, first):
    """Continue a backward scan over virtual positions ``[lo, hi)`` (source positions ``base + x``) until
    ``need`` are kept: the updated ``(first kept position, kept count)``."""
    for x in range(hi - 1, lo - 1, -1):
        if keep_event(base + x, src, flt, ts_min):
            n += 1
            first = x
            if n >= need:
                break
    return first, n


@njit(inline="always")
def _scan_back(src, runs, flt, ts_min, r_lo, r_hi, lo, hi, need, in_runs):
    """(first kept position, kept count) scanning ``[lo, hi)`` backwards until ``need`` are kept: virtual
    positions of the runs ``[r_lo, r_hi)`` of ``src`` when ``in_runs``, else positions of ``src`` itself.

    One tight loop per run (a run's positions are consecutive in ``src``) rather than finding the run of
    every event, which costs a search per event on filtered tenants' batches."""
    if hi <= lo or need <= 0:
        return hi, 0
    if not in_runs:
        return _scan_range(src, flt, ts_min, 0, lo, hi, need, 0, hi)
    first, n = hi, 0
    j = run_of(runs, r_lo, r_hi, hi - 1)
    v = hi
    while j >= r_lo and v > lo and n < need:
        start = max(runs.start[j], lo)
        first, n = _scan_range(src, flt, ts_min, runs.pos[j] - runs.start[j], start, v, need, n, first)
        v = start
        j -= 1
    return first, n


@njit(inline="always")
def _put(sel, b, imm_lo, imm_hi, n_imm, tail_lo, n_tail):
    sel[b, SEL_IMM_LO] = imm_lo
    sel[b, SEL_IMM_HI] = imm_hi
    sel[b, SEL_N_IMM] = n_imm
    sel[b, SEL_TAIL_LO] = tail_lo
    sel[b, SEL_N_TAIL] = n_tail


@njit(inline="always")
def slice_filtered_one(src, runs, tail, flt, ex, max_len, sel, b):
    """Example ``b``'s ``sel`` row when events are filtered: backward scans, tail first."""
    r_lo, r_hi = ex.r_lo[b], ex.r_hi[b]
    imm_hi = visible_end(runs, src.seq, r_lo, r_hi, ex.imm_hw[b])
    # tail first: it holds the newest events
    tail_lo, n_tail = _scan_back(tail, runs, flt, ex.ts_min[b], 0, 0, ex.t_lo[b], ex.t_hi[b], max_len, False)
    imm_lo, n_imm = _scan_back(src, runs, flt, ex.ts_min[b], r_lo, r_hi, runs.start[r_lo], imm_hi,
                               max_len - n_tail, True)
    _put(sel, b, imm_lo, imm_hi, n_imm, tail_lo, n_tail)


@njit(inline="always")
def slice_unfiltered_one(src, runs, tail, flt, ex, max_len, sel, b):
    """Example ``b``'s ``sel`` row when nothing is filtered: a binary search and sums."""
    imm_hi = visible_end(runs, src.seq, ex.r_lo[b], ex.r_hi[b], ex.imm_hw[b])
    n_tail = min(ex.t_hi[b] - ex.t_lo[b], max_len)  # the newest events, tail first
    n_imm = min(imm_hi - runs.start[ex.r_lo[b]], max_len - n_tail)
    _put(sel, b, imm_hi - n_imm, imm_hi, n_imm, ex.t_hi[b] - n_tail, n_tail)


# Two functions, not one compiled two ways: Numba's disk cache keys compiled code by the Python function,
# not by its options, so a serial and a parallel build of one function share a cache entry, and whichever
# compiled first would serve both. The serial build of the backward scans is many times slower than the
# parallel one (docs/design-measurements.md), so every filtered tenant would pay for it whenever an
# unfiltered one had compiled first.
@njit(parallel=True, nogil=True, cache=True)
def _slice_filtered(src, runs, tail, flt, ex, max_len, sel):
    for b in prange(ex.r_lo.shape[0]):
        slice_filtered_one(src, runs, tail, flt, ex, max_len, sel, b)


# Unfiltered slicing is a few binary searches and sums per example: serial, since waking the worker
# threads costs more than that, and on a busy machine a parallel loop waits for its slowest thread.
@njit(nogil=True, cache=True)
def _slice_unfiltered(src, runs, tail, flt, ex, max_len, sel):
    for b in range(ex.r_lo.shape[0]):
        slice_unfiltered_one(src, runs, tail, flt, ex, max_len, sel, b)


def slice_cpu(src, runs, tail, flt, ex, max_len, sel, stream=0):
    """CPU twin (``numba.njit(parallel=True, nogil=True)``, one example per iteration; serial when
    nothing is filtered); see the module contract. ``stream`` is accepted for the twins' one signature
    and ignored: a CPU kernel has returned when its results are there."""
    if ex.r_lo.shape[0]:
        fn = _slice_filtered if (flt.use_types or flt.use_window) else _slice_unfiltered
        fn(src, runs, tail, flt, ex, max_len, sel)


@njit(nogil=True, cache=True)
def slice_jit(src, runs, tail, flt, ex, max_len, sel):
    """``slice_cpu`` callable from compiled code (a DALI operator, ``dali_plugin._assemble_op``): the same
    compiled loops, on the calling thread's Numba thread count (``numba.set_num_threads``). A serial
    build of the same loops is no substitute: it is many times slower on filtered tenants."""
    if flt.use_types or flt.use_window:
        _slice_filtered(src, runs, tail, flt, ex, max_len, sel)
    else:
        _slice_unfiltered(src, runs, tail, flt, ex, max_len, sel)


cuda = None  # bound to numba.cuda by CudaKernel on first launch


def _build_cuda(threads):
    passes_filter = _common.device("keep_event")
    locate = _common.device("run_of")
    cut = _common.device("visible_end")
    scan_inclusive = _common.device("scan")

    @cuda.jit
    def kernel(src, runs, tail, flt, ex, max_len, sel):
        """One block per example; threads scan a tile of events backwards, a block scan counts kept."""
        b = cuda.blockIdx.x
        if b >= ex.r_lo.shape[0]:
            return
        tid = cuda.threadIdx.x
        r_lo, r_hi = ex.r_lo[b], ex.r_hi[b]
        scan = cuda.shared.array(threads, np.int32)
        bcast = cuda.shared.array(4, np.int64)
        if tid == 0:
            bcast[0] = cut(runs, src.seq, r_lo, r_hi, ex.imm_hw[b])
        cuda.syncthreads()
        imm_hi = bcast[0]
        cuda.syncthreads()
        filtered = flt.use_types or flt.use_window
        for part in range(2):  # 0: tail (newest), 1: immutable runs (virtual positions)
            if part == 0:
                start, stop = ex.t_lo[b], ex.t_hi[b]
                need = max_len
            else:
                start, stop = runs.start[r_lo], imm_hi
                need = max_len - sel[b, 4]
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
                k = 0
                if i >= start:
                    if part == 0:
                        k = 1 if passes_filter(i, tail, flt, ex.ts_min[b]) else 0
                    else:
                        j = locate(runs, r_lo, r_hi, i)
                        k = 1 if passes_filter(runs.pos[j] + i - runs.start[j], src, flt, ex.ts_min[b]) else 0
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
    def store_sel(sel, b, part, lo, hi, n):
        if part == 0:
            sel[b, 3] = lo
            sel[b, 4] = n
        else:
            sel[b, 0] = lo
            sel[b, 1] = hi
            sel[b, 2] = n

    return kernel


def slice_cuda(src, runs, tail, flt, ex, max_len, sel, stream=0):
    """CUDA twin (one block per example, ``CUDA_THREADS`` threads) launched on ``stream`` (a Numba stream;
    0 is the default stream); see the module contract."""
    _kernel(ex.r_lo.shape[0], stream, src, runs, tail, flt, ex, max_len, sel)


_kernel = _common.CudaKernel(_build_cuda)
