"""Reconstruction speed against the machine's limits: the kernels alone, end to end, a memory copy of
the same bytes and a peer padding kernel (aten), for one batch of requests over every user.

Shared by ``uih bench`` (its scaling section) and ``bench/bench_reconstruct.py``.
"""

from __future__ import annotations

import time

import numpy as np

import engine

from .fmt import median_time, median_times
from .workload import DAY_US

COLUMNS = ["item_id", "action", "ts"]  # 20 bytes per event


def requests(rng, users: int, batch: int) -> dict:
    """``batch`` requests of random users of a ``synthetic_store``, after its last event."""
    return {"user_id": rng.integers(0, users, batch), "request_ts": np.full(batch, 31 * DAY_US)}


def assembly_speed(store, lengths, batch: int, users: int) -> list:
    """GB/s of output per ``max_len``: the two kernels on a prepared chunk (``assembly``), a whole
    ``reconstruct`` (``end_to_end``), a 2-thread ``torch`` copy of the output bytes from a cache-resident
    source (``copy``) and from memory (``copy_mem``), and aten's jagged-to-padded peer."""
    import torch
    rng = np.random.default_rng(1)
    torch.set_num_threads(2)
    thin = store.snapshot(requests(rng, users, batch))
    rows = []
    for L in lengths:
        p = engine.Projection(COLUMNS, max_len=L)
        rec = engine.Reconstructor(store, p, device="cpu")
        # the kernels alone: prepare one chunk, then time only its assembly (private steps, on purpose)
        chunk = rec._prepare(rec._plan(rec._checker.table(thin)))
        out = rec._assemble(chunk, 0, chunk.n)
        nbytes = sum(out[c].nbytes for c in p.columns)
        src = torch.empty(nbytes, dtype=torch.uint8)
        src.fill_(1)
        dst = torch.empty_like(src)
        # each warm, in runs of its own calls, taken in turn so that the ratios to the copies hold on a
        # machine whose speed swings
        t_asm, t_e2e, t_copy, t_copy_mem = median_times(
            [lambda: rec._assemble(chunk, 0, chunk.n), lambda: rec.reconstruct(thin), lambda: dst.copy_(src),  # noqa: B023
             _copy_from_memory(dst)], repeat=5, budget=0.3, rounds=5, warm_s=0.2)
        lens = torch.from_numpy(out["lengths"].astype(np.int64))
        offsets = torch.zeros(batch + 1, dtype=torch.int64)
        torch.cumsum(lens, 0, out=offsets[1:])
        vals = [torch.from_numpy(np.concatenate([out[c][b, :out["lengths"][b]] for b in range(batch)]))
                .reshape(-1, 1) for c in p.columns]
        aten = torch.ops.aten._jagged_to_padded_dense_forward
        t_aten = median_time(lambda: [aten(v, [offsets], [L], 0.0) for v in vals], repeat=5, budget=0.3)  # noqa: B023
        gb = nbytes / 1e9
        rows.append({"max_len": L, "batch": batch, "bytes": nbytes, "assembly_gbps": gb / t_asm,
                     "end_to_end_gbps": gb / t_e2e, "copy_gbps": gb / t_copy, "copy_mem_gbps": gb / t_copy_mem,
                     "aten_gbps": gb / t_aten, "vs_copy": t_copy / t_asm, "vs_aten": t_aten / t_asm,
                     "e2e_vs_copy": t_copy / t_e2e, "e2e_vs_copy_mem": t_copy_mem / t_e2e})
    return rows


