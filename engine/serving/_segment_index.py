"""The per-user index of a segment part: where each user's rows lie, their seqs and their times.

One row per user of the part: first row, row count, first seq, newest ts, and a time checkpoint every
``TS_STRIDE`` rows. Readers use it to open only the segments that hold a user, cut seq ranges by
arithmetic and skip strides older than a time window, before touching the Parquet file.

Sidecars' indexes also hold, every ``TYPE_STRIDE`` rows of a user, the count of each event type and the
stride's last seq (``type_ckpt``, ``seq_ckpt``). A reader filtered to some
event types needs a user's last ``max_len`` events *of those types*, which no seq arithmetic locates:
with the counts it reads, newest segment first, only the strides that hold them, and skips a segment
altogether once newer ones hold enough. Without them (a main part, or an older store) it reads the
user's whole run.
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
# rows per event-type checkpoint: a typed read over-reads at most one stride per user and segment at
# each end, small next to a short max_len (512); counts fit a uint8. 64 rows of a sidecar's up to eight
# types add about 0.2 bytes per row to its index.
TYPE_STRIDE = 64


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


@njit(cache=True)
def _type_checkpoints(codes, seq, starts, counts, stride, k):
    """Per user, per ``stride`` rows: the count of each of ``k`` type codes (uint8, flat, ``k`` per
    stride) and how far the stride's last seq lies past the previous stride's (the user's first seq for
    its first stride; uint32: small numbers, which zstd packs tightly), with per-user stride offsets."""
    n_ck = (counts + stride - 1) // stride
    offsets = np.zeros(len(starts) + 1, np.int64)
    for u in range(len(starts)):
        offsets[u + 1] = offsets[u] + n_ck[u]
    typ = np.zeros(offsets[-1] * k, np.uint8)
    last = np.empty(offsets[-1], np.uint32)
    for u in range(len(starts)):
        for j in range(n_ck[u]):
            lo = starts[u] + j * stride
            hi = min(lo + stride, starts[u] + counts[u])
            at = (offsets[u] + j) * k
            for i in range(lo, hi):
                typ[at + codes[i]] += 1
            last[offsets[u] + j] = seq[hi - 1] - (seq[starts[u]] if j == 0 else seq[lo - 1])
    return typ, last, offsets


def build(user_id: np.ndarray, seq: np.ndarray, ts: np.ndarray, types: np.ndarray | None = None) -> pa.Table:
    """The index of rows sorted by (user_id, seq); ``types``: their event types, for typed reads' cuts."""
    n = len(user_id)
    starts = group_starts(user_id)
    counts = np.diff(np.r_[starts, n]).astype(np.int64)
    ts_max = np.maximum.reduceat(ts, starts) if n else np.zeros(0, np.int64)
    ck, ck_off = _ts_checkpoints(np.ascontiguousarray(ts, np.int64), starts.astype(np.int64), counts, TS_STRIDE)
    cols = {"user_id": user_id[starts], "row_start": starts.astype(np.int64), "row_count": counts,
            "seq_start": seq[starts], "ts_max": ts_max,
            "ts_ckpt": pa.ListArray.from_arrays(pa.array(ck_off.astype(np.int32)), pa.array(ck))}
    if types is None:
        return pa.table(cols)
    kinds, codes = np.unique(np.asarray(types), return_inverse=True)
    typ, last, off = _type_checkpoints(codes.astype(np.int64), np.ascontiguousarray(seq, np.int64),
                                       starts.astype(np.int64), counts, TYPE_STRIDE, len(kinds))
    cols["seq_ckpt"] = pa.ListArray.from_arrays(pa.array(off.astype(np.int32)), pa.array(last))
    cols["type_ckpt"] = pa.ListArray.from_arrays(pa.array((off * len(kinds)).astype(np.int32)), pa.array(typ))
    return pa.table(cols).replace_schema_metadata({"types": ",".join(str(int(x)) for x in kinds)})


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
    if "type_ckpt" in t.column_names:
        sq, ty = t.column("seq_ckpt").combine_chunks(), t.column("type_ckpt").combine_chunks()
        # each stride's last seq relative to the user's first: the stored steps summed within each user
        steps, off = np.asarray(sq.values).astype(np.int64), np.asarray(sq.offsets).astype(np.int64)
        run = np.cumsum(steps)
        out["seq_ckpt"] = run - np.repeat(np.r_[0, run][off[:-1]], np.diff(off))
        out["type_ckpt_offsets"] = off  # strides per user
        out["type_ckpt"] = np.asarray(ty.values)
        out["types"] = np.array([int(x) for x in t.schema.metadata[b"types"].split(b",")], np.int64)
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


