"""Store write, open and snapshot speed.

append: events/s of ``UIHStore.append`` (durable: framed log record + fsync) on 1M-row batches of six
columns, against PyArrow writing the same rows to a Parquet file once (``pq.write_table``, defaults),
each batch written both ways back to back; the ratio's median and range over the batches.
open: milliseconds of ``UIHStore.open(read_only=True)`` of a store of about 70 data files (daily seals
with a compaction every 8, a mutable tail), median and range of 20 opens; interleaved with opens that
also decode the mutable tier and build the seq counter (what every read-only open did before they
became lazy), and with writer opens (which also clear orphans and record HEAD).
snapshot: thin and fat rows/s for 100K requests over users with 4K-event sealed histories plus a tail.

    python bench/bench_store.py [--batches 9] [--opens 20] [--users 2000] [--history 4096] [--requests 100000]
        [--only append,open,snapshot]
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
PARTS = {"append", "open", "snapshot"}


def batch(rng, n, users, t0):
    return {"user_id": rng.integers(0, users, n), "ts": t0 + np.sort(rng.integers(0, 10**9, n)),
            "item_id": rng.integers(0, 1 << 40, n), "action": rng.integers(0, 5, n).astype(np.int32),
            "surface": rng.integers(0, 8, n).astype(np.int32), "dwell_ms": rng.integers(0, 60000, n).astype(np.int32)}


def bench_append(tmp: Path, n_batches: int, rows: int) -> dict:
    """Each batch appended, then written by ``pq.write_table``, back to back (a first append, which builds
    the seq counter and chooses the log's encodings, is left out of the timings)."""
    rng = np.random.default_rng(0)
    batches = [pa.table(batch(rng, rows, 100_000, i * 10**9)) for i in range(n_batches + 1)]
    store = engine.UIHStore.create(tmp / "append", columns=COLS)
    store.append(batches[0])
    times, pq_times = [], []
    for i, b in enumerate(batches[1:]):
        t = time.perf_counter()
        store.append(b)
        times.append(time.perf_counter() - t)
        t = time.perf_counter()
        pq.write_table(b, tmp / f"pq{i}.parquet")
        pq_times.append(time.perf_counter() - t)
    store.close()
    ratios = np.array(pq_times) / np.array(times)
    return {"append_events_per_s": rows / float(np.median(times)),
            "parquet_write_events_per_s": rows / float(np.median(pq_times)),
            "append_ratio": float(np.median(ratios)), "append_ratio_range": [float(ratios.min()), float(ratios.max())]}


def build_open_store(root: Path, seals: int, rows: int) -> int:
    """A store shaped like a daily job: ``seals`` appended chunks each sealed, a compaction every 8, every
    version kept, then a mutable tail; returns its data files (segments and logs)."""
    rng = np.random.default_rng(2)
    with engine.UIHStore.create(root, columns=COLS) as store:
        for d in range(seals):
            store.append(batch(rng, rows, 1500, d * 10**9))
            store.seal((d + 1) * 10**9)
            if d % 8 == 7:
                store.compact()
        store.append(batch(rng, rows // 4, 1500, seals * 10**9))
    return sum(1 for d in ("segments", "log") for _ in (root / d).iterdir())


def bench_open(tmp: Path, seals: int, opens: int) -> dict:
    """Read-only opens, read-only opens that also decode the mutable tier and build the seq counter (the
    work a read-only open did eagerly before), and writer opens, interleaved; milliseconds."""
    root = tmp / "open"
    files = build_open_store(root, seals, 20_000)

    def read_only():
        engine.UIHStore.open(root, read_only=True).close()

    def eager():
        s = engine.UIHStore.open(root, read_only=True)
        s._mutable.runs()
        s._seqs  # noqa: B018 - builds the counter
        s.close()

    def writer():
        engine.UIHStore.open(root).close()

    kinds = {"read_only": read_only, "read_only_eager": eager, "writer": writer}
    times: dict = {k: [] for k in kinds}
    for f in kinds.values():
        f()  # warm: imports, page cache
    for _ in range(opens):
        for k, f in kinds.items():
            t = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t) * 1e3)
    out = {"files": files, "opens": opens}
    for k, ms in times.items():
        out[f"{k}_ms"] = float(np.median(ms))
        out[f"{k}_ms_range"] = [float(np.min(ms)), float(np.max(ms))]
    return out


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
    ap.add_argument("--batches", type=int, default=9)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--history", type=int, default=4096)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--fat-len", type=int, default=1024, help="max_len of the fat rows")
    ap.add_argument("--seals", type=int, default=13, help="daily seals of the store the open bench opens")
    ap.add_argument("--opens", type=int, default=20)
    ap.add_argument("--only", default="append,open,snapshot", help="comma-separated parts to run")
    ap.add_argument("--out", default=None, help="folder for bench_store.json (default bench/results)")
    a = ap.parse_args(argv)
    parts = set(a.only.split(","))
    if not parts <= PARTS:
        ap.error(f"--only takes some of {','.join(sorted(PARTS))}, got {a.only!r}")
    res: dict = {"params": vars(a)}
    rows = []
    with tempfile.TemporaryDirectory(dir=".") as d:
        if "append" in parts:
            res.update(bench_append(Path(d), a.batches, a.rows))
            lo, hi = res["append_ratio_range"]
            rows.append(["append (durable, fsync)", f"{res['append_events_per_s'] / 1e6:.2f} M events/s",
                         f"{res['parquet_write_events_per_s'] / 1e6:.2f} M events/s (pq.write_table)",
                         f"{res['append_ratio']:.2f}x ({lo:.2f}-{hi:.2f})"])
        if "open" in parts:
            res["open"] = o = bench_open(Path(d), a.seals, a.opens)
            fmt = lambda k: f"{o[k + '_ms']:.1f} ms ({o[k + '_ms_range'][0]:.1f}-{o[k + '_ms_range'][1]:.1f})"
            rows.append([f"open read_only ({o['files']} files)", fmt("read_only"),
                         f"{fmt('read_only_eager')} (+ mutable tier, counter)",
                         f"{o['read_only_eager_ms'] / o['read_only_ms']:.1f}x faster"])
            rows.append([f"open writer ({o['files']} files)", fmt("writer"), "-", "-"])
        if "snapshot" in parts:
            thin, fat = bench_snapshot(Path(d), a.users, a.history, a.requests, a.fat_len)
            res.update({"thin_requests_per_s": thin, "fat_requests_per_s": fat})
            rows += [["snapshot thin", f"{thin / 1e3:.1f} K req/s", "-", "-"],
                     [f"snapshot fat (max_len {a.fat_len})", f"{fat / 1e3:.1f} K req/s", "-",
                      f"thin is {thin / fat:.0f}x faster"]]
    print(f"bench_store on {machine_line()}; append: {a.batches} x {a.rows:,}-row batches, 6 columns; "
          f"open: {a.opens} opens of a store of {a.seals} seals; "
          f"snapshot: {a.requests:,} requests over {a.users:,} users x {a.history:,} sealed events")
    print(table(rows, ["what", "ours", "baseline", "ratio"]))
    # a partial run (--only) leaves the full run's file, which the docs' tables read, as it is
    name = "bench_store" + ("" if parts >= PARTS else "_" + "_".join(sorted(parts)))
    path = write_json(Path(a.out or RESULTS) / f"{name}.json", res)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
