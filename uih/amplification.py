"""Where a tenant's read bytes above the floor go: the over-read broken down by cause.

The total is what the OS counted for the job (``/proc/self/io``); the causes are measured on the store's
files as they lie on disk (Parquet column-chunk sizes from the footers, index and footer sizes from the
manifest), for exactly the sealed events the tenant needs (the floor's events):

- ``thin``: the thin-row columns the job reads, counted by the OS in a job reading only them (the floor
  holds their compressed size; the rest is readahead into the neighbouring request columns);
- ``metadata``: Parquet footers and user indexes of the segment parts the job opens;
- ``needed``: the needed columns of the needed rows, at their share of each column chunk;
- ``filter_columns``: columns read only to filter (event type, ts for a window, a sidecar's seq) on those rows;
- ``row_groups``: the rest of the row groups that hold a needed row (other users' rows, older events),
  in the needed and filter columns: the cost of reading whole row groups;
- ``page_rounding``: the OS reads whole 4 KiB pages: the rest of the first and last page of each
  contiguous run of column chunks read from a row group holding a needed row;
- ``beyond``: the remainder of the OS count: row groups holding no needed row, read because the reader
  cannot cut the seq range finer (event types, time windows whose events it must scan), and readahead.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from .iostats import drop_cache, measure
from .jobs import open_pinned


def thin_read(thin_files, columns) -> int:
    """OS-counted bytes of reading only ``columns`` of the thin-row files, from a cold page cache."""
    drop_cache(*thin_files)
    with measure() as io:
        for path in thin_files:
            pq.read_table(path, columns=columns)
    return int(io["read_bytes"])


PAGE = 4096


def _page_rounding(spans: list) -> int:
    """Bytes of whole pages around each contiguous run of the byte ranges ``spans`` beyond the ranges."""
    total = 0
    runs = []
    for a, b in sorted(spans):
        if runs and a <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], b)
        else:
            runs.append([a, b])
    for a, b in runs:
        total += (-(-b // PAGE) - a // PAGE) * PAGE - (b - a)
    return total


def read_causes(store_path, proj, needed_keys: np.ndarray, total: int, thin_files, thin_columns) -> dict:
    """Bytes per cause for a job that read ``total`` bytes (OS count) of ``thin_columns`` of ``thin_files``.

    ``needed_keys``: ``rank << 32 | seq`` of each needed sealed event, rank over the store's sorted users.
    """
    store = open_pinned(store_path)
    users, _ = store.view.user_counts()
    etype = store.schema.event_type_column
    cols = [c for c in dict.fromkeys(["ts", *store.schema.columns]) if c in proj.columns]
    filt = ([etype] if proj.actions is not None and etype not in cols else []) + \
        (["ts"] if proj.window_us is not None and "ts" not in cols else [])
    out = dict.fromkeys(("metadata", "needed", "filter_columns", "row_groups", "page_rounding"), 0)
    for seg in store.segments:
        part = seg.part_for(proj.actions)
        out["metadata"] += part.footer_bytes + part.index_bytes
        pf = pq.ParquetFile(store.root / part.file)
        ids = pf.read(columns=["user_id", "seq"])
        keys = np.searchsorted(users, ids["user_id"].to_numpy()).astype(np.int64) << 32 | ids["seq"].to_numpy()
        hit = np.isin(keys, needed_keys)
        md = pf.metadata
        names = [md.schema.column(i).name for i in range(md.num_columns)]
        extra = filt + (["seq"] if part.name != "main" else [])
        start = 0
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            n_hit = int(hit[start:start + rg.num_rows].sum())
            start += rg.num_rows
            if not n_hit:
                continue
            share = n_hit / rg.num_rows
            spans = []
            for c in (*cols, *extra):
                chunk = rg.column(names.index(c))
                size = chunk.total_compressed_size
                out["needed" if c in cols else "filter_columns"] += size * share
                out["row_groups"] += size * (1 - share)
                first = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
                spans.append((first, first + size))
            out["page_rounding"] += _page_rounding(spans)
    store.close()
    out = {k: int(v) for k, v in out.items()}
    out["thin"] = thin_read(thin_files, thin_columns)
    out["beyond"] = int(total - sum(out.values()))
    return out


def planned_bytes(store_path, thin_files, proj, batch_size: int = 256) -> dict:
    """What a job would read of the store if it decoded only the rows its plans name (each once per job):
    per segment part it plans, the planned rows' share of each column chunk it reads, plus the footers and
    indexes of those parts. An estimate for readers of row ranges (page-level reads): whole pages round it
    up. ``rows``: the rows planned, each counted once."""
    from engine import Reconstructor

    store = open_pinned(store_path)
    rec = Reconstructor(store, proj, device="cpu", prefetch=0)
    thin = rec.read_thin(thin_files)
    rows = batch_size * rec.chunk_batches  # iter_batches' chunks (a private step, on purpose: plans only)
    marks: dict = {}
    for a in range(0, thin.num_rows, rows):
        for p in rec._plan(thin.slice(a, rows)).reads.parts:
            key = (p.s, p.part)
            if key not in marks:
                marks[key] = np.zeros(int(p.bstart[-1]), bool)
            for lo, n in zip(p.lo.tolist(), p.num.tolist()):
                marks[key][lo:lo + n] = True
    out = {"rows": 0, "data": 0, "metadata": 0}
    for (s, part), mask in marks.items():
        meta = store.view.segments[s][part]
        out["metadata"] += meta.get("footer_bytes", 0) + meta["index_bytes"]
        out["rows"] += int(mask.sum())
        md = store.view.parquet(s, part).metadata
        names = [md.schema.column(j).name for j in range(md.num_columns)]
        start = 0
        for g in range(md.num_row_groups):
            n = md.row_group(g).num_rows
            share = mask[start:start + n].mean() if n else 0.0
            start += n
            out["data"] += share * sum(md.row_group(g).column(names.index(c)).total_compressed_size
                                       for c in rec._read if c in names)
    store.close()
    return {k: int(v) for k, v in out.items()}
