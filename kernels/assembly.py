"""Ragged-to-padded assembly, fused across all projected columns, plus the lengths.

Contract (both twins): ``assemble(src: Words, ev: Events, flt: Filter, ex: Examples, sel, max_len, right,
pad: Words, out: Padded)``. ``src.w8[c]`` / ``src.w4[c]`` are the 8-byte / 4-byte columns of the source
(immutable rows then tail rows) as raw words; ``out.w8[c]`` / ``out.w4[c]`` are ``[B, max_len]``; ``pad``
holds one pad word per column. For example ``b`` with ``sel[b] = (imm_lo, imm_hi, n_imm, tail_lo,
n_tail)`` from the slicing kernel, the kept events (those passing ``flt`` in ``[imm_lo, imm_hi)`` then in
``[tail_lo, ex.t_hi[b])``, in order) fill positions ``[off, off + n)`` of row ``b``, with
``n = n_imm + n_tail`` and ``off = 0`` (left) or ``max_len - n`` (right); every other position holds the
column's pad word; ``out.lengths[b] = n``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _common
from ._common import keep_event


@njit(inline="always")
def _copy_run(src, out, b, dst, lo, n):
    for c in range(src.shape[0]):
        s = src[c]
        o = out[c, b]
        for k in range(n):
            o[dst + k] = s[lo + k]


@njit(inline="always")
def _pad(out, pad, b, lo, hi):
    for c in range(out.shape[0]):
        o = out[c, b]
        v = pad[c]
        for j in range(lo, hi):
            o[j] = v


@njit(inline="always")
def _copy_event(src, w8, w4, b, j, i):
    for c in range(src.w8.shape[0]):
        w8[c, b, j] = src.w8[c, i]
    for c in range(src.w4.shape[0]):
        w4[c, b, j] = src.w4[c, i]


@njit(parallel=True, cache=True)
def _assemble_cpu(src, ev, flt, ex, sel, max_len, right, pad, out):
    # Unpack the outputs before the parallel loop: Numba's parfors lose writes made through a tuple
    # member inside a prange body (reads are fine), so every write goes to a plain array variable.
    w8, w4, lengths = out.w8, out.w4, out.lengths
    for b in prange(sel.shape[0]):
        imm_lo, imm_hi, n_imm, tail_lo, n_tail = sel[b, 0], sel[b, 1], sel[b, 2], sel[b, 3], sel[b, 4]
        n = n_imm + n_tail
        off = max_len - n if right else 0
        lengths[b] = n
        _pad(w8, pad.w8, b, 0, off)
        _pad(w4, pad.w4, b, 0, off)
        _pad(w8, pad.w8, b, off + n, max_len)
        _pad(w4, pad.w4, b, off + n, max_len)
        if not (flt.use_types or flt.use_window):
            _copy_run(src.w8, w8, b, off, imm_lo, n_imm)
            _copy_run(src.w4, w4, b, off, imm_lo, n_imm)
            _copy_run(src.w8, w8, b, off + n_imm, tail_lo, n_tail)
            _copy_run(src.w4, w4, b, off + n_imm, tail_lo, n_tail)
            continue
        j = off
        for part in range(2):
            lo = imm_lo if part == 0 else tail_lo
            hi = imm_hi if part == 0 else ex.t_hi[b]
            for i in range(lo, hi):
                if keep_event(i, ev, flt, ex.ts_min[b]):
                    _copy_event(src, w8, w4, b, j, i)
                    j += 1


def assemble_cpu(src, ev, flt, ex, sel, max_len, right, pad, out):
    """CPU twin (``numba.njit(parallel=True)``, one example per iteration); see the module contract."""
    if sel.shape[0]:
        _assemble_cpu(src, ev, flt, ex, sel, max_len, right, pad, out)


cuda = None  # bound to numba.cuda by CudaKernel on first launch


def _build_cuda(threads):
    keep = _common.device("keep")
    scan_inclusive = _common.device("scan")
    copy_event = cuda.jit(device=True)(_copy_event.py_func)

    @cuda.jit
    def kernel(src, ev, flt, ex, sel, max_len, right, pad, out):
        """One block per example; consecutive threads write consecutive positions (coalesced)."""
        b = cuda.blockIdx.x
        if b >= sel.shape[0]:
            return
        tid = cuda.threadIdx.x
        w8, w4 = out.w8, out.w4  # writes go to plain array variables, as in the CPU twin
        imm_lo, imm_hi, n_imm, tail_lo, n_tail = sel[b, 0], sel[b, 1], sel[b, 2], sel[b, 3], sel[b, 4]
        n = n_imm + n_tail
        off = max_len - n if right else 0
        if tid == 0:
            out.lengths[b] = n
        filtered = flt.use_types or flt.use_window
        for j in range(tid, max_len, threads):
            k = j - off
            if k < 0 or k >= n:
                for c in range(w8.shape[0]):
                    w8[c, b, j] = pad.w8[c]
                for c in range(w4.shape[0]):
                    w4[c, b, j] = pad.w4[c]
            elif not filtered:
                copy_event(src, w8, w4, b, j, imm_lo + k if k < n_imm else tail_lo + (k - n_imm))
        if not filtered:
            return
        # filtered: stream the candidate range in tiles; a block scan gives each kept event its slot
        scan = cuda.shared.array(threads, np.int32)
        base = cuda.shared.array(1, np.int64)
        if tid == 0:
            base[0] = off
        cuda.syncthreads()
        for part in range(2):
            lo = imm_lo if part == 0 else tail_lo
            hi = imm_hi if part == 0 else ex.t_hi[b]
            tile = lo
            while tile < hi:
                i = tile + tid
                k = 1 if (i < hi and keep(i, ev, flt, ex.ts_min[b])) else 0
                scan[tid] = k
                cuda.syncthreads()
                scan_inclusive(scan, tid, threads)
                if k == 1:
                    copy_event(src, w8, w4, b, base[0] + scan[tid] - 1, i)
                cuda.syncthreads()
                if tid == 0:
                    base[0] += scan[threads - 1]
                cuda.syncthreads()
                tile += threads

    return kernel


def assemble_cuda(src, ev, flt, ex, sel, max_len, right, pad, out):
    """CUDA twin (one block per example, ``CUDA_THREADS`` threads); see the module contract."""
    _kernel(sel.shape[0], src, ev, flt, ex, sel, max_len, right, pad, out)


_kernel = _common.CudaKernel(_build_cuda)
