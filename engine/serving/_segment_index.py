"""The per-user index of a segment part: where each user's rows lie, their seqs and their times.

One row per user of the part: first row, row count, first seq, newest ts, and a time checkpoint every
``TS_STRIDE`` rows. Readers use it to open only the segments that hold a user, cut seq ranges by
arithmetic and skip strides older than a time window, before touching the Parquet file.
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
from numba import njit

from .._errors import CorruptionError
from .._ragged import group_starts
from . import _fs

COLUMNS = ("user_id", "row_start", "row_count", "seq_start", "ts_max")
TS_STRIDE = 512  # rows between time checkpoints in the user index


@njit(cache=True)
def _ts_checkpoints(ts, starts, counts, stride):
    """Per user, the running max of ts at the end of every ``stride`` rows (flat, with offsets).

    Rows before checkpoint k can be skipped for a window starting at W when checkpoint k-1 < W: no
    event there is new enough, even with late arrivals (ts need not grow with seq).
    """
    n_ck = (counts + stride - 1) // stride
    offsets = np.zeros(len(starts) + 1, np.int64)
    for u in range(len(starts)):
        offsets[u + 1] = offsets[u] + n_ck[u]
    out = np.empty(offsets[-1], np.int64)
    for u in range(len(starts)):
        m = np.iinfo(np.int64).min
        for k in range(n_ck[u]):
            lo = starts[u] + k * stride
            hi = min(lo + stride, starts[u] + counts[u])
            for i in range(lo, hi):
                if ts[i] > m:
                    m = ts[i]
            out[offsets[u] + k] = m
    return out, offsets


def build(user_id: np.ndarray, seq: np.ndarray, ts: np.ndarray) -> pa.Table:
    """The index of rows sorted by (user_id, seq)."""
    n = len(user_id)
    starts = group_starts(user_id)
    counts = np.diff(np.r_[starts, n]).astype(np.int64)
    ts_max = np.maximum.reduceat(ts, starts) if n else np.zeros(0, np.int64)
    ck, ck_off = _ts_checkpoints(np.ascontiguousarray(ts, np.int64), starts.astype(np.int64), counts, TS_STRIDE)
    return pa.table({"user_id": user_id[starts], "row_start": starts.astype(np.int64), "row_count": counts,
                     "seq_start": seq[starts], "ts_max": ts_max,
                     "ts_ckpt": pa.ListArray.from_arrays(pa.array(ck_off.astype(np.int32)), pa.array(ck))})


def to_bytes(index: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()  # zstd: the per-user rows and checkpoints compress about 2x
    with pa.ipc.new_file(sink, index.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(index)
    return sink.getvalue().to_pybytes()


def load(root, part: dict) -> dict:
    """A part's user index as numpy arrays, checked against the manifest's checksum."""
    path = _fs.at(root) / part["index"]
    raw = _fs.read_bytes(path)  # FileNotFoundError: the caller knows whether retention or damage removed it
    if zlib.crc32(raw) != part["index_crc"]:
        raise CorruptionError(f"segment index {path} fails its checksum; the store is damaged")
    t = pa.ipc.open_file(pa.py_buffer(raw)).read_all()
    out = {c: t.column(c).to_numpy() for c in COLUMNS}
    if "ts_ckpt" in t.column_names:
        ck = t.column("ts_ckpt").combine_chunks()
        out["ts_ckpt"] = np.asarray(ck.values)
        out["ts_ckpt_offsets"] = np.asarray(ck.offsets).astype(np.int64)
    return out


@njit(cache=True, nogil=True)
def _select(iu, row_start, row_count, seq_start, ts_max, ck_off, ck, users, seq_lo, seq_hi, ts_min, main):
    n, m, win = len(users), len(iu), len(ts_min) > 0
    ranks, r0, cnt, q0 = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    k = 0
    for u in range(n):
        p = np.searchsorted(iu, users[u])
        if p >= m or iu[p] != users[u] or (win and ts_max[p] < ts_min[u]):
            continue
        a, c, q = row_start[p], row_count[p], seq_start[p]
        if win and len(ck_off):  # skip leading strides whose newest event is older than the window
            old = 0
            for x in range(ck_off[p], ck_off[p + 1]):  # running maxima: the old ones are a prefix
                if ck[x] >= ts_min[u]:
                    break
                old += 1
            skip = min(old * TS_STRIDE, c)
            a, c = a + skip, c - skip
            if main:
                q += skip
        if main:  # seqs are dense inside a user's run of a main part: cut by arithmetic before reading
            lo = min(max(seq_lo[u] - q, 0), c)
            hi = min(max(seq_hi[u] - q, 0), c)
            a, q, c = a + lo, q + lo, max(hi - lo, 0)
        if c > 0:
            ranks[k], r0[k], cnt[k], q0[k] = u, a, c, q
            k += 1
    return ranks[:k], r0[:k], cnt[:k], q0[:k]


_NONE = np.zeros(0, np.int64)


def select_runs(idx: dict, users, seq_lo, seq_hi, ts_min, main: bool) -> tuple:
    """``(ranks, r0, cnt, q0)``: for each of sorted ``users`` with rows to read in this part
    (``users[ranks]``), its rows ``[r0, r0 + cnt)``, ``cnt > 0``, and their first seq ``q0``.

    ``ts_min[u]`` (None: no window) drops users whose newest event here is older, and skips leading
    checkpoint strides older than it (whole strides only, so exact under late arrivals); in a main part
    (dense seqs) the rows are also cut to ``[seq_lo[u], seq_hi[u])``.
    One compiled pass per part: this runs for every segment of every chunk."""
    ck_off, ck = idx.get("ts_ckpt_offsets", _NONE), idx.get("ts_ckpt", _NONE)
    return _select(idx["user_id"], idx["row_start"], idx["row_count"], idx["seq_start"], idx["ts_max"], ck_off, ck,
                   users, seq_lo, seq_hi, _NONE if ts_min is None else ts_min, main)
