"""One training job's read side, measured: late materialization through DALI vs the Fat Row loader.

Both start cold (page cache of their files dropped) and count the bytes the OS really read. The fat
loader is the baseline a team would write: PyArrow reads the needed list columns of the fat rows, NumPy
applies the tenant's projection, and torch receives the padded tensors.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import _manifest
from ._iostats import drop_cache, measure
from ._projection import Projection
from ._ranges import range_indices
from ._reconstruct import PUSHDOWN, Reconstructor
from ._store import UIHStore
from ._thin import _paths


def _open_pinned(store_path):
    """A read-only view at the newest version: no log replay, no lock, only what reconstruction reads."""
    return UIHStore.open(store_path, version=_manifest.versions(store_path)[-1])


def late_job(store_path, thin_source, proj: Projection, batch_size=256, via_dali=True, pushdown=PUSHDOWN,
             prefetch=2, affinity=True, device="auto", workers=0) -> dict:
    drop_cache(store_path, *_paths(thin_source))
    n = 0
    with measure() as io:
        t = time.perf_counter()
        store = _open_pinned(store_path)
        rec = Reconstructor(store, proj, device=device, prefetch=prefetch, pushdown=pushdown)
        if not affinity:  # no reuse across batches at all: no chunking and no decoded-group cache
            store.view.cache.budget = 0
        if via_dali:
            from dali_plugin import UIHIterator, uih_pipeline
            it = UIHIterator(uih_pipeline(rec, thin_source, batch_size=batch_size, workers=workers))
            try:
                for b in it:
                    n += int(b["lengths"].shape[0])
            finally:
                it.close()
        else:
            for b in rec.iter_batches(thin_source, batch_size, affinity=affinity):
                n += b.size
        seconds = time.perf_counter() - t
        store.close()
    return {"examples": n, "seconds": seconds, "read_bytes": io["read_bytes"], "rchar": io["rchar"],
            "events_read": rec.stats["events_read"]}


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


def fat_job(fat_source, proj: Projection, batch_size=256) -> dict:
    import torch
    paths = _paths(fat_source)
    drop_cache(*paths)
    need = list(dict.fromkeys([*proj.columns, *(["action"] if proj.actions is not None else []),
                               *(["ts"] if proj.window_us is not None else [])]))
    n = 0
    with measure() as io:
        t = time.perf_counter()
        for path in paths:
            for rb in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=[*need, "request_ts"]):
                lists = {c: rb.column(c) for c in need}
                out = project_lists(lists, rb.column("request_ts").to_numpy(), proj)
                tensors = {k: torch.from_numpy(v) for k, v in out.items()}
                n += int(tensors["lengths"].shape[0])
        seconds = time.perf_counter() - t
    return {"examples": n, "seconds": seconds, "read_bytes": io["read_bytes"], "rchar": io["rchar"]}


def thin_column_bytes(thin_source, columns) -> int:
    """Compressed bytes of the named columns in thin-row Parquet files (the thin-row part of a floor)."""
    total = 0
    for path in _paths(thin_source):
        md = pq.ParquetFile(path).metadata
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            for i in range(rg.num_columns):
                col = rg.column(i)
                if col.path_in_schema.split(".")[0] in columns:
                    total += col.total_compressed_size
    return total


def file_list(folder) -> list:
    return [str(p) for p in _paths(folder)]
