"""Ragged-to-padded assembly, fused across all projected columns, plus the lengths.

Contract (both twins). Columns travel as raw words: ``src8[c]`` / ``src4[c]`` are the 8-byte / 4-byte
columns of the source (immutable rows then tail rows), ``out8[c]`` / ``out4[c]`` are ``[B, max_len]``.
For example ``b`` with ``sel[b] = (imm_lo, imm_hi, n_imm, tail_lo, n_tail)`` from the slicing kernel,
the kept events (those passing the filter in ``[imm_lo, imm_hi)`` then in ``[tail_lo, t_hi[b])``, in
order) fill positions ``[off, off + n)`` of row ``b``, with ``n = n_imm + n_tail`` and ``off = 0`` (left)
or ``max_len - n`` (right); every other position holds the column's pad word; ``lengths[b] = n``.
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


@njit(parallel=True, cache=True)
def _assemble_cpu(src8, src4, ts, etype, type_ok, type_base, ts_min, sel, t_hi, max_len, right,
                  use_types, use_window, pad8, pad4, out8, out4, lengths):
    for b in prange(sel.shape[0]):
        imm_lo, imm_hi, n_imm, tail_lo, n_tail = sel[b, 0], sel[b, 1], sel[b, 2], sel[b, 3], sel[b, 4]
        n = n_imm + n_tail
        off = max_len - n if right else 0
        lengths[b] = n
        _pad(out8, pad8, b, 0, off)
        _pad(out4, pad4, b, 0, off)
        _pad(out8, pad8, b, off + n, max_len)
        _pad(out4, pad4, b, off + n, max_len)
        if not (use_types or use_window):
            _copy_run(src8, out8, b, off, imm_lo, n_imm)
            _copy_run(src4, out4, b, off, imm_lo, n_imm)
            _copy_run(src8, out8, b, off + n_imm, tail_lo, n_tail)
            _copy_run(src4, out4, b, off + n_imm, tail_lo, n_tail)
            continue
        j = off
        for part in range(2):
            lo = imm_lo if part == 0 else tail_lo
            hi = imm_hi if part == 0 else t_hi[b]
            for i in range(lo, hi):
                if keep_event(i, etype, type_ok, type_base, ts, ts_min[b], use_types, use_window):
                    for c in range(src8.shape[0]):
                        out8[c, b, j] = src8[c, i]
                    for c in range(src4.shape[0]):
                        out4[c, b, j] = src4[c, i]
                    j += 1


def assemble_cpu(src8, src4, ts, etype, type_ok, type_base, ts_min, sel, t_hi, max_len, right,
                 use_types, use_window, pad8, pad4, out8, out4, lengths):
    """CPU twin (``numba.njit(parallel=True)``, one example per iteration); see the module contract."""
    if sel.shape[0]:
        _assemble_cpu(src8, src4, ts, etype, type_ok, type_base, ts_min, sel, t_hi, max_len, right,
                      use_types, use_window, pad8, pad4, out8, out4, lengths)


cuda = None  # bound to numba.cuda by CudaKernel on first launch


def _build_cuda(threads):
    keep = _common.device("keep")
    scan_inclusive = _common.device("scan")

    @cuda.jit
    def kernel(src8, src4, ts, etype, type_ok, type_base, ts_min, sel, t_hi, max_len, right,
               use_types, use_window, pad8, pad4, out8, out4, lengths):
        """One block per example; consecutive threads write consecutive positions (coalesced)."""
        b = cuda.blockIdx.x
        if b >= sel.shape[0]:
            return
        tid = cuda.threadIdx.x
        imm_lo, imm_hi, n_imm, tail_lo, n_tail = sel[b, 0], sel[b, 1], sel[b, 2], sel[b, 3], sel[b, 4]
        n = n_imm + n_tail
        off = max_len - n if right else 0
        if tid == 0:
            lengths[b] = n
        filtered = use_types or use_window
        for j in range(tid, max_len, threads):
            k = j - off
            if k < 0 or k >= n:
                for c in range(out8.shape[0]):
                    out8[c, b, j] = pad8[c]
                for c in range(out4.shape[0]):
                    out4[c, b, j] = pad4[c]
            elif not filtered:
                i = imm_lo + k if k < n_imm else tail_lo + (k - n_imm)
                for c in range(out8.shape[0]):
                    out8[c, b, j] = src8[c, i]
                for c in range(out4.shape[0]):
                    out4[c, b, j] = src4[c, i]
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
            hi = imm_hi if part == 0 else t_hi[b]
            tile = lo
            while tile < hi:
                i = tile + tid
                k = 1 if (i < hi and keep(i, etype, type_ok, type_base, ts, ts_min[b], use_types,
                                          use_window)) else 0
                scan[tid] = k
                cuda.syncthreads()
                scan_inclusive(scan, tid, threads)
                if k == 1:
                    j = base[0] + scan[tid] - 1
                    for c in range(out8.shape[0]):
                        out8[c, b, j] = src8[c, i]
                    for c in range(out4.shape[0]):
                        out4[c, b, j] = src4[c, i]
                cuda.syncthreads()
                if tid == 0:
                    base[0] += scan[threads - 1]
                cuda.syncthreads()
                tile += threads

    return kernel


def assemble_cuda(src8, src4, ts, etype, type_ok, type_base, ts_min, sel, t_hi, max_len, right,
                  use_types, use_window, pad8, pad4, out8, out4, lengths):
    """CUDA twin (one block per example, ``CUDA_THREADS`` threads); see the module contract."""
    _kernel(sel.shape[0], src8, src4, ts, etype, type_ok, type_base, ts_min, sel, t_hi, max_len, right,
            use_types, use_window, pad8, pad4, out8, out4, lengths)


_kernel = _common.CudaKernel(_build_cuda)
