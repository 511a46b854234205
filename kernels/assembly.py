"""Ragged-to-padded (or jagged) assembly, fused across all projected columns, plus the lengths.

Contract (both twins): ``assemble(src: Source, runs: Runs, tail: Source, flt: Filter, ex: Examples, sel,
max_len, right, pad: Words, out: Output)``. The output columns are the first ``out.w8.shape[0]`` 8-byte
and ``out.w4.shape[0]`` 4-byte lanes of ``src`` and ``tail`` (the lanes after them only feed the filter);
``pad`` holds one pad word per output column. For example ``b`` with ``sel[b] = (imm_lo, imm_hi, n_imm,
tail_lo, n_tail)`` from the slicing kernel, the kept events (those passing ``flt`` in virtual positions
``[imm_lo, imm_hi)`` of the runs, then in ``[tail_lo, ex.t_hi[b])`` of the tail, in order) are copied
straight from the sources into the row at ``out.starts[b]``: with ``out.width > 0`` (padded) at positions
``[off, off + n)`` of the ``width`` words, ``n = n_imm + n_tail``, ``off = 0`` (left) or ``width - n``
(right), every other position holding the column's pad word; with ``out.width == 0`` (jagged) at
``[0, n)`` exactly. ``out.lengths[b] = n``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import _common
from ._common import SEL_IMM_HI, SEL_IMM_LO, SEL_N_IMM, SEL_N_TAIL, SEL_TAIL_LO, keep_event, run_of
from .slicing import slice_cuda, slice_filtered_one, slice_unfiltered_one


# Slice assignments, not element loops: Numba lowers them to straight block copies and fills, several
# times the rate of an element loop here (docs/design-measurements.md).
@njit(inline="always")
def _copy_run(src, out, dst, lo, n):
    for c in range(out.shape[0]):
        out[c, dst:dst + n] = src[c, lo:lo + n]


@njit(inline="always")
def _pad(out, pad, lo, hi):
    for c in range(out.shape[0]):
        out[c, lo:hi] = pad[c]


@njit(inline="always")
def _copy_event(src, w8, w4, j, i):
    for c in range(w8.shape[0]):
        w8[c, j] = src.w8[c, i]
    for c in range(w4.shape[0]):
        w4[c, j] = src.w4[c, i]


@njit(inline="always")
def _row(out, sel, b, right):
    """(first word of row ``b``, its width, where its events start, how many) in the output."""
    n = sel[b, SEL_N_IMM] + sel[b, SEL_N_TAIL]
    width = out.width if out.width > 0 else n
    off = width - n if right else 0
    return out.starts[b], width, off, n


@njit(inline="always")
def _assemble_one(src, runs, tail, flt, ex, sel, right, pad, out, w8, w4, lengths, b):
    """Row ``b`` of the output, written through the plain arrays ``w8``, ``w4``, ``lengths`` (``out``'s)."""
    filtered = flt.use_types or flt.use_window
    imm_lo, imm_hi, tail_lo = sel[b, SEL_IMM_LO], sel[b, SEL_IMM_HI], sel[b, SEL_TAIL_LO]
    base, width, off, n = _row(out, sel, b, right)
    lengths[b] = n
    _pad(w8, pad.w8, base, base + off)
    _pad(w4, pad.w4, base, base + off)
    _pad(w8, pad.w8, base + off + n, base + width)
    _pad(w4, pad.w4, base + off + n, base + width)
    dst = base + off
    # immutable part: walk the runs, one contiguous copy per run when nothing is filtered
    v = imm_lo
    j = run_of(runs, ex.r_lo[b], ex.r_hi[b], v) if imm_lo < imm_hi else 0
    while v < imm_hi:
        end = min(imm_hi, runs.start[j + 1])
        p = runs.pos[j] + v - runs.start[j]
        if not filtered:
            _copy_run(src.w8, w8, dst, p, end - v)
            _copy_run(src.w4, w4, dst, p, end - v)
            dst += end - v
        else:
            for i in range(p, p + end - v):
                if keep_event(i, src, flt, ex.ts_min[b]):
                    _copy_event(src, w8, w4, dst, i)
                    dst += 1
        v = end
        j += 1
    # the logged tail, straight from the thin rows' values
    if not filtered:
        _copy_run(tail.w8, w8, dst, tail_lo, sel[b, SEL_N_TAIL])
        _copy_run(tail.w4, w4, dst, tail_lo, sel[b, SEL_N_TAIL])
    else:
        for i in range(tail_lo, ex.t_hi[b]):
            if keep_event(i, tail, flt, ex.ts_min[b]):
                _copy_event(tail, w8, w4, dst, i)
                dst += 1


@njit(parallel=True, nogil=True, cache=True)
def _assemble_cpu(src, runs, tail, flt, ex, sel, max_len, right, pad, out):
    # Unpack the outputs before the parallel loop: Numba's parfors lose writes made through a tuple
    # member inside a prange body (reads are fine), so every write goes to a plain array variable.
    w8, w4, lengths = out.w8, out.w4, out.lengths
    for b in prange(sel.shape[0]):
        _assemble_one(src, runs, tail, flt, ex, sel, right, pad, out, w8, w4, lengths, b)


@njit(parallel=True, nogil=True, cache=True)
def _slice_assemble_cpu(src, runs, tail, flt, ex, sel, max_len, right, pad, out):
    w8, w4, lengths = out.w8, out.w4, out.lengths  # plain array variables, as in _assemble_cpu
    filtered = flt.use_types or flt.use_window
    for b in prange(sel.shape[0]):
        if filtered:
            slice_filtered_one(src, runs, tail, flt, ex, max_len, sel, b)
        else:
            slice_unfiltered_one(src, runs, tail, flt, ex, max_len, sel, b)
        _assemble_one(src, runs, tail, flt, ex, sel, right, pad, out, w8, w4, lengths, b)


def assemble_cpu(src, runs, tail, flt, ex, sel, max_len, right, pad, out, stream=0):
    """CPU twin (``numba.njit(parallel=True, nogil=True)``, one example per iteration); see the module
    contract. ``stream`` is accepted for the twins' one signature and ignored."""
    if sel.shape[0]:
        _assemble_cpu(src, runs, tail, flt, ex, sel, max_len, right, pad, out)


#: ``assemble_cpu`` callable from compiled code (see ``slicing.slice_jit``)
assemble_jit = _assemble_cpu


#: ``slice_assemble_cpu`` callable from compiled code (``dali_plugin._assemble_op``), padded rows only
slice_assemble_jit = _slice_assemble_cpu


def slice_assemble_cpu(src, runs, tail, flt, ex, sel, max_len, right, pad, out, stream=0):
    """``slice_cpu`` then ``assemble_cpu`` for padded rows (``out.width > 0``: each row's start is known
    before its slicing), fused into one parallel loop: each example is sliced (``sel`` written as
    ``slice_cpu`` writes it) and then assembled by the same thread. One compiled call per batch instead of
    two: at short rows a call's fixed cost is a visible share of the batch."""
    _padded_only(out)
    if sel.shape[0]:
        _slice_assemble_cpu(src, runs, tail, flt, ex, sel, max_len, right, pad, out)


def _padded_only(out):
    if out.width <= 0:  # jagged rows start at offsets that the slicing's counts give: slice first
        raise ValueError("slice_assemble writes padded rows (out.width > 0); for jagged output run slice, "
                         "then assemble with the offsets of its counts")


def slice_assemble_cuda(src, runs, tail, flt, ex, sel, max_len, right, pad, out, stream=0):
    """CUDA twin of ``slice_assemble_cpu``: the slicing kernel, then the assembly kernel, on ``stream``
    (the assembly reads ``sel`` in stream order; a block per example in each)."""
    _padded_only(out)
    slice_cuda(src, runs, tail, flt, ex, max_len, sel, stream=stream)
    assemble_cuda(src, runs, tail, flt, ex, sel, max_len, right, pad, out, stream=stream)

cuda = None  # bound to numba.cuda by CudaKernel on first launch


def _build_cuda(threads):
    passes_filter = _common.device("keep_event")
    locate = _common.device("run_of")
    scan_inclusive = _common.device("scan")
    copy_event = cuda.jit(device=True)(_copy_event.py_func)
    row = cuda.jit(device=True)(_row.py_func)

    @cuda.jit
    def kernel(src, runs, tail, flt, ex, sel, max_len, right, pad, out):
        """One block per example; consecutive threads write consecutive positions (coalesced)."""
        b = cuda.blockIdx.x
        if b >= sel.shape[0]:
            return
        tid = cuda.threadIdx.x
        w8, w4 = out.w8, out.w4  # writes go to plain array variables, as in the CPU twin
        imm_lo, imm_hi, n_imm, tail_lo = sel[b, SEL_IMM_LO], sel[b, SEL_IMM_HI], sel[b, SEL_N_IMM], sel[b, SEL_TAIL_LO]
        r_lo, r_hi = ex.r_lo[b], ex.r_hi[b]
        base, width, off, n = row(out, sel, b, right)
        if tid == 0:
            out.lengths[b] = n
        filtered = flt.use_types or flt.use_window
        for j in range(tid, width, threads):
            k = j - off
            if k < 0 or k >= n:
                for c in range(w8.shape[0]):
                    w8[c, base + j] = pad.w8[c]
                for c in range(w4.shape[0]):
                    w4[c, base + j] = pad.w4[c]
            elif not filtered:
                if k < n_imm:
                    r = locate(runs, r_lo, r_hi, imm_lo + k)
                    copy_event(src, w8, w4, base + j, runs.pos[r] + imm_lo + k - runs.start[r])
                else:
                    copy_event(tail, w8, w4, base + j, tail_lo + k - n_imm)
        if not filtered:
            return
        # filtered: stream the candidate range in tiles; a block scan gives each kept event its slot
        scan = cuda.shared.array(threads, np.int32)
        dst = cuda.shared.array(1, np.int64)
        if tid == 0:
            dst[0] = base + off
        cuda.syncthreads()
        for part in range(2):
            lo = imm_lo if part == 0 else tail_lo
            hi = imm_hi if part == 0 else ex.t_hi[b]
            tile = lo
            while tile < hi:
                v = tile + tid
                i = v
                k = 0
                if v < hi:
                    if part == 0:
                        r = locate(runs, r_lo, r_hi, v)
                        i = runs.pos[r] + v - runs.start[r]
                        k = 1 if passes_filter(i, src, flt, ex.ts_min[b]) else 0
                    else:
                        k = 1 if passes_filter(i, tail, flt, ex.ts_min[b]) else 0
                scan[tid] = k
                cuda.syncthreads()
                scan_inclusive(scan, tid, threads)
                if k == 1:
                    if part == 0:
                        copy_event(src, w8, w4, dst[0] + scan[tid] - 1, i)
                    else:
                        copy_event(tail, w8, w4, dst[0] + scan[tid] - 1, i)
                cuda.syncthreads()
                if tid == 0:
                    dst[0] += scan[threads - 1]
                cuda.syncthreads()
                tile += threads

    return kernel


def assemble_cuda(src, runs, tail, flt, ex, sel, max_len, right, pad, out, stream=0):
    """CUDA twin (one block per example, ``CUDA_THREADS`` threads) launched on ``stream`` (a Numba stream;
    0 is the default stream); see the module contract."""
    _kernel(sel.shape[0], stream, src, runs, tail, flt, ex, sel, max_len, right, pad, out)


_kernel = _common.CudaKernel(_build_cuda)
