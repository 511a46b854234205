"""Store write and snapshot throughput.

append: events/s of ``UIHStore.append`` (durable: framed log record + fsync) on 1M-row batches of six
columns, against PyArrow writing the same rows to a Parquet file once (``pq.write_table``, defaults).
snapshot: thin and fat rows/s for 100K requests over users with 4K-event sealed histories plus a tail.

    python bench/bench_store.py [--batches 5] [--users 2000] [--history 4096] [--requests 100000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import engine
from uih.fmt import machine_line, median_time, table, write_json
from uih.workload import COLUMNS as COLS

RESULTS = Path(__file__).resolve().parent / "results"


def batch(rng, n, users, t0):
    return {"user_id": rng.integers(0, users, n), "ts": t0 + np.sort(rng.integers(0, 10**9, n)),
            "item_id": rng.integers(0, 1 << 40, n), "action": rng.integers(0, 5, n).astype(np.int32),
            "surface": rng.integers(0, 8, n).astype(np.int32), "dwell_ms": rng.integers(0, 60000, n).astype(np.int32)}


def bench_append(tmp: Path, n_batches: int, rows: int):
    rng = np.random.default_rng(0)
    batches = [pa.table(batch(rng, rows, 100_000, i * 10**9)) for i in range(n_batches)]
    store = engine.UIHStore.create(tmp / "append", columns=COLS)
    times = []
    for b in batches:
        t = time.perf_counter()
        store.append(b)
        times.append(time.perf_counter() - t)
    store.close()
    ours = rows / float(np.median(times))
    pq_times = []
    for i, b in enumerate(batches):
        t = time.perf_counter()
        pq.write_table(b, tmp / f"pq{i}.parquet")
        pq_times.append(time.perf_counter() - t)
    base = rows / float(np.median(pq_times))
    return ours, base


def bench_snapshot(tmp: Path, users: int, history: int, requests: int, fat_len: int):
    rng = np.random.default_rng(1)
    store = engine.UIHStore.create(tmp / "snap", columns=COLS)
    per = 1_000_000
    total = users * history
    uid_all = np.repeat(np.arange(users), history)
    rng.shuffle(uid_all)
    for i in range(0, total, per):
        b = batch(rng, min(per, total - i), users, 0)
        b["user_id"] = uid_all[i:i + per]
        store.append(b)
    store.seal(10**18)
    store.append(batch(rng, users * 16, users, 2 * 10**9))  # a mutable tail of ~16 events per user
    req = {"user_id": rng.integers(0, users, requests), "request_ts": np.full(requests, 3 * 10**9)}
    t_thin = median_time(lambda: store.snapshot(req), repeat=3)
    chunk = 10_000

    def fat():
        for i in range(0, requests, chunk):
            store.snapshot({k: v[i:i + chunk] for k, v in req.items()}, materialize=True, max_len=fat_len)
    t_fat = median_time(fat, repeat=1, warmup=0)
    store.close()
    return requests / t_thin, requests / t_fat


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--history", type=int, default=4096)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--fat-len", type=int, default=1024, help="max_len of the fat rows")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=".") as d:
        ours, base = bench_append(Path(d), a.batches, a.rows)
        thin, fat = bench_snapshot(Path(d), a.users, a.history, a.requests, a.fat_len)
    rows = [["append (durable, fsync)", f"{ours / 1e6:.2f} M events/s", f"{base / 1e6:.2f} M events/s "
             "(pq.write_table)", f"{ours / base:.2f}x"],
            ["snapshot thin", f"{thin / 1e3:.1f} K req/s", "-", "-"],
            [f"snapshot fat (max_len {a.fat_len})", f"{fat / 1e3:.1f} K req/s", "-",
             f"thin is {thin / fat:.0f}x faster"]]
    print(f"bench_store on {machine_line()}; append: {a.batches} x {a.rows:,}-row batches, 6 columns; "
          f"snapshot: {a.requests:,} requests over {a.users:,} users x {a.history:,} sealed events")
    print(table(rows, ["what", "ours", "baseline", "ratio"]))
    path = write_json(Path(a.out or RESULTS) / "bench_store.json",
                      {"append_events_per_s": ours, "parquet_write_events_per_s": base,
                                      "append_ratio": ours / base, "thin_requests_per_s": thin,
                                      "fat_requests_per_s": fat, "params": vars(a)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
