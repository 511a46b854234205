"""The Fat Row baseline loader: what a team without late materialization would write.

PyArrow reads the needed list columns of the fat rows, vectorized NumPy applies the tenant's projection
(event types, window, last ``max_len``, alignment, padding), torch receives the padded tensors.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import Projection

#: rows taken from a shuffled window at a time
_TAKE_ROWS = 4096


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``arange(s, s + n)`` for each (s, n), concatenated (int64)."""
    ends = np.cumsum(counts, dtype=np.int64)
    return np.arange(ends[-1] if len(ends) else 0, dtype=np.int64) + np.repeat(starts - (ends - counts), counts)


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
    src = kept[_ranges(first_kept, take)]
    row = np.repeat(np.arange(B), take)
    pos = _ranges(np.zeros(B, np.int64), take) + (np.repeat(L - take, take) if p.align == "right" else 0)
    out = {}
    for col in p.columns:
        a = np.full((B, L), p.pad_for(flat[col].dtype), flat[col].dtype)
        a[row, pos] = flat[col][src]
        out[col] = a
    out["lengths"] = take.astype(np.int32)
    return out


def fat_batches(paths, proj: Projection, batch_size: int, shuffle_window: int | None = None, seed: int = 0):
    """Padded batches (dict of NumPy ``[B, max_len]`` plus ``lengths``) of fat-row Parquet files.

    ``shuffle_window``: None reads the rows in file order; an int shuffles them as a fat-row loader would
    (``window_shuffle``, fixed by ``seed``).
    """
    need = needed_columns(proj)
    columns = [*need, "request_ts"]
    if shuffle_window is None:
        batches = (rb for path in paths
                   for rb in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns))
    else:
        batches = _batches_of(window_shuffle(paths, columns, shuffle_window, seed), batch_size)
    for rb in batches:
        yield project_lists({c: rb.column(c) for c in need}, rb.column("request_ts").to_numpy(), proj)


def _batches_of(batches, rows: int):
    """Record batches of exactly ``rows`` rows (the last may be shorter), each one contiguous batch:
    project_lists reads one list array per column."""
    held = None
    for b in batches:
        held = pa.Table.from_batches([b]) if held is None else pa.concat_tables([held, pa.Table.from_batches([b])])
        while held.num_rows >= rows:
            yield held.slice(0, rows).combine_chunks().to_batches()[0]
            held = held.slice(rows)
    if held is not None and held.num_rows:
        yield held.combine_chunks().to_batches()[0]


def window_shuffle(paths, columns: list, window: int, seed: int = 0):
    """Record batches of the fat rows' ``columns`` in a window shuffle: the files' row groups in a random
    order (the fat rows' unit of reading, as blocks are the thin rows'), then a random permutation within
    each ``window`` rows of that sequence. Holds one window of fat rows (the projected columns) at a time."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"shuffle_window must be an int >= 1, got {window!r}")
    rng = np.random.default_rng(seed)
    files = [pq.ParquetFile(p) for p in paths]
    groups = [(f, g) for f in files for g in range(f.metadata.num_row_groups)]
    pending, have = [], 0

    def permuted(t: pa.Table):
        perm = rng.permutation(t.num_rows)
        for a in range(0, t.num_rows, _TAKE_ROWS):  # take in pieces: one copy of the window at a time is enough
            yield from t.take(pa.array(perm[a:a + _TAKE_ROWS])).to_batches()

    for i in rng.permutation(len(groups)):
        f, g = groups[i]
        t = f.read_row_group(g, columns=columns)
        pending.append(t)
        have += t.num_rows
        while have >= window:
            w = pa.concat_tables(pending)
            yield from permuted(w.slice(0, window))
            rest = w.slice(window)
            pending, have = [rest], rest.num_rows
    if have:
        yield from permuted(pa.concat_tables(pending))
