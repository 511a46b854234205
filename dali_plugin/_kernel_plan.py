"""The DALI operator's kernel side: a batch's plan as int64 words, and the kernels writing it.

DALI feeds an operator arrays, not objects, so what the kernels read of an ``Unassembled`` batch travels
as two int64 plans beside the chunk's decoded lanes (``w8``, ``w4``, fed in place):

* the chunk's plan (``encode_chunk``, once per chunk, the same in every share of its batches): a header
  of ``ChunkWord`` words, then the tables: per projected column ``ColumnWord`` words, the runs' ``start``
  (``RUNS + 1`` words), ``pos`` and ``seq0`` (``RUNS`` each), the event-type set (``TYPES``), the logged
  events' 8-byte lanes (``LOGGED_LANES8 x LOGGED_EVENTS``) and 4-byte lanes (two to a word, padded to
  whole words);
* a share's plan (``encode_share``, per share of a batch's rows): ``ShareWord`` words, then each of
  ``kernels.Examples``' arrays (``ROWS`` words each, in its fields' order), then the rows' extra columns,
  their bytes side by side per row (``EXTRA_BYTES`` a row), padded to whole words.

Compiled code unpacks them (``decode``) into the kernels' argument groups as views of the fed words, and
``write_share`` runs the kernels over them into the operator's outputs. This module is the plugin's one
door to the kernels: every offset is named here, and the encoding and decoding sides read the same names.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import numpy as np
from numba import carray, njit
from nvidia.dali.plugin.numba import address_as_void_pointer

import kernels


class ChunkWord(IntEnum):
    """The header words of a chunk's plan."""

    MAX_LEN = 0
    RIGHT_ALIGNED = 1  # 1: rows are right-aligned
    RUNS = 2  # runs of stored events
    USE_TYPES = 3  # 1: the filter keeps a set of event types
    USE_WINDOW = 4  # 1: the filter keeps a time window
    TYPE_BASE = 5  # the event-type code of the set's first entry
    TYPES = 6  # entries of the event-type set
    COLUMNS = 7  # projected columns
    SEQ_WIDTH = 8  # the filter lanes (``FilterLanes``): width (8 or 4; 0: none) and index of each
    SEQ_LANE = 9
    TS_WIDTH = 10
    TS_LANE = 11
    EVENT_TYPE_WIDTH = 12
    EVENT_TYPE_LANE = 13
    LOGGED_EVENTS = 14  # logged tail events of the chunk
    LOGGED_LANES8 = 15  # their 8-byte lanes
    LOGGED_LANES4 = 16  # their 4-byte lanes


class ColumnWord(IntEnum):
    """The words of one projected column's entry in a chunk's plan."""

    WIDTH = 0  # 8 or 4: the column is a lane of ``w8`` or of ``w4``
    LANE = 1  # which lane
    PAD = 2  # its pad word (a 4-byte one sign-extended)


class ShareWord(IntEnum):
    """The header words of a share's plan."""

    ROWS = 0
    EXTRA_BYTES = 1  # bytes of the extra columns per row (0: none)


CHUNK_HEADER = len(ChunkWord)
COLUMN_WORDS = len(ColumnWord)
SHARE_HEADER = len(ShareWord)
#: per-row arrays of a share's plan, each ``ROWS`` words (``kernels.Examples``' fields, in order)
EXAMPLE_ARRAYS = len(kernels.Examples._fields)
#: where the filter lanes' ``(width, index)`` sit in the header, in ``FilterLanes``' order
FILTER_LANE_WORDS = (ChunkWord.SEQ_WIDTH, ChunkWord.TS_WIDTH, ChunkWord.EVENT_TYPE_WIDTH)


