"""Batches written inside DALI: the engine's kernels as a DALI operator, writing DALI's own outputs.

On CPU, DALI copies whatever ``external_source`` feeds it into output buffers of its own (DALI 2.4 never
hands out fed memory), so a batch the engine writes and feeds is written twice; on 2 busy cores that
second pass made the pipeline up to 1.3-1.5x slower than ``iter_batches``. Here the engine feeds only
what its kernels read (``Reconstructor.iter_unassembled``: the decoded row groups in place, and a small
plan per chunk and per share of a batch) and an operator runs the slicing and assembly kernels straight
into DALI's output buffers: each batch is written once, on DALI's threads, one share of its rows per
thread (a DALI sample each), and DALI hands those buffers out as they are.

The operator is ``nvidia.dali.plugin.numba``'s ``NumbaFunction`` given compiled functions of ours
(``numba.cfunc`` with DALI's calling convention, cached on disk like the kernels) instead of compiling
its own at every pipeline build, which takes seconds.

Inputs (one DALI sample per share of a batch's rows; the same arrays in every sample but the last two):
``w8``/``w4``, the chunk's decoded lanes; ``chunk``, an int64 plan of the chunk (header, column table,
runs, event-type set, logged tails); ``share``, an int64 plan of the share's rows (per-example arrays,
extra columns' bytes); ``dims``, an empty uint8 array whose shape ``(rows, max_len, extra bytes, 0)``
sizes the outputs. Outputs: one ``[rows, max_len]`` per projected column, ``lengths [rows]`` and, with
extra columns, their bytes ``[rows, bytes]``.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit
from numba import types as nt
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.ufunc import parallel as _numba_parallel
from nvidia.dali import types as dali_types
from nvidia.dali.plugin.numba import NumbaFunction, address_as_void_pointer

import kernels

# the threading layer's symbols (``_one_kernel_thread``'s) must be known before the cfuncs below link
_numba_parallel._launch_threads()

#: at most this many outputs (and inputs) per NumbaFunction
MAX_OUTPUTS = 6
_HEADER = 20  # words before the chunk plan's tables
_EX = 6  # per-example int64 arrays of ``kernels.Examples``

DALI_TYPES = {np.dtype(np.int64): dali_types.INT64, np.dtype(np.int32): dali_types.INT32,
              np.dtype(np.float64): dali_types.FLOAT64, np.dtype(np.float32): dali_types.FLOAT,
              np.dtype(np.uint64): dali_types.UINT64, np.dtype(np.uint32): dali_types.UINT32}

_RUN_SIG = nt.void(nt.uint64, nt.uint64, nt.uint64, nt.int32, nt.uint64, nt.uint64, nt.uint64, nt.int32)
_SETUP_SIG = nt.void(nt.uint64, nt.uint64, nt.int32, nt.uint64, nt.uint64, nt.int32, nt.int32)


@intrinsic
def _one_kernel_thread(typingctx):
    """``numba.set_num_threads(1)`` for the calling thread, through the threading layer's symbol. Numba's own
    jitted ``set_num_threads`` calls it through a ctypes pointer, a "dynamic global" that keeps every
    function using it out of Numba's disk cache: the operator was compiled again, ~20 s, in every process."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(32)]),
                                            "set_num_threads")
        builder.call(fn, [ir.Constant(ir.IntType(32), 1)])
        return context.get_dummy_value()
    return nt.void(), codegen


@njit(inline="always")
def _shape(shapes, ndims, k, s, samples):
    """Input or output ``k``'s shape of sample ``s`` (DALI passes a pointer per (io, sample))."""
    nd = carray(address_as_void_pointer(ndims), k + 1, dtype=np.int32)
    ptrs = carray(address_as_void_pointer(shapes), (k + 1, samples), dtype=np.int64)
    return carray(address_as_void_pointer(ptrs[k, s]), nd[k], dtype=np.int64)


@njit(inline="always")
def _i64(ptr, word, n):
    return carray(address_as_void_pointer(ptr + 8 * word), n, dtype=np.int64)


