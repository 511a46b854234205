"""Ray Data reconstruction (``ray_plugin.uih_dataset``) against in-process ``iter_batches``, same job.

The job (issue 30's): 16,000 examples over 800 users, max_len 512, 3 columns, batch 256, thin rows in
``--files`` Parquet files (a day each, every user in every file, as a serving log is). Measured:

- in process: examples/s of an epoch on 1 and 2 Numba threads, with a fresh Reconstructor per epoch
  (decoded row groups read again) and with a warm one (its second epoch: the arena holds them);
- through Ray, 1 and 2 tasks at a time (1 CPU and 1 Numba thread each), consumed by the driver
  (``iter_batches(batch_size=256)``) or by 2 ``streaming_split`` consumers: time to the first batch of
  the first epoch (worker processes start, kernels load) and of warm epochs, the rate after the first
  batch and over the epoch, bytes written to the object store per example, events read from storage;
- the ratio the issue's goal is stated in: Ray's rate after the first batch over the in-process rate on
  the same number of cores (1 thread per task), warm against warm and against a fresh Reconstructor.

Warm epochs are repeated (``--repeat``) and reported as median and range: the box may be shared.

    python bench/bench_ray.py [--users 800] [--history 2000] [--requests 16000] [--max-len 512]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numba
import numpy as np
import pyarrow.parquet as pq
import ray

import engine
from ray_plugin import uih_dataset
from uih.fmt import fmt_bytes, machine_line, table, write_json
from uih.workload import synthetic_store

RESULTS = Path(__file__).resolve().parent / "results"
BYTES_PER_EVENT = 8 + 4 + 8  # item_id, action, ts as decoded


def in_process(store, thin, proj, batch, threads, warm, repeat):
    """Examples/s of one epoch: a fresh Reconstructor per epoch, or one kept across epochs (``warm``)."""
    numba.set_num_threads(threads)
    rates, rec = [], engine.Reconstructor(store, proj, device="cpu")
    for _ in range(repeat + 1):  # the first is a warm-up (JIT cache load, page cache, the arena if warm)
        if not warm:
            rec = engine.Reconstructor(store, proj, device="cpu")
        t = time.perf_counter()
        n = sum(b.size for b in rec.iter_batches(thin, batch, extra_columns=["example_id"]))
        rates.append(n / (time.perf_counter() - t))
    return {"examples": n, **_spread("examples_per_s", rates[1:])}


def _spread(key, values):
    return {key: statistics.median(values), f"{key}_range": [min(values), max(values)]}


def _epoch(batches):
    """Time to the first batch, then the rate after it; ``batches`` is an iterable of numpy batches."""
    t0 = time.perf_counter()
    first = n = n0 = read = 0
    for b in batches:
        if not first:
            first, n0 = time.perf_counter(), len(b["lengths"])
        n += len(b["lengths"])
        read += int(b["events_read"].sum())
    end = time.perf_counter()
    return {"examples": n, "first_batch_s": first - t0, "after_first_per_s": (n - n0) / max(end - first, 1e-9),
            "epoch_per_s": n / (end - t0), "events_read": read}


def _split(its, batch):
    """One epoch consumed by ``streaming_split`` consumers ``its`` at once (threads here, training workers
    in a job, which split once per run and iterate once per epoch); the first batch is the first any
    consumer got."""
    t0 = time.perf_counter()
    firsts, counts, reads = [], [], []

    def consume(it):
        k = r = 0
        for b in it.iter_batches(batch_size=batch, batch_format="numpy"):
            if not k:
                firsts.append(time.perf_counter())
            k, r = k + len(b["lengths"]), r + int(b["events_read"].sum())
        counts.append(k)
        reads.append(r)

    threads = [threading.Thread(target=consume, args=(it,)) for it in its]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end, first = time.perf_counter(), min(firsts)
    total = sum(counts)
    return {"examples": total, "first_batch_s": first - t0, "epoch_per_s": total / (end - t0),
            "after_first_per_s": total / max(end - first, 1e-9), "events_read": sum(reads)}


def ray_row(ds, batch, repeat, consumers):
    if consumers == 1:
        def run():
            return _epoch(ds.iter_batches(batch_size=batch, batch_format="numpy"))
    else:
        its = ds.streaming_split(consumers)

        def run():
            return _split(its, batch)
    first = run()  # worker processes start, kernels load, the store opens
    warm = [run() for _ in range(repeat)]
    block_bytes = sum(b.size_bytes() for b in ds.iter_internal_ref_bundles())
    row = {"examples": first["examples"], "first_epoch_first_batch_s": first["first_batch_s"],
           "first_epoch_per_s": first["epoch_per_s"], "events_read": warm[-1]["events_read"],
           "object_store_bytes_per_example": block_bytes / first["examples"]}
    for key in ("first_batch_s", "after_first_per_s", "epoch_per_s"):
        row.update(_spread(f"warm_{key}", [w[key] for w in warm]))
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=800)
    ap.add_argument("--history", type=int, default=2000)
    ap.add_argument("--requests", type=int, default=16000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--shards", type=int, default=None, help="parts per epoch (default 2 per task)")
    ap.add_argument("--order", default="stream", choices=["stream", "shuffle"])
    ap.add_argument("--repeat", type=int, default=3, help="warm epochs per configuration")
    ap.add_argument("--before", default=None, help="a bench_ray.json of the code before, kept as its 'before'")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    # a Ray of its own (address="local"), even while another cluster runs on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
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
        proj = engine.Projection(["item_id", "action", "ts"], max_len=a.max_len)
        for threads in (1, 2):
            for warm in (False, True):
                rows[f"in process, {threads} thread(s), {'warm' if warm else 'fresh'} Reconstructor"] = \
                    in_process(store, folder, proj, a.batch, threads, warm, a.repeat)
        for tasks, consumers in ((1, 1), (2, 1), (2, 2)):
            ds = uih_dataset(store, folder, proj, batch_size=a.batch, num_actors=tasks, num_shards=a.shards,
                             order=a.order, extra_columns=["example_id"], stats_column="events_read")
            name = f"Ray, {tasks} task(s), " + ("driver" if consumers == 1 else f"streaming_split({consumers})")
            rows[name] = ray_row(ds, a.batch, a.repeat, consumers)
        store.close()
    for name, r in rows.items():
        if name.startswith("Ray"):
            tasks = int(name.split(", ")[1][0])
            for kind in ("warm", "fresh"):  # per core: against in process on as many threads as tasks
                base = rows[f"in process, {tasks} thread(s), {kind} Reconstructor"]["examples_per_s"]
                r[f"vs_in_process_{kind}"] = r["warm_after_first_per_s"] / base
    before = json.loads(Path(a.before).read_text()) if a.before else None
    print(f"bench_ray on {machine_line()}; the box may be shared with other jobs: figures are indicative.\n"
          f"{a.requests} examples/epoch over {a.users} users x {a.history} events, max_len {a.max_len}, 3 columns, "
          f"batch {a.batch}, order {a.order}; Ray: 1 CPU and 1 Numba thread per task; warm = median of {a.repeat} "
          "epochs after the first.")
    print(table([[k, f"{r['examples_per_s']:,.0f}", _range(r["examples_per_s_range"])] for k, r in rows.items()
                 if "examples_per_s" in r], ["in process", "examples/s", "range"]))
    print(table([[k, f"{r['first_epoch_first_batch_s']:.2f} s", f"{r['warm_first_batch_s']:.2f} s",
                  f"{r['warm_after_first_per_s']:,.0f}", _range(r["warm_after_first_per_s_range"]),
                  f"{r['warm_epoch_per_s']:,.0f}", f"{r['vs_in_process_warm']:.2f}x / {r['vs_in_process_fresh']:.2f}x",
                  fmt_bytes(r["object_store_bytes_per_example"]), f"{r['events_read']:,}"]
                 for k, r in rows.items() if k.startswith("Ray")],
                ["Ray", "1st batch (1st epoch)", "1st batch (warm)", "examples/s after 1st", "range",
                 "examples/s (epoch)", "per core vs in process (warm / fresh)", "object store / example",
                 "events read"]))
    out = {"rows": rows, "params": vars(a), "bytes_per_event": BYTES_PER_EVENT}
    if before:
        out["before"] = before
    path = write_json(Path(a.out or RESULTS) / "bench_ray.json", out)
    print(f"wrote {path}")


def _range(r):
    return f"{r[0]:,.0f}-{r[1]:,.0f}"


if __name__ == "__main__":
    main()
