"""Ray Data reconstruction (``ray_plugin.uih_dataset``) against in-process ``iter_batches``.

Measures, for one epoch over the same thin rows: examples/s in process (Numba on 1 and 2 threads) and
through Ray with 1 and 2 reconstruct actors (time to the first batch, i.e. actor start, and the steady
rate after it), Ray's overhead per batch, and the events read from storage summed over the actors with
user affinity (thin rows split by user hash) and without it (contiguous row ranges, as a plain Parquet
read splits them). Thin rows are written as ``--files`` Parquet files (a day each), every user in every
file, as a serving log is.

    python bench/bench_ray.py [--users 1000] [--history 2000] [--requests 32000] [--max-len 1024]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

import engine
from ray_plugin import uih_dataset
from ray_plugin._actor import Reconstruct
from ray_plugin._shards import ShardPlan, StoreRef
from uih.fmt import fmt_bytes, machine_line, table, write_json
from uih.workload import synthetic_store

RESULTS = Path(__file__).resolve().parent / "results"
BYTES_PER_EVENT = 8 + 4 + 8  # item_id, action, ts as decoded


def in_process(store, thin, proj, batch, threads, repeat=3):
    numba.set_num_threads(threads)
    times, n = [], 0
    for _ in range(repeat + 1):  # the first is a warm-up (JIT cache load, page cache)
        rec = engine.Reconstructor(store, proj, device="cpu")
        t = time.perf_counter()
        n = sum(b.size for b in rec.iter_batches(thin, batch))
        times.append(time.perf_counter() - t)
    best = float(np.median(times[1:]))
    return {"examples": n, "seconds": best, "examples_per_s": n / best, "events_read": rec.stats["events_read"],
            "batches": -(-n // batch)}


def no_ray_twin(store, folder, proj, batch, shards, repeat=3):
    """The actors' exact work (same user shards, same calls) in this process, one Numba thread: Ray's
    overhead is the difference."""
    numba.set_num_threads(1)
    columns = (*engine.Reconstructor(store, proj, device="cpu").thin_columns,)
    times = []
    for _ in range(repeat + 1):
        actor = Reconstruct(StoreRef.of(store), ShardPlan(str(folder), columns, shards), proj, batch)
        t = time.perf_counter()
        out = list(actor(pa.table({"shard": list(range(shards))})))
        times.append(time.perf_counter() - t)
    best = float(np.median(times[1:]))
    n = sum(len(b["lengths"]) for b in out)
    return {"examples": n, "seconds": best, "examples_per_s": n / best, "batches": len(out),
            "events_read": actor.rec.stats["events_read"]}


def ray_epoch(ds):
    """One epoch: time to the first batch (actor start, first shard), then the steady rate."""
    t0 = time.perf_counter()
    first = n = n0 = read = batches = 0
    for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
        if not first:
            first, n0 = time.perf_counter(), len(b["lengths"])
        n += len(b["lengths"])
        read += int(b["events_read"].sum())
        batches += 1
    end = time.perf_counter()
    return {"examples": n, "seconds": end - t0, "startup_s": first - t0, "steady_s": end - first, "first": n0,
            "steady_examples_per_s": (n - n0) / max(end - first, 1e-9), "examples_per_s": n / (end - t0),
            "events_read": read, "batches": batches}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--history", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=32000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = {}
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as d:
        store = synthetic_store(Path(d) / "store", a.users, a.history)
        rng = np.random.default_rng(0)
        thin = store.snapshot({"user_id": rng.integers(0, a.users, a.requests),
                               "request_ts": np.full(a.requests, 10**17),
                               "example_id": np.arange(a.requests, dtype=np.int64)})
        folder = Path(d) / "thin"
        folder.mkdir()
        step = -(-a.requests // a.files)
        for i in range(a.files):
            pq.write_table(thin.slice(i * step, step), folder / f"day{i}.parquet")
        thin_bytes = sum(p.stat().st_size for p in folder.iterdir())
        proj = engine.Projection(["item_id", "action", "ts"], max_len=a.max_len)
        for threads in (1, 2):
            rows[f"iter_batches in process, {threads} thread(s)"] = in_process(store, thin, proj, a.batch, threads)
        rows["user shards in process (no Ray), 1 thread"] = twin = no_ray_twin(store, folder, proj, a.batch,
                                                                               a.shards)
        twin["thin_bytes_scanned"] = thin_bytes * a.shards
        for actors, affinity in ((1, True), (2, True), (2, False)):
            ds = uih_dataset(store, folder, proj, batch_size=a.batch, num_actors=actors, num_shards=a.shards,
                             affinity=affinity, stats_column="events_read")
            ray_epoch(ds)  # warm-up: worker processes, JIT cache, page cache
            r = ray_epoch(ds)
            r["thin_bytes_scanned"] = thin_bytes * a.shards  # each shard's read scans the thin files
            rows[f"Ray, {actors} actor(s), {'user affinity' if affinity else 'no affinity'}"] = r
        store.close()
    per_example = twin["seconds"] / twin["examples"]
    for r in rows.values():
        r["events_bytes"] = r["events_read"] * BYTES_PER_EVENT
        if "steady_s" in r:  # wall time per batch over the same work done without Ray (after the 1st batch)
            r["overhead_ms_per_batch"] = (r["steady_s"] - per_example * (r["examples"] - r["first"])) \
                / max(r["batches"] - 1, 1) * 1e3
    print(f"bench_ray on {machine_line()}; a SHARED 2-core box with other jobs running: figures are indicative.\n"
          f"{a.requests} examples/epoch over {a.users} users x {a.history} events, max_len {a.max_len}, 3 columns, "
          f"batch {a.batch}, {a.files} thin files ({fmt_bytes(thin_bytes)}), {a.shards} user shards; "
          "Ray actors: 1 CPU and 1 Numba thread each; warm epoch after a warm-up one.\n"
          "overhead = Ray's wall time per batch after the first, minus the same shards' time without Ray "
          "(with 2 actors working in parallel it can be negative)")
    print(table([[k, f"{r['examples_per_s']:,.0f}", f"{r.get('steady_examples_per_s', r['examples_per_s']):,.0f}",
                  f"{r.get('startup_s', 0):.1f} s", f"{r['overhead_ms_per_batch']:.1f}" if "steady_s" in r else "-",
                  f"{r['events_read']:,}", fmt_bytes(r["events_bytes"]),
                  fmt_bytes(r["thin_bytes_scanned"]) if "thin_bytes_scanned" in r else fmt_bytes(thin_bytes)]
                 for k, r in rows.items()],
                ["reconstruction", "examples/s (epoch)", "examples/s (steady)", "to 1st batch",
                 "overhead ms/batch", "events read", "event bytes", "thin bytes scanned"]))
    path = write_json(Path(a.out or RESULTS) / "bench_ray.json", {"rows": rows, "params": vars(a),
                                                                   "thin_bytes": thin_bytes})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