@cfunc(_SETUP_SIG, nopython=True, cache=True)
def _setup(out_shapes, out_ndims, n_out, in_shapes, in_ndims, n_in, samples):
    for s in range(samples):
        d = _shape(in_shapes, in_ndims, n_in - 1, s, samples)  # dims: (rows, max_len, extra bytes, 0)
        rows, width, extra = d[0], d[1], d[2]
        cols = n_out - 1 - (1 if extra > 0 else 0)
        for k in range(cols):
            o = _shape(out_shapes, out_ndims, k, s, samples)
            o[0], o[1] = rows, width
        o = _shape(out_shapes, out_ndims, cols, s, samples)
        o[0] = rows
        if extra > 0:
            o = _shape(out_shapes, out_ndims, cols + 1, s, samples)
            o[0], o[1] = rows, extra


@njit
def _lane8(w, k, i):
    return w[i] if k == 8 else np.zeros(0, np.int64)


@njit
def _lane4(w, k, i):
    return w[i] if k == 4 else np.zeros(0, np.int32)


@njit
def _write(outs, w8p, w4p, w8, w4, cp, sp):
    """One share of a batch: slice its rows, then assemble each column into its own output."""
    h = _i64(cp, 0, _HEADER)
    L, right, R, n_type, ncols = h[0], h[1] != 0, h[2], h[6], h[7]
    flt = kernels.Filter(np.empty(n_type, np.bool_), h[5], h[3] != 0, h[4] != 0)
    T, c8, c4 = h[14], h[15], h[16]
    at = _HEADER
    cols = _i64(cp, at, 3 * ncols)
    at += 3 * ncols
    runs = kernels.Runs(_i64(cp, at, R + 1), _i64(cp, at + R + 1, R), _i64(cp, at + 2 * R + 1, R))
    at += 3 * R + 1
    ok = _i64(cp, at, n_type)
    for i in range(n_type):
        flt.type_ok[i] = ok[i] != 0
    at += n_type
    t8p = cp + 8 * at
    t8 = carray(address_as_void_pointer(t8p), (c8, T), dtype=np.int64)
    at += c8 * T
    t4p = cp + 8 * at
    t4 = carray(address_as_void_pointer(t4p), (c4, T), dtype=np.int32)
    s = _i64(sp, 0, 2)
    rows, nbytes = s[0], s[1]
    ex = kernels.Examples(_i64(sp, 2, rows), _i64(sp, 2 + rows, rows), _i64(sp, 2 + 2 * rows, rows),
                          _i64(sp, 2 + 3 * rows, rows), _i64(sp, 2 + 4 * rows, rows), _i64(sp, 2 + 5 * rows, rows))
    # the filter's lanes (seq and ts are 8-byte columns, the event type a 4-byte one)
    src = kernels.Source(w8, w4, _lane8(w8, h[8], h[9]), _lane8(w8, h[10], h[11]), _lane4(w4, h[12], h[13]))
    tail = kernels.Source(t8, t4, _lane8(t8, h[8], h[9]), _lane8(t8, h[10], h[11]), _lane4(t4, h[12], h[13]))
    _one_kernel_thread()  # this DALI thread's share on one core: DALI runs a share per thread
    sel = np.empty((rows, 5), np.int64)
    lengths = carray(address_as_void_pointer(outs[ncols]), rows, dtype=np.int32)
    if (flt.use_types or flt.use_window) and ncols > 1:
        _write_blocks(outs, src, runs, tail, flt, ex, sel, L, right, cols, lengths)
    else:
        kernels.slice_jit(src, runs, tail, flt, ex, L, sel)
        _write_columns(outs, w8p, w4p, w8, w4, t8p, t4p, T, src, runs, tail, flt, ex, sel, L, right, cols, lengths)
    if nbytes > 0:
        src_bytes = carray(address_as_void_pointer(sp + 8 * (2 + _EX * rows)), rows * nbytes, dtype=np.uint8)
        dst = carray(address_as_void_pointer(outs[ncols + 1]), rows * nbytes, dtype=np.uint8)
        dst[:] = src_bytes


#: bytes of a filtered share's scratch rows, small enough to stay in cache until copied out (``_write_blocks``)
_BLOCK_BYTES = 1 << 18