@njit(cache=True, nogil=True)
def _select_typed(iu, row_start, row_count, seq_start, users, seq_lo, seq_hi, need, sck, tck_off, tck, wanted,
                  stride):
    """``_select`` for a read filtered to event types (``wanted``: a 0/1 mask over the part's types) that
    needs each user's events below ``seq_hi[u]`` back to its ``need[u]``-th last wanted event below
    ``seq_lo[u]``: the user's rows are cut to whole strides, from the one holding that event to the first
    that may reach ``seq_hi``. ``need`` is lowered by the wanted events counted in strides wholly below
    ``seq_lo``, so an older segment is read only for what newer ones lack."""
    n, m, k = len(users), len(iu), len(wanted)
    ranks, r0, cnt, q0 = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    got = 0
    for u in range(n):
        p = np.searchsorted(iu, users[u])
        if need[u] <= 0 or p >= m or iu[p] != users[u] or seq_start[p] >= seq_hi[u]:
            continue
        a, c, q = row_start[p], row_count[p], seq_start[p]
        s0, s1 = tck_off[p], tck_off[p + 1]
        below_lo = below_hi = 0  # strides wholly below seq_lo and seq_hi: prefixes, their last seqs increasing
        while s0 + below_hi < s1 and q + sck[s0 + below_hi] < seq_hi[u]:
            below_hi += 1
        while below_lo < below_hi and q + sck[s0 + below_lo] < seq_lo[u]:
            below_lo += 1
        end = min(c, (below_hi + 1) * stride)  # the next stride may hold seqs below seq_hi too
        first, have = below_lo, 0
        while first > 0 and have < need[u]:
            first -= 1
            at = (s0 + first) * k
            for t in range(k):
                if wanted[t]:
                    have += tck[at + t]
        need[u] -= have
        lo = first * stride
        if end > lo:
            ranks[got], r0[got], cnt[got], q0[got] = u, a + lo, end - lo, q + lo
            got += 1
    return ranks[:got], r0[:got], cnt[:got], q0[:got]


_NONE = np.zeros(0, np.int64)


def typed(idx: dict) -> bool:
    """Whether a loaded index holds the event-type checkpoints ``select_typed`` cuts by."""
    return "type_ckpt" in idx


def select_typed(idx: dict, users, seq_lo, seq_hi, need: np.ndarray, types) -> tuple:
    """``select_runs`` for a read filtered to event ``types``, without a time window (events of those types
    outside a window would not count), that needs each user's events below ``seq_hi[u]`` back to the
    ``need[u]``-th last one of those types below ``seq_lo[u]`` (the smallest sealed count its examples point
    at): ``need`` (int64) is lowered in place by the events of those types this part surely holds below
    ``seq_lo``, so call it on segments newest first. Each user's rows are cut to whole ``TYPE_STRIDE``
    strides; a sidecar's seqs stay sparse (``q0`` is exact in a main part only). Needs ``typed(idx)``."""
    wanted = np.isin(idx["types"], np.asarray(list(types), np.int64)).astype(np.uint8)
    return _select_typed(idx["user_id"], idx["row_start"], idx["row_count"], idx["seq_start"], users,
                         np.asarray(seq_lo, np.int64), np.asarray(seq_hi, np.int64), need, idx["seq_ckpt"],
                         idx["type_ckpt_offsets"], idx["type_ckpt"], wanted, TYPE_STRIDE)


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
