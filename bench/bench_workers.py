"""Disaggregated preprocessing: examples/s through ``UIHIterator`` (CPU-only DALI) with reconstruction
in the training process (0 workers) or in 1 and 2 worker processes each owning a user shard.

    python bench/bench_workers.py [--users 256] [--history 8192] [--requests 8192] [--max-len 2048]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import engine
from dali_plugin import UIHIterator, uih_pipeline
from uih.fmt import machine_line, table, write_json
from uih.workload import synthetic_store

RESULTS = Path(__file__).resolve().parent / "results"


def epoch(it):
    n = 0
    for b in it:
        n += int(b["lengths"].shape[0])
    return n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=256)
    ap.add_argument("--history", type=int, default=8192)
    ap.add_argument("--requests", type=int, default=8192)
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as d:
        store = synthetic_store(Path(d) / "store", a.users, a.history)
        rng = np.random.default_rng(0)
        thin = store.snapshot({"user_id": rng.integers(0, a.users, a.requests),
                               "request_ts": np.full(a.requests, 10**17)})
        proj = engine.Projection(["item_id", "action", "ts"], max_len=a.max_len)
        rec = engine.Reconstructor(store, proj, device="cpu")
        for workers in (0, 1, 2):
            it = UIHIterator(uih_pipeline(rec, thin, batch_size=a.batch, workers=workers))
            try:
                epoch(it)  # warm-up: worker start, JIT, page cache
                times = []
                for _ in range(a.epochs):
                    t = time.perf_counter()
                    n = epoch(it)
                    times.append(time.perf_counter() - t)
            finally:
                it.close()
            best = float(np.median(times))
            rows.append({"workers": workers, "examples": n, "seconds": best, "examples_per_s": n / best,
                         "gb_per_s": n * a.max_len * 20 / best / 1e9})
        store.close()
    base = rows[0]["examples_per_s"]
    print(f"bench_workers on {machine_line()}: {a.requests} examples/epoch over {a.users} users x {a.history} "
          f"events, max_len {a.max_len}, 3 columns, batch {a.batch}; median of {a.epochs} epochs after a warm-up")
    print(table([["in process" if r["workers"] == 0 else f"{r['workers']} worker process(es)",
                  f"{r['examples_per_s']:,.0f}", f"{r['gb_per_s']:.2f}", f"{r['examples_per_s'] / base:.2f}x"]
                 for r in rows], ["reconstruction", "examples/s", "output GB/s", "vs in process"]))
    path = write_json(Path(a.out or RESULTS) / "bench_workers.json", {"rows": rows, "params": vars(a)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