def _copy_from_memory(dst, span: int = 1 << 30):
    """A 2-thread copy into ``dst`` from a source not in any cache: each call reads the next slice of a
    ``span``-byte buffer (larger than this machine's last-level cache), as reconstruction reads decoded
    columns that the previous batches pushed out of cache."""
    import torch
    n = dst.numel()
    k = max(span // max(n, 1), 2)
    src = torch.ones(k * n, dtype=torch.uint8)
    at = [0]

    def copy():
        dst.copy_(src[at[0] * n:(at[0] + 1) * n])
        at[0] = (at[0] + 1) % k
    return copy


def _cold(rec) -> None:
    """Forget every decoded row group (the store's cache, and the reconstructor's arena where it has one)."""
    rec.store.view.clear_cache()
    getattr(rec, "clear_cache", lambda: None)()


def _prepare_times(rec, tables: list, repeat: int, stage_repeat: int) -> tuple:
    """Median seconds for ``rec`` to prepare every chunk of ``tables``: ``(disk, fresh, staging)``, with the
    page cache dropped and no row group decoded, with the page cache warm and none decoded, and with all
    of them decoded (staging alone). Their differences are the reads and the decoding."""
    from .iostats import drop_cache

    def prepare(disk: bool, decoded: bool):
        def run():
            if disk:
                drop_cache(rec.store.root)
            if not decoded:
                _cold(rec)
            for t in tables:
                rec._prepare(rec._plan(t))  # private steps, on purpose: each stage timed alone
        return run
    return (median_time(prepare(True, False), repeat=repeat), median_time(prepare(False, False), repeat=repeat),
            median_time(prepare(False, True), repeat=stage_repeat))


def where_time_goes(store, lengths, batch: int, users: int, repeat: int = 5) -> list:
    """Milliseconds per chunk of ``batch`` requests, by stage: ``read`` (page cache dropped vs warm),
    ``decode`` (Parquet to arrays: fresh decoded cache vs warm), ``staging`` (everything else a chunk's
    preparation does with every row group already decoded), ``kernels`` (slicing + assembly, of which
    ``slicing`` alone where the kernels expose it). Medians; ``events`` is what one chunk reads."""
    rng = np.random.default_rng(1)
    thin = store.snapshot(requests(rng, users, batch))
    rows = []
    for L in lengths:
        rec = engine.Reconstructor(store, engine.Projection(COLUMNS, max_len=L), device="cpu", prefetch=0)
        t = rec._checker.table(thin)
        t_disk, t_decode, t_stage = _prepare_times(rec, [t], repeat, 2 * repeat)
        chunk = rec._prepare(rec._plan(t))
        t_kernels = median_time(lambda: rec._assemble(chunk, 0, chunk.n), repeat=2 * repeat)  # noqa: B023
        row = {"max_len": L, "events": int(chunk.events_read), "read_ms": 1e3 * max(t_disk - t_decode, 0.0),
               "decode_ms": 1e3 * max(t_decode - t_stage, 0.0), "staging_ms": 1e3 * t_stage,
               "kernels_ms": 1e3 * t_kernels}
        if hasattr(chunk, "runs"):  # the run-based kernels: time the slicing alone too
            sel = np.empty((chunk.n, 5), np.int64)
            row["slicing_ms"] = 1e3 * median_time(lambda: rec.backend.slice(  # noqa: B023
                chunk.src, chunk.runs, chunk.tail, rec._filter, chunk.examples, L, sel), repeat=2 * repeat)  # noqa: B023
        rows.append(row)
    return rows


def loader_speed(store, folder, max_len: int, batch: int, users: int, batches: int = 4, repeat: int = 5) -> dict:
    """Examples/s of one pass over the same requests: ``iter_batches`` on thin-row Parquet (decoded
    cache cold at the start of each pass; prefetch off and on) against the Fat Row loader on fat-row
    Parquet (``uih.fatrows``), page cache warm for both; ``identical`` checks every array."""
    import pyarrow.parquet as pq

    from .fatrows import fat_batches
    rng = np.random.default_rng(3)
    req = requests(rng, users, batch * batches)
    thin_path, fat_path = f"{folder}/thin-{max_len}.parquet", f"{folder}/fat-{max_len}.parquet"
    pq.write_table(store.snapshot(req), thin_path)
    pq.write_table(store.snapshot(req, materialize=True, max_len=max_len), fat_path)
    p = engine.Projection(COLUMNS, max_len=max_len)
    # one batch per chunk: with several chunks per pass, prefetch has a next chunk to prepare
    rec = engine.Reconstructor(store, p, device="cpu", chunk_batches=1)

    def late(prefetch, keep=False):
        _cold(rec)
        out = []
        for b in rec.iter_batches(thin_path, batch, prefetch=prefetch):
            if keep:
                out.append(dict(b))
        return out

    def fat(keep=False):
        out = []
        for b in fat_batches([fat_path], p, batch):
            if keep:
                out.append(b)
        return out

    a, b = late(2, keep=True), fat(keep=True)
    identical = len(a) == len(b) and all(np.array_equal(x[c], y[c]) for x, y in zip(a, b)
                                         for c in [*COLUMNS, "lengths"])
    del a, b
    n = batch * batches
    t_fat = median_time(fat, repeat=repeat)
    t_off = median_time(lambda: late(0), repeat=repeat)
    t_on = median_time(lambda: late(2), repeat=repeat)
    return {"max_len": max_len, "examples": n, "fat_eps": n / t_fat, "late_prefetch_off_eps": n / t_off,
            "late_prefetch_on_eps": n / t_on, "identical": bool(identical)}


def dali_epochs(store_path, thin, proj, workers: int, epochs: int = 3, batch_size: int = 256) -> dict:
    """Epochs of the DALI CPU pipeline over ``thin`` with reconstruction in process (``workers=0``) or in
    ``workers`` processes: ``startup_s`` (build the pipeline, spawn the workers, run the first epoch, cold)
    and ``epoch_s``, the median of the later epochs (what a training loop sees from then on)."""
    from dali_plugin import UIHIterator, uih_pipeline

    from .jobs import open_pinned, warm_up_dali

    warm_up_dali()
    store = open_pinned(store_path)
    t = time.perf_counter()
    it = UIHIterator(uih_pipeline(engine.Reconstructor(store, proj, device="cpu"), thin, batch_size=batch_size,
                                  workers=workers))
    build = time.perf_counter() - t
    times = []
    try:
        for _ in range(max(epochs, 2)):
            t, n = time.perf_counter(), 0
            for b in it:
                n += int(b["lengths"].shape[0])
            times.append(time.perf_counter() - t)
    finally:
        it.close()
        store.close()
    return {"workers": workers, "examples": n, "startup_s": build + times[0], "epoch_s": float(np.median(times[1:]))}


def tenant_stages(store_path, thin_source, proj, batch_size: int = 256, repeat: int = 3) -> dict:
    """Seconds of one pass over a tenant's thin rows (``iter_batches``' chunks and batches, prefetch off),
    by stage, so the next bottleneck is visible. Medians of ``repeat``:

    * ``thin``: reading the thin rows' Parquet into chunks (page cache warm);
    * ``read``: preparing every chunk with the page cache dropped, minus with it warm (both with every
      decoded row group forgotten): the store's file reads;
    * ``decode``: with every decoded row group forgotten, minus with all of them decoded: Parquet pages to
      columns in the arena;
    * ``staging``: preparing every chunk with all row groups decoded (validation, runs, tails);
    * ``slicing`` and ``assembly``: the kernels, per batch;
    * ``to_torch``: handing every batch to torch (DLPack).
    """
    import torch  # noqa: F401  loaded before any timing: the first to_torch would pay for the import

    from .jobs import open_pinned
    store = open_pinned(store_path)
    rec = engine.Reconstructor(store, proj, device="cpu", prefetch=0)
    rows = batch_size * rec.chunk_batches  # iter_batches' chunks (private steps, on purpose: each timed alone)

    def thin():
        t = rec.read_thin(thin_source)
        return [t.slice(a, rows) for a in range(0, t.num_rows, rows)]
    chunks = thin()
    t_thin = median_time(thin, repeat=repeat)
    t_disk, t_fresh, t_stage = _prepare_times(rec, chunks, repeat, repeat)
    t_slice = t_asm = t_torch = 0.0
    events = out_bytes = n_batches = 0
    for t in chunks:  # one chunk in use at a time, as in a job
        c = rec._prepare(rec._plan(t))
        spans = [(a, min(a + batch_size, c.n)) for a in range(0, c.n, batch_size)]

        def slicing():
            for a, b in spans:  # noqa: B023
                ex = type(c.examples)(*(v[a:b] for v in c.examples))  # noqa: B023
                rec.backend.slice(c.src, c.runs, c.tail, rec._filter, ex, proj.max_len,  # noqa: B023
                                  np.empty((b - a, 5), np.int64))

        def assembly():
            for a, b in spans:  # noqa: B023
                rec._assemble(c, a, b)  # noqa: B023
        t_slice += median_time(slicing, repeat=repeat)
        t_asm += median_time(assembly, repeat=repeat)
        for a, b in spans:  # DLPack hands over each array in O(1): time it batch by batch
            out = rec._assemble(c, a, b)
            t0 = time.perf_counter()
            out.to_torch()
            t_torch += time.perf_counter() - t0
            out_bytes += sum(out[k].nbytes for k in proj.columns)
        events += c.events_read
        n_batches += len(spans)
    store.close()
    return {"examples": sum(t.num_rows for t in chunks), "batches": n_batches, "chunks": len(chunks),
            "events": int(events), "output_bytes": int(out_bytes), "thin_s": t_thin,
            "read_s": max(t_disk - t_fresh, 0.0), "decode_s": max(t_fresh - t_stage, 0.0), "staging_s": t_stage,
            "slicing_s": t_slice, "assembly_s": max(t_asm - t_slice, 0.0), "to_torch_s": t_torch}
