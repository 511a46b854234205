"""Serving-time snapshots: thin rows (versioned pointer + physical tail) and the Fat Row baseline."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .._errors import SchemaError
from .._ragged import lookup, offsets_of, range_indices


def _list(values: np.ndarray, lengths: np.ndarray, large=False) -> pa.Array:
    offsets = offsets_of(lengths)
    if large:
        return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))


def _passthrough(requests: pa.Table, produced: list) -> dict:
    cols = {}
    for name in requests.column_names:
        if name in ("user_id", "request_ts"):
            continue
        if name in produced:
            raise SchemaError(f"request column {name!r} clashes with a snapshot output column; rename it")
        cols[name] = requests.column(name)
    return cols


def _tails(mutable, uid: np.ndarray):
    """Per request, the (start, length) of its user's mutable events in the sorted mutable data."""
    users, starts, counts, _ = mutable.runs()
    return lookup(users, starts, uid), lookup(users, counts, uid)


def thin_rows(requests, uid, rts, store_id, version, counts, mutable, schema) -> pa.Table:
    data = mutable.sorted()
    t_start, t_len = _tails(mutable, uid)
    idx = range_indices(t_start, t_len)
    imm_hw = lookup(counts[0], counts[1], uid)
    out_names = ["user_id", "request_ts", "store_id", "version", "imm_hw", "tail_seq", "tail_ts",
                 *(f"tail_{c}" for c in schema.columns)]
    cols = _passthrough(requests, out_names)
    cols.update({"user_id": pa.array(uid), "request_ts": pa.array(rts),
                 "store_id": pa.DictionaryArray.from_arrays(np.zeros(len(uid), np.int32), [store_id]),
                 "version": pa.array(np.full(len(uid), version, np.int64)), "imm_hw": pa.array(imm_hw)})
    for c in ["seq", "ts", *schema.columns]:
        cols[f"tail_{c}"] = _list(data[c][idx], t_len)
    return pa.table(cols)


def fat_rows(requests, uid, rts, view, mutable, schema, max_len: int) -> pa.Table:
    """The last ``max_len`` visible events of each request, copied into list columns."""
    data = mutable.sorted()
    t_start, t_len = _tails(mutable, uid)
    take_t = np.minimum(t_len, max_len)
    t_from = t_start + t_len - take_t
    users, counts = view.user_counts()
    imm = lookup(users, counts, uid)
    take_i = np.minimum(imm, max_len - take_t)
    # read each user's immutable events once, as far back as its most demanding request needs
    req_users, inv = np.unique(uid, return_inverse=True)
    lo = np.full(len(req_users), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(lo, inv, imm - take_i)
    hi = lookup(users, counts, req_users)
    cols_all = ["seq", "ts", *schema.columns]
    buf = view.gather(req_users, cols_all, seq_lo=lo, seq_hi=hi)
    i_from = buf.offsets[inv] + (imm - take_i - lo[inv])
    # interleave per request: immutable part then tail part
    n = take_i + take_t
    src_imm = range_indices(i_from, take_i)
    src_tail = range_indices(t_from, take_t)
    row_off = offsets_of(n)
    is_imm = np.zeros(int(n.sum()), bool)
    is_imm[range_indices(row_off[:-1], take_i)] = True
    out_names = ["user_id", "request_ts", *cols_all]
    cols = _passthrough(requests, out_names)
    cols.update({"user_id": pa.array(uid), "request_ts": pa.array(rts)})
    for c in cols_all:
        v = np.empty(len(is_imm), schema.dtype(c))
        v[is_imm] = buf.columns[c][src_imm]
        v[~is_imm] = data[c][src_tail]
        cols[c] = _list(v, n, large=True)
    return pa.table(cols)