def encode_chunk(u) -> np.ndarray:
    """The plan of ``u``'s chunk (an ``engine`` ``Unassembled`` batch), which every share of its batches
    reads."""
    (c8, T), c4 = u.logged.w8.shape, u.logged.w4.shape[0]
    flt = u.event_filter
    h = np.zeros(CHUNK_HEADER, np.int64)
    h[ChunkWord.MAX_LEN], h[ChunkWord.RIGHT_ALIGNED] = u.max_len, u.right_aligned
    h[ChunkWord.RUNS], h[ChunkWord.COLUMNS] = len(u.runs.pos), len(u.columns)
    h[ChunkWord.USE_TYPES], h[ChunkWord.USE_WINDOW] = flt.use_types, flt.use_window
    h[ChunkWord.TYPE_BASE], h[ChunkWord.TYPES] = flt.type_base, len(flt.type_ok)
    for at, lane in zip(FILTER_LANE_WORDS, u.filter_lanes):
        h[at:at + 2] = lane if lane is not None else (0, 0)
    h[ChunkWord.LOGGED_EVENTS], h[ChunkWord.LOGGED_LANES8], h[ChunkWord.LOGGED_LANES4] = T, c8, c4
    pads = {8: u.pad.w8, 4: u.pad.w4.astype(np.int64)}
    cols = np.zeros((len(u.columns), COLUMN_WORDS), np.int64)
    for row, c in zip(cols, u.columns):
        row[ColumnWord.WIDTH], row[ColumnWord.LANE] = c.lane
        row[ColumnWord.PAD] = pads[c.lane.width][c.lane.index]
    t4 = np.zeros(-(-c4 * T // 2) * 2, np.int32)
    t4[:c4 * T] = u.logged.w4.ravel()
    return np.concatenate([h, cols.ravel(), u.runs.start, u.runs.pos, u.runs.seq0, flt.type_ok.astype(np.int64),
                           u.logged.w8.ravel(), t4.view(np.int64)])


def encode_share(u, a: int, b: int, extras: list) -> np.ndarray:
    """The plan of rows ``[a, b)`` of ``u``: their examples, then the bytes of their ``extras`` columns."""
    n = b - a
    raw = np.concatenate([np.ascontiguousarray(u.extras[c][a:b]).view(np.uint8).reshape(n, -1)
                          for c in extras], axis=1) if extras else np.zeros((n, 0), np.uint8)
    words = np.zeros(-(-raw.size // 8), np.int64)
    words.view(np.uint8)[:raw.size] = raw.ravel()
    head = np.zeros(SHARE_HEADER, np.int64)
    head[ShareWord.ROWS], head[ShareWord.EXTRA_BYTES] = n, raw.shape[1]
    return np.concatenate([head, *(v[a:b] for v in u.examples), words])


class Plan(NamedTuple):
    """A share's plans decoded: the kernels' argument groups, views of the fed lanes and words."""

    max_len: int
    right_aligned: bool
    columns: np.ndarray  # int64 [columns, COLUMN_WORDS], ``ColumnWord`` words per projected column
    stored: kernels.Source
    runs: kernels.Runs
    logged: kernels.Source
    event_filter: kernels.Filter
    examples: kernels.Examples
    extra_bytes: np.ndarray  # uint8 [rows * EXTRA_BYTES]


@njit(inline="always")
def _i64(ptr, word, n):
    return carray(address_as_void_pointer(ptr + 8 * word), n, dtype=np.int64)


@njit
def _lane8(w, width, i):
    return w[i] if width == 8 else np.zeros(0, np.int64)


@njit
def _lane4(w, width, i):
    return w[i] if width == 4 else np.zeros(0, np.int32)


@njit
def decode(w8, w4, chunk, share) -> Plan:
    """The plan of one share of a batch: ``w8``/``w4`` are the chunk's decoded lanes, ``chunk`` and
    ``share`` the words ``encode_chunk`` and ``encode_share`` wrote (its arrays are views of them)."""
    cp, sp = chunk.ctypes.data, share.ctypes.data
    h = _i64(cp, 0, CHUNK_HEADER)
    R, n_type, ncols = h[ChunkWord.RUNS], h[ChunkWord.TYPES], h[ChunkWord.COLUMNS]
    T, c8, c4 = h[ChunkWord.LOGGED_EVENTS], h[ChunkWord.LOGGED_LANES8], h[ChunkWord.LOGGED_LANES4]
    flt = kernels.Filter(np.empty(n_type, np.bool_), h[ChunkWord.TYPE_BASE], h[ChunkWord.USE_TYPES] != 0,
                         h[ChunkWord.USE_WINDOW] != 0)
    at = CHUNK_HEADER
    cols = carray(address_as_void_pointer(cp + 8 * at), (ncols, COLUMN_WORDS), dtype=np.int64)
    at += COLUMN_WORDS * ncols
    runs = kernels.Runs(_i64(cp, at, R + 1), _i64(cp, at + R + 1, R), _i64(cp, at + 2 * R + 1, R))
    at += 3 * R + 1
    ok = _i64(cp, at, n_type)
    for i in range(n_type):
        flt.type_ok[i] = ok[i] != 0
    at += n_type
    t8 = carray(address_as_void_pointer(cp + 8 * at), (c8, T), dtype=np.int64)
    at += c8 * T
    t4 = carray(address_as_void_pointer(cp + 8 * at), (c4, T), dtype=np.int32)
    s = _i64(sp, 0, SHARE_HEADER)
    rows, nbytes = s[ShareWord.ROWS], s[ShareWord.EXTRA_BYTES]
    at = SHARE_HEADER
    ex = kernels.Examples(_i64(sp, at, rows), _i64(sp, at + rows, rows), _i64(sp, at + 2 * rows, rows),
                          _i64(sp, at + 3 * rows, rows), _i64(sp, at + 4 * rows, rows),
                          _i64(sp, at + 5 * rows, rows))
    at += EXAMPLE_ARRAYS * rows
    extra = carray(address_as_void_pointer(sp + 8 * at), rows * nbytes, dtype=np.uint8)
    # the filter's lanes: seq and ts are 8-byte columns, the event type a 4-byte one
    sw, sl = h[ChunkWord.SEQ_WIDTH], h[ChunkWord.SEQ_LANE]
    tw, tl = h[ChunkWord.TS_WIDTH], h[ChunkWord.TS_LANE]
    ew, el = h[ChunkWord.EVENT_TYPE_WIDTH], h[ChunkWord.EVENT_TYPE_LANE]
    stored = kernels.Source(w8, w4, _lane8(w8, sw, sl), _lane8(w8, tw, tl), _lane4(w4, ew, el))
    logged = kernels.Source(t8, t4, _lane8(t8, sw, sl), _lane8(t8, tw, tl), _lane4(t4, ew, el))
    return Plan(h[ChunkWord.MAX_LEN], h[ChunkWord.RIGHT_ALIGNED] != 0, cols, stored, runs, logged, flt, ex, extra)


@njit
def write_share(outs, plan):
    """One share of a batch into the outputs at addresses ``outs`` (each column's ``[rows, max_len]``, then
    ``lengths [rows]`` and, with extra columns, their bytes ``[rows, EXTRA_BYTES]``): slice its rows, then
    assemble each column into its own output."""
    ncols, rows = len(plan.columns), len(plan.examples.r_lo)
    sel = np.empty((rows, kernels.SEL_COLUMNS), np.int64)
    lengths = carray(address_as_void_pointer(outs[ncols]), rows, dtype=np.int32)
    flt = plan.event_filter
    if (flt.use_types or flt.use_window) and ncols > 1:
        _write_blocks(outs, plan, sel, lengths)
    else:
        kernels.slice_jit(plan.stored, plan.runs, plan.logged, flt, plan.examples, plan.max_len, sel)
        _write_columns(outs, plan, sel, lengths)
    if len(plan.extra_bytes) > 0:
        dst = carray(address_as_void_pointer(outs[ncols + 1]), len(plan.extra_bytes), dtype=np.uint8)
        dst[:] = plan.extra_bytes


#: bytes of a filtered share's scratch rows, small enough to stay in cache until copied out (``_write_blocks``)
_BLOCK_BYTES = 1 << 18


@njit
def _write_blocks(outs, plan, sel, lengths):
    """Filtered rows of several columns: all columns in one filtering pass per block of rows, into scratch
    rows that stay in cache, each column then copied to its own output. Written column by column, every
    column would test every candidate event against the filter again. Each row is sliced right before it is
    assembled (``kernels.slice_assemble_jit``), so the events its backward scan read are still in cache."""
    cols, rows, L, ex = plan.columns, len(lengths), plan.max_len, plan.examples
    ncols = len(cols)
    c8 = 0
    for c in range(ncols):
        c8 += cols[c, ColumnWord.WIDTH] == 8
    c4 = ncols - c8
    pad8, pad4 = np.empty(c8, np.int64), np.empty(c4, np.int32)
    for c in range(ncols):  # the output columns are the first lanes of each width, in order
        if cols[c, ColumnWord.WIDTH] == 8:
            pad8[cols[c, ColumnWord.LANE]] = cols[c, ColumnWord.PAD]
        else:
            pad4[cols[c, ColumnWord.LANE]] = cols[c, ColumnWord.PAD]
    k = max(1, min(rows, _BLOCK_BYTES // (L * (8 * c8 + 4 * c4))))
    s8, s4 = np.empty((c8, k * L), np.int64), np.empty((c4, k * L), np.int32)
    starts = np.arange(k) * L
    for b0 in range(0, rows, k):
        b1 = min(rows, b0 + k)
        exb = kernels.Examples(ex.r_lo[b0:b1], ex.r_hi[b0:b1], ex.imm_hw[b0:b1], ex.t_lo[b0:b1], ex.t_hi[b0:b1],
                               ex.ts_min[b0:b1])
        kernels.slice_assemble_jit(plan.stored, plan.runs, plan.logged, plan.event_filter, exb, sel[b0:b1], L,
                                   plan.right_aligned, kernels.Words(pad8, pad4),
                                   kernels.Output(s8, s4, lengths[b0:b1], starts[:b1 - b0], L))
        n = (b1 - b0) * L
        for c in range(ncols):
            lane = cols[c, ColumnWord.LANE]
            if cols[c, ColumnWord.WIDTH] == 8:
                o8 = carray(address_as_void_pointer(outs[c]), rows * L, dtype=np.int64)
                o8[b0 * L:b0 * L + n] = s8[lane, :n]
            else:
                o4 = carray(address_as_void_pointer(outs[c]), rows * L, dtype=np.int32)
                o4[b0 * L:b0 * L + n] = s4[lane, :n]


@njit(inline="always")
def _row8(w, i):
    """Row ``i`` of 8-byte lanes as a C-contiguous ``[1, n]`` array of its own: a slice of the lanes' matrix
    would be typed as strided, and the kernels' block copies would compile to element loops."""
    return carray(address_as_void_pointer(w.ctypes.data + 8 * i * w.shape[1]), (1, w.shape[1]), dtype=np.int64)


@njit(inline="always")
def _row4(w, i):
    """Row ``i`` of 4-byte lanes, as ``_row8``."""
    return carray(address_as_void_pointer(w.ctypes.data + 4 * i * w.shape[1]), (1, w.shape[1]), dtype=np.int32)


@njit(inline="always")
def _with_lanes(src, w8, w4):
    """``src`` (its filter lanes) with lanes ``w8``/``w4`` to copy from."""
    return kernels.Source(w8, w4, src.seq, src.ts, src.etype)


@njit
def _write_columns(outs, plan, sel, lengths):
    """Each column written by the kernels straight into its own output (one column's lanes at a time)."""
    rows, L = len(lengths), plan.max_len
    starts = np.arange(rows) * L
    w8, w4, t8, t4 = plan.stored.w8, plan.stored.w4, plan.logged.w8, plan.logged.w4
    # no lanes of the other width: empty arrays shaped as the rows the kernels would read
    e8, e4 = np.empty((0, rows * L), np.int64), np.empty((0, rows * L), np.int32)
    a8, a4 = np.empty((0, w8.shape[1]), np.int64), np.empty((0, w4.shape[1]), np.int32)
    z8, z4 = np.empty((0, t8.shape[1]), np.int64), np.empty((0, t4.shape[1]), np.int32)
    for c in range(len(plan.columns)):  # one column at a time: each output is a buffer of its own
        col = plan.columns[c]
        width, lane, pad = col[ColumnWord.WIDTH], col[ColumnWord.LANE], col[ColumnWord.PAD]
        if width == 8:
            out = carray(address_as_void_pointer(outs[c]), (1, rows * L), dtype=np.int64)
            _column(plan, sel, _with_lanes(plan.stored, _row8(w8, lane), a4),
                    _with_lanes(plan.logged, _row8(t8, lane), z4),
                    kernels.Words(np.full(1, pad, np.int64), np.zeros(0, np.int32)),
                    kernels.Output(out, e4, lengths, starts, L))
        else:
            out = carray(address_as_void_pointer(outs[c]), (1, rows * L), dtype=np.int32)
            _column(plan, sel, _with_lanes(plan.stored, a8, _row4(w4, lane)),
                    _with_lanes(plan.logged, z8, _row4(t4, lane)),
                    kernels.Words(np.zeros(0, np.int64), np.full(1, np.int32(pad), np.int32)),
                    kernels.Output(e8, out, lengths, starts, L))


@njit
def _column(plan, sel, stored, logged, pad, out):
    """The kernels' assembly of one column: ``stored`` and ``logged`` carry its lane (and nothing in the
    other width), ``pad`` its pad word and ``out`` its output, in the lanes of its width."""
    kernels.assemble_jit(stored, plan.runs, logged, plan.event_filter, plan.examples, sel, plan.max_len,
                         plan.right_aligned, pad, out)
