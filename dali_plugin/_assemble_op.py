"""Batches written inside DALI: the engine's kernels as a DALI operator, writing DALI's own outputs.

On CPU, DALI copies whatever ``external_source`` feeds it into output buffers of its own (DALI 2.4 never
hands out fed memory), so a batch the engine writes and feeds is written twice, and on busy cores that
second pass is a large share of the pipeline's time (docs/design-measurements.md). Here the engine feeds only
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
extra columns' bytes), both laid out, decoded and written by ``_kernel_plan``; ``dims``, an empty uint8
array whose shape ``(rows, max_len, extra bytes, 0)`` sizes the outputs. Outputs: one ``[rows, max_len]``
per projected column, ``lengths [rows]`` and, with extra columns, their bytes ``[rows, bytes]``.
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

from ._kernel_plan import decode, write_share

# the threading layer's symbols (``_one_kernel_thread``'s) must be known before the cfuncs below link
_numba_parallel._launch_threads()

#: at most this many outputs (and inputs) per NumbaFunction
MAX_OUTPUTS = 6

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


@cfunc(_RUN_SIG, nopython=True, cache=True)
def _run(out_ptr, out_shapes, out_ndims, n_out, in_ptr, in_shapes, in_ndims, n_in):
    outs = carray(address_as_void_pointer(out_ptr), n_out, dtype=np.int64)
    ins = carray(address_as_void_pointer(in_ptr), n_in, dtype=np.int64)
    s8 = _shape(in_shapes, in_ndims, 0, 0, 1)
    s4 = _shape(in_shapes, in_ndims, 1, 0, 1)
    w8 = carray(address_as_void_pointer(ins[0]), (s8[0], s8[1]), dtype=np.int64)
    w4 = carray(address_as_void_pointer(ins[1]), (s4[0], s4[1]), dtype=np.int32)
    chunk = carray(address_as_void_pointer(ins[2]), _shape(in_shapes, in_ndims, 2, 0, 1)[0], dtype=np.int64)
    share = carray(address_as_void_pointer(ins[3]), _shape(in_shapes, in_ndims, 3, 0, 1)[0], dtype=np.int64)
    plan = decode(w8, w4, chunk, share)
    _one_kernel_thread()  # this DALI thread's share on one core: DALI runs a share per thread
    write_share(outs, plan)


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

