"""The Fat Row baseline loader: what a team without late materialization would write.

PyArrow reads the needed list columns of the fat rows, vectorized NumPy applies the tenant's projection
(event types, window, last ``max_len``, alignment, padding), torch receives the padded tensors.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import Projection
from engine._ragged import range_indices


def needed_columns(proj: Projection) -> list:
    """The fat-row list columns a projection reads: its columns plus those its filters test."""
    return list(dict.fromkeys([*proj.columns, *(["action"] if proj.actions is not None else []),
                               *(["ts"] if proj.window_us is not None else [])]))


def project_lists(lists: dict, request_ts: np.ndarray, p: Projection) -> dict:
    """Apply a projection to fat-row list columns (vectorized NumPy): padded [B, max_len] + lengths."""
    first = lists[next(iter(lists))]
    offsets = np.asarray(first.offsets)
    offsets = offsets - offsets[0]
    flat = {c: np.asarray(pc.list_flatten(a)) for c, a in lists.items()}
    B, L = len(offsets) - 1, p.max_len
    lens = np.diff(offsets)
    keep = np.ones(int(offsets[-1]), bool)
    if p.actions is not None:
        keep &= np.isin(flat["action"], p.actions)
    if p.window_us is not None:
        keep &= flat["ts"] >= np.repeat(request_ts - p.window_us, lens)
    c = np.r_[0, np.cumsum(keep)]
    cnt = c[offsets[1:]] - c[offsets[:-1]]
    take = np.minimum(cnt, L)
    kept = np.flatnonzero(keep)
    first_kept = c[offsets[:-1]] + cnt - take  # index into ``kept`` of each row's first taken event
    src = kept[range_indices(first_kept, take)]
    row = np.repeat(np.arange(B), take)
    pos = range_indices(np.zeros(B, np.int64), take) + (np.repeat(L - take, take) if p.align == "right" else 0)
    out = {}
    for col in p.columns:
        a = np.full((B, L), p.pad_for(flat[col].dtype), flat[col].dtype)
        a[row, pos] = flat[col][src]
        out[col] = a
    out["lengths"] = take.astype(np.int32)
    return out


def fat_batches(paths, proj: Projection, batch_size: int):
    """Padded batches (dict of NumPy ``[B, max_len]`` plus ``lengths``) of fat-row Parquet files."""
    need = needed_columns(proj)
    for path in paths:
        for rb in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=[*need, "request_ts"]):
            yield project_lists({c: rb.column(c) for c in need}, rb.column("request_ts").to_numpy(), proj)