@njit
def _write_blocks(outs, src, runs, tail, flt, ex, sel, L, right, cols, lengths):
    """Filtered rows of several columns: all columns in one filtering pass per block of rows, into scratch
    rows that stay in cache, each column then copied to its own output. Written column by column, every
    column would test every candidate event against the filter again. Each row is sliced right before it is
    assembled (``kernels.slice_assemble_jit``), so the events its backward scan read are still in cache."""
    ncols, rows = len(cols) // 3, len(lengths)
    c8 = 0
    for c in range(ncols):
        c8 += cols[3 * c] == 8
    c4 = ncols - c8
    pad8, pad4 = np.empty(c8, np.int64), np.empty(c4, np.int32)
    for c in range(ncols):  # the output columns are the first lanes of each width, in order
        if cols[3 * c] == 8:
            pad8[cols[3 * c + 1]] = cols[3 * c + 2]
        else:
            pad4[cols[3 * c + 1]] = cols[3 * c + 2]
    k = max(1, min(rows, _BLOCK_BYTES // (L * (8 * c8 + 4 * c4))))
    s8, s4 = np.empty((c8, k * L), np.int64), np.empty((c4, k * L), np.int32)
    starts = np.arange(k) * L
    for b0 in range(0, rows, k):
        b1 = min(rows, b0 + k)
        exb = kernels.Examples(ex.r_lo[b0:b1], ex.r_hi[b0:b1], ex.imm_hw[b0:b1], ex.t_lo[b0:b1], ex.t_hi[b0:b1],
                               ex.ts_min[b0:b1])
        kernels.slice_assemble_jit(src, runs, tail, flt, exb, sel[b0:b1], L, right, kernels.Words(pad8, pad4),
                                   kernels.Output(s8, s4, lengths[b0:b1], starts[:b1 - b0], L))
        n = (b1 - b0) * L
        for c in range(ncols):
            if cols[3 * c] == 8:
                o8 = carray(address_as_void_pointer(outs[c]), rows * L, dtype=np.int64)
                o8[b0 * L:b0 * L + n] = s8[cols[3 * c + 1], :n]
            else:
                o4 = carray(address_as_void_pointer(outs[c]), rows * L, dtype=np.int32)
                o4[b0 * L:b0 * L + n] = s4[cols[3 * c + 1], :n]


@njit
def _write_columns(outs, w8p, w4p, w8, w4, t8p, t4p, T, src, runs, tail, flt, ex, sel, L, right, cols, lengths):
    """Each column written by the kernels straight into its own output (one column's lanes at a time)."""
    ncols, rows = len(cols) // 3, len(lengths)
    starts = np.arange(rows) * L
    e8, e4 = np.empty((0, rows * L), np.int64), np.empty((0, rows * L), np.int32)
    # lanes as C-contiguous arrays of their own (a slice of the lanes' matrix would be typed as strided, and
    # the kernels' block copies would compile to element loops)
    n8, n4 = w8.shape[1], w4.shape[1]
    a8, a4 = np.empty((0, n8), np.int64), np.empty((0, n4), np.int32)
    z8, z4 = np.empty((0, T), np.int64), np.empty((0, T), np.int32)
    for c in range(ncols):  # one column at a time: each output is a buffer of its own
        width, lane, pad = cols[3 * c], cols[3 * c + 1], cols[3 * c + 2]
        if width == 8:
            _column(src, tail, runs, flt, ex, sel, L, right, lengths, starts,
                    carray(address_as_void_pointer(w8p + 8 * lane * n8), (1, n8), dtype=np.int64), a4,
                    carray(address_as_void_pointer(t8p + 8 * lane * T), (1, T), dtype=np.int64), z4,
                    np.full(1, pad, np.int64), np.zeros(0, np.int32),
                    carray(address_as_void_pointer(outs[c]), (1, rows * L), dtype=np.int64), e4)
        else:
            _column(src, tail, runs, flt, ex, sel, L, right, lengths, starts,
                    a8, carray(address_as_void_pointer(w4p + 4 * lane * n4), (1, n4), dtype=np.int32),
                    z8, carray(address_as_void_pointer(t4p + 4 * lane * T), (1, T), dtype=np.int32),
                    np.zeros(0, np.int64), np.full(1, np.int32(pad), np.int32),
                    e8, carray(address_as_void_pointer(outs[c]), (1, rows * L), dtype=np.int32))


@njit
def _column(src, tail, runs, flt, ex, sel, L, right, lengths, starts, s8, s4, q8, q4, p8, p4, o8, o4):
    """The kernels' assembly of one column: its lane of the sources (``s*``, ``q*``), pad word and output
    (``o*``) in the lanes of its width, nothing in the others."""
    kernels.assemble_jit(kernels.Source(s8, s4, src.seq, src.ts, src.etype), runs,
                         kernels.Source(q8, q4, tail.seq, tail.ts, tail.etype), flt, ex, sel, L, right,
                         kernels.Words(p8, p4), kernels.Output(o8, o4, lengths, starts, L))


@cfunc(_RUN_SIG, nopython=True, cache=True)
def _run(out_ptr, out_shapes, out_ndims, n_out, in_ptr, in_shapes, in_ndims, n_in):
    outs = carray(address_as_void_pointer(out_ptr), n_out, dtype=np.int64)
    ins = carray(address_as_void_pointer(in_ptr), n_in, dtype=np.int64)
    s8 = _shape(in_shapes, in_ndims, 0, 0, 1)
    s4 = _shape(in_shapes, in_ndims, 1, 0, 1)
    w8 = carray(address_as_void_pointer(ins[0]), (s8[0], s8[1]), dtype=np.int64)
    w4 = carray(address_as_void_pointer(ins[1]), (s4[0], s4[1]), dtype=np.int32)
    _write(outs, ins[0], ins[1], w8, w4, ins[2], ins[3])


class _Assemble(NumbaFunction):
    """``NumbaFunction`` running our compiled functions (above) rather than compiling its own."""

    def _get_run_fn_cpu(self, *args):
        return _run.address

    def _get_setup_fn_cpu(self, setup_fn):
        return _setup.address


def operator(columns, extra: bool):
    """The DALI operator writing batches of ``columns`` (``(name, dtype)`` each), plus extras' bytes."""
    out_types = [DALI_TYPES[np.dtype(dt)] for _, dt in columns] + [dali_types.INT32]
    outs_ndim = [2] * len(columns) + [1]
    if extra:
        out_types.append(dali_types.UINT8)
        outs_ndim.append(2)
    return _Assemble(run_fn=None, setup_fn=True, out_types=out_types, outs_ndim=outs_ndim,
                     in_types=[dali_types.INT64, dali_types.INT32, dali_types.INT64, dali_types.INT64,
                               dali_types.UINT8],
                     ins_ndim=[2, 2, 1, 1, 4], batch_processing=False)


def chunk_plan(u) -> np.ndarray:
    """The int64 plan of ``u``'s chunk that every share of its batches reads (``_write``)."""
    (c8, T), c4 = u.tail.w8.shape, u.tail.w4.shape[0]
    R = len(u.runs.pos)
    h = np.zeros(_HEADER, np.int64)
    h[:8] = (u.max_len, u.right, R, u.flt.use_types, u.flt.use_window, u.flt.type_base, len(u.flt.type_ok),
             len(u.columns))
    for k, lane in enumerate(u.lanes):
        h[8 + 2 * k:10 + 2 * k] = lane if lane is not None else (0, 0)
    h[14:17] = (T, c8, c4)
    pads = {8: u.pad.w8, 4: u.pad.w4.astype(np.int64)}
    cols = np.array([(w, lane, pads[w][lane]) for _, _, w, lane in u.columns], np.int64).ravel()
    t4 = np.zeros(-(-c4 * T // 2) * 2, np.int32)
    t4[:c4 * T] = u.tail.w4.ravel()
    return np.concatenate([h, cols, u.runs.start, u.runs.pos, u.runs.seq0, u.flt.type_ok.astype(np.int64),
                           u.tail.w8.ravel(), t4.view(np.int64)])


def share_plan(u, a: int, b: int, extras: list) -> np.ndarray:
    """The int64 plan of rows ``[a, b)`` of ``u``: their examples, then their extra columns' bytes."""
    n = b - a
    raw = np.concatenate([np.ascontiguousarray(u.extras[c][a:b]).view(np.uint8).reshape(n, -1)
                          for c in extras], axis=1) if extras else np.zeros((n, 0), np.uint8)
    words = np.zeros(-(-raw.size // 8), np.int64)
    words.view(np.uint8)[:raw.size] = raw.ravel()
    return np.concatenate([np.array([n, raw.shape[1]], np.int64), *(v[a:b] for v in u.examples), words])
