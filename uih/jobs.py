"""One training job's read side, measured: late materialization (DALI or direct) vs the Fat Row loader.

Both start cold (page cache of their files dropped) and count the bytes the OS really read.
"""

from __future__ import annotations

import functools
import time

import pyarrow.parquet as pq

from engine import Projection, Reconstructor, UIHStore, parquet_files

from .fatrows import fat_batches
from .iostats import drop_cache, measure


@functools.cache
def warm_up_dali() -> None:
    """Load DALI's shared libraries and run one tiny pipeline, once per process, before any measured job:
    otherwise the first job counts a few hundred MB of library pages read from disk, and their load time,
    as its own."""
    import numpy as np
    import torch
    from nvidia.dali import fn, pipeline_def

    from dali_plugin import use_dali_host_pool
    use_dali_host_pool()  # before DALI's first host allocation, which fixes the setting for the process

    @pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def tiny():
        return fn.external_source(source=lambda: [np.zeros(4, np.int64)], batch=True)

    pipe = tiny()
    pipe.build()
    (out,) = pipe.run()
    torch.from_dlpack(out.as_tensor())  # the hand-off dali_plugin.UIHIterator makes


def warm_up_jobs(store_path, thin_files, fat_files, projections, batch_size=256, device="auto", rows=64) -> None:
    """Run each projection once, on the first ``rows`` thin rows and the first fat rows, through every loader
    a measurement will time (direct, DALI, Fat Row), before any of them is timed: the first job of a process
    otherwise pays for loading Numba's compiled kernels from its disk cache (the better part of a second on
    2 cores), DALI's libraries and the Fat Row path's first use, and would count them as its own time and
    bytes. Nothing measured later depends on this: each job drops the page cache of its files and opens the
    store afresh (an empty arena)."""
    import pyarrow as pa

    from .fatrows import fat_batches
    warm_up_dali()
    from dali_plugin import UIHIterator, uih_pipeline
    paths = parquet_files(thin_files)
    if not paths:
        return
    with pq.ParquetFile(paths[0]) as first:
        thin = pa.Table.from_batches([next(first.iter_batches(batch_size=rows))])
    fat = parquet_files(fat_files)[:1] if fat_files else []
    store = open_pinned(store_path)
    try:
        for p in projections:
            rec = Reconstructor(store, p, device=device)
            for _ in rec.iter_batches(thin, batch_size):
                pass
            it = UIHIterator(uih_pipeline(rec, thin, batch_size=batch_size))
            try:
                for _ in it:
                    pass
            finally:
                it.close()
            if fat:
                batches = fat_batches(fat, p, batch_size)
                next(batches, None)
                batches.close()
    finally:
        store.close()


def open_pinned(store_path):
    """A read-only view at the newest version: no log replay, no lock, only what reconstruction reads."""
    return UIHStore.open(store_path, version=UIHStore.versions(store_path)[-1])


def late_job(store_path, thin_source, proj: Projection, batch_size=256, via_dali=True, pushdown=Reconstructor.PUSHDOWN,
             prefetch=2, affinity=True, device="auto", workers=0, pipeline_options=None) -> dict:
    """One measured job over ``thin_source``: directly through ``iter_batches`` or through the DALI
    pipeline (``pipeline_options``: more keyword arguments for ``uih_pipeline``, ``PipelineOptions``
    fields such as ``padding``)."""
    if via_dali:
        warm_up_dali()
    drop_cache(store_path, *parquet_files(thin_source))
    n = 0
    dali_device = None
    with measure() as io:
        t = time.perf_counter()
        store = open_pinned(store_path)
        rec = Reconstructor(store, proj, device=device, prefetch=prefetch, pushdown=pushdown,
                            cache_bytes=(1 << 30) if affinity else 0)
        if not affinity:  # no reuse across batches at all: no chunking and no decoded-group cache
            store.view.cache.budget = 0
        if via_dali:
            from dali_plugin import UIHIterator, uih_pipeline
            it = UIHIterator(uih_pipeline(rec, thin_source, batch_size=batch_size, workers=workers,
                                          **(pipeline_options or {})))
            dali_device = it.pipe.device
            try:
                for b in it:
                    n += int(b["lengths"].shape[0])
            finally:
                it.close()
        else:
            for b in rec.iter_batches(thin_source, batch_size, affinity=affinity):
                n += b.size
        if rec.device == "cuda":  # kernels run asynchronously: the job ends when the last batch is ready
            import cupy
            cupy.cuda.runtime.deviceSynchronize()
        seconds = time.perf_counter() - t
        store.close()
    return {"examples": n, "seconds": seconds, "read_bytes": io["read_bytes"], "rchar": io["rchar"],
            "events_read": rec.stats["events_read"], "device": rec.device, "dali_device": dali_device}


def ran_on(jobs) -> str:
    """What the late-materialization jobs really ran on, read from the objects they built."""
    devices = sorted({str(j.get("device", "unknown")) for j in jobs})
    dali = sorted({j["dali_device"] for j in jobs if j.get("dali_device")})
    return (f"reconstructor on {' and '.join(devices)}" + (f", DALI pipeline on {' and '.join(dali)}" if dali else "")
            if jobs else "no job ran")


def fat_job(fat_source, proj: Projection, batch_size=256, device="cpu") -> dict:
    """The same job through the Fat Row loader, tensors handed to torch like the late path's (and copied to
    ``device``, where a GPU training job reading Fat Rows needs them)."""
    import torch
    paths = parquet_files(fat_source)
    drop_cache(*paths)
    n = 0
    with measure() as io:
        t = time.perf_counter()
        for out in fat_batches(paths, proj, batch_size):
            tensors = {k: torch.from_numpy(v).to(device) for k, v in out.items()}
            n += int(tensors["lengths"].shape[0])
        if device != "cpu":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
    return {"examples": n, "seconds": seconds, "read_bytes": io["read_bytes"], "rchar": io["rchar"]}


def thin_column_bytes(thin_source, columns) -> int:
    """Compressed bytes of the named columns in thin-row Parquet files (the thin-row part of a floor)."""
    total = 0
    for path in parquet_files(thin_source):
        md = pq.ParquetFile(path).metadata
        for g in range(md.num_row_groups):
            rg = md.row_group(g)
            for i in range(rg.num_columns):
                col = rg.column(i)
                if col.path_in_schema.split(".")[0] in columns:
                    total += col.total_compressed_size
    return total


def file_list(folder) -> list:
    return [str(p) for p in parquet_files(folder)]
