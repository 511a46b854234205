"""What training order costs, per tenant of ``uih bench``: examples/s and bytes read per epoch of

* ``stream``: ``iter_batches`` in the thin rows' order (the baseline: what streaming training reads);
* ``shuffle``: the default shuffle (``order="shuffle"``, ``shuffle_window=None``: blocks in a random order,
  examples drawn from a window, each chunk read user-grouped);
* ``permutation``: a full random permutation (``shuffle_window`` = the epoch's thin rows);
* ``fat shuffle``: the Fat Row loader (``uih.fatrows``) shuffled the same way: its row groups in a random
  order, rows permuted within windows of the same size (the second baseline).

Every job is one cold epoch (page cache of its files dropped, store opened afresh, empty arena), the
jobs of a tenant run in interleaved rounds (the Fat Row job opens each round, the others rotate after
it: ``uih.report.median_jobs``), each round with its own seed. Times are medians; ratios are taken
within each round (pairs) and given as median (min-max). Bytes are the OS's (``/proc/self/io``): the
store and thin rows read by a late job, the fat rows by the Fat Row job (and their columns' compressed
bytes, from the Parquet footers).

    python bench/bench_order.py [--quick] [--users N] [--days D] [--requests R] [--median-history H]
                                [--repeats K] [--out DIR]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

import engine
from engine.training._epoch import Epoch
from engine.training._order import DEFAULT_WINDOW, Order
from uih.fatrows import fat_batches, needed_columns
from uih.fmt import fmt_bytes, machine_line, median_time, table, write_json
from uih.iostats import drop_cache, measure
from uih.jobs import file_list, open_pinned, thin_column_bytes
from uih.replay import build
from uih.report import median_jobs, pair_ratios
from uih.workload import WorkloadConfig

RESULTS = Path(__file__).resolve().parent / "results"
# the default: thin rows enough for several default windows (so the default shuffle is not a full
# permutation), histories short enough that the union-length fat rows stay a few hundred MB
SIZES = {"quick": dict(users=40, days=2, requests=3.0, median_history=100, repeats=1),
         "default": dict(users=700, days=4, requests=16.0, median_history=300, repeats=3)}
ORDERS = ("stream", "shuffle", "permutation", "fat_shuffle")
BATCH = 256


def late_epoch(store_path, thin, proj, batch_size: int, order: str, seed: int, window) -> dict:
    """One cold epoch of ``iter_batches`` in ``order`` ("stream" or "shuffle" with ``window``)."""
    drop_cache(store_path, *thin)
    n = 0
    with measure() as io:
        t = time.perf_counter()
        store = open_pinned(store_path)
        rec = engine.Reconstructor(store, proj, device="cpu")
        groups = _count_decoded(rec)
        first = None
        for b in rec.iter_batches(thin, batch_size, order=order, seed=seed, shuffle_window=window):
            n += b.size
            first = first or time.perf_counter() - t
        seconds = time.perf_counter() - t
        store.close()
    return {"examples": n, "seconds": seconds, "first_batch_s": first, "read_bytes": io["read_bytes"],
            "rchar": io["rchar"], "events_read": rec.stats["events_read"], "users_read": rec.stats["users_read"],
            "chunks": rec.stats["chunks"], **groups}


def _count_decoded(rec) -> dict:
    """Counts, as the epoch runs, the row groups its chunks use and those decoded for them (arena misses):
    the arena's own bookkeeping, read through its ``acquire`` (a private step, on purpose: no public
    counter says how often a chunk found its row groups already decoded)."""
    arena, counts = rec._arena, {"groups_used": 0, "groups_decoded": 0}
    acquire = arena.acquire

    def counted(keys):
        slots, missing = acquire(keys)
        counts["groups_used"] += len(keys)
        counts["groups_decoded"] += len(missing)
        return slots, missing
    arena.acquire = counted
    return counts


def thin_side(thin, columns: list, batch_size: int, chunk_rows: int, order: str, window, repeat: int = 3) -> float:
    """Median seconds to cut an epoch's thin rows into its chunks, alone (no reconstruction; page cache
    warm): the order's own cost (a private step, on purpose: the chunks ``iter_batches`` reconstructs)."""
    def run():
        ep = Epoch(thin, columns, batch_size, chunk_rows, Order(order, 0, 0, window))
        for _ in ep.tables():
            pass
    return median_time(run, repeat=repeat)


def fat_epoch(fat, proj, batch_size: int, seed: int, window: int) -> dict:
    """One cold epoch of the Fat Row loader, window-shuffled like the thin rows."""
    drop_cache(*fat)
    n = 0
    with measure() as io:
        t = time.perf_counter()
        for b in fat_batches(fat, proj, batch_size, shuffle_window=window, seed=seed):
            n += len(b["lengths"])
        seconds = time.perf_counter() - t
    return {"examples": n, "seconds": seconds, "read_bytes": io["read_bytes"], "rchar": io["rchar"]}


def warm_up(store_path, thin, fat, projections) -> None:
    """Each loader once on a few rows before anything is timed: the first job of a process otherwise pays
    for loading the compiled kernels from Numba's disk cache and would count it as its own."""
    first = pq.ParquetFile(thin[0]).read_row_group(0).slice(0, 64)
    store = open_pinned(store_path)
    try:
        for p in projections:
            rec = engine.Reconstructor(store, p, device="cpu")
            for order in ("stream", "shuffle"):
                for _ in rec.iter_batches(first, 32, order=order):
                    pass
            next(fat_batches(fat[:1], p, 32, shuffle_window=64), None)
    finally:
        store.close()


def tenant_rounds(data: Path, tenant, repeats: int, batch_size: int) -> dict:
    store_path, thin, fat = data / "store", file_list(data / "thin"), file_list(data / "fat")
    p = tenant.projection()
    n = sum(pq.ParquetFile(f).metadata.num_rows for f in thin)
    seeds = {k: itertools.count() for k in ORDERS}  # round r runs every order with seed r
    every = {k: [] for k in ORDERS}  # each run's result: median_jobs keeps the medians of time and bytes only

    def kept(k, fn):
        return lambda: every[k].append(fn()) or every[k][-1]
    jobs = {
        "stream": lambda: late_epoch(store_path, thin, p, batch_size, "stream", next(seeds["stream"]), None),
        "shuffle": lambda: late_epoch(store_path, thin, p, batch_size, "shuffle", next(seeds["shuffle"]), None),
        "permutation": lambda: late_epoch(store_path, thin, p, batch_size, "shuffle", next(seeds["permutation"]), n),
        "fat_shuffle": lambda: fat_epoch(fat, p, batch_size, next(seeds["fat_shuffle"]), DEFAULT_WINDOW),
    }
    # the Fat Row job opens every round (it slows whichever job follows it), the late jobs rotate after it
    runs = dict(zip(ORDERS, median_jobs([kept(k, jobs[k]) for k in ORDERS], repeats,
                                        first=ORDERS.index("fat_shuffle"))))
    for k in ORDERS[:3]:  # the other per-run figures as medians too (a seed's order changes what chunks read)
        for f in ("first_batch_s", "events_read", "groups_used", "groups_decoded"):
            runs[k][f] = float(np.median([r[f] for r in every[k]]))
    for r in runs.values():
        r["examples_per_s"] = r["examples"] / r["seconds"]
        r["eps_each"] = [r["examples"] / s for s in r["each"]]
    columns, chunk_batches = _thin_layout(store_path, p)
    chunk_rows = batch_size * chunk_batches
    for k, (order, window) in {"stream": ("stream", None), "shuffle": ("shuffle", None),
                               "permutation": ("shuffle", n)}.items():
        runs[k]["thin_s"] = thin_side(thin, columns, batch_size, chunk_rows, order, window)
    fat_cols = thin_column_bytes(fat, [*needed_columns(p), "request_ts"])
    runs["fat_shuffle"]["column_bytes"] = fat_cols
    # ratios of examples/s within each round: the inverse ratio of the two jobs' times
    vs = {name: pair_ratios(runs[b], runs[a]) for name, (a, b) in
          {"shuffle_vs_stream": ("shuffle", "stream"), "shuffle_vs_fat": ("shuffle", "fat_shuffle"),
           "permutation_vs_stream": ("permutation", "stream"), "shuffle_vs_permutation": ("shuffle", "permutation")
           }.items()}
    return {"tenant": tenant.name, "max_len": tenant.max_len, "columns": list(tenant.columns), "thin_rows": n,
            "window": DEFAULT_WINDOW, "thin_column_bytes": thin_column_bytes(thin, columns),
            "runs": runs, "ratios": {k: _stats(v) for k, v in vs.items()},
            "goals": {"shuffle_vs_stream_0.8": float(np.median(vs["shuffle_vs_stream"])) >= 0.8,
                      "shuffle_vs_fat_2x": float(np.median(vs["shuffle_vs_fat"])) >= 2.0}}


def _thin_layout(store_path, p) -> tuple:
    """The thin columns a tenant's reconstructor reads, and its batches per chunk."""
    store = open_pinned(store_path)
    try:
        rec = engine.Reconstructor(store, p, device="cpu")
        return rec.thin_columns, rec.chunk_batches
    finally:
        store.close()


def _stats(v) -> dict:
    return {"median": float(np.median(v)), "min": float(min(v)), "max": float(max(v)), "each": [float(x) for x in v]}


def _spread(s: dict) -> str:
    return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"


def render(rows: list) -> str:
    mb = lambda n: fmt_bytes(n, "MB")  # noqa: E731
    speed = table([[r["tenant"], r["max_len"], f"{r['thin_rows']:,}",
                    *(f"{r['runs'][k]['examples_per_s']:,.0f} ({min(r['runs'][k]['eps_each']):,.0f}-"
                      f"{max(r['runs'][k]['eps_each']):,.0f})" for k in ORDERS),
                    _spread(r["ratios"]["shuffle_vs_stream"]), _spread(r["ratios"]["shuffle_vs_fat"]),
                    _spread(r["ratios"]["permutation_vs_stream"])] for r in rows],
                  ["tenant", "max_len", "examples", "stream ex/s", "shuffle ex/s", "permutation ex/s",
                   "fat shuffle ex/s", "shuffle / stream", "shuffle / fat", "permutation / stream"])
    io = table([[r["tenant"], *(mb(r["runs"][k]["read_bytes"]) for k in ORDERS),
                 mb(r["runs"]["fat_shuffle"]["column_bytes"]), mb(r["thin_column_bytes"]),
                 *(f"{r['runs'][k]['groups_decoded']:,.0f} / {r['runs'][k]['groups_used']:,.0f}" for k in ORDERS[:3]),
                 *(f"{r['runs'][k]['events_read']:,.0f}" for k in ORDERS[:3])] for r in rows],
               ["tenant", *(f"{k.replace('_', ' ')} read" for k in ORDERS), "fat columns", "thin columns",
                *(f"{k}: groups decoded / used" for k in ORDERS[:3]), *(f"{k}: events read" for k in ORDERS[:3])])
    cost = table([[r["tenant"], *(f"{r['runs'][k]['thin_s']:.2f} s" for k in ORDERS[:3]),
                   *(f"{r['runs'][k]['first_batch_s']:.2f} s" for k in ORDERS[:3]),
                   *(f"{r['runs'][k]['seconds']:.2f} s" for k in ORDERS[:3])] for r in rows],
                 ["tenant", *(f"{k}: thin rows to chunks" for k in ORDERS[:3]),
                  *(f"{k}: first batch" for k in ORDERS[:3]), *(f"{k}: epoch" for k in ORDERS[:3])])
    return speed + "\n\n" + io + "\n\n" + cost


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tiny workload, one round (a smoke test)")
    for k in ("users", "days", "median_history", "repeats"):
        ap.add_argument(f"--{k.replace('_', '-')}", type=int, default=None)
    ap.add_argument("--requests", type=float, default=None, help="requests per user and day")
    ap.add_argument("--batch", type=int, default=BATCH)
    ap.add_argument("--out", default=None, help=f"folder for the JSON (default {RESULTS})")
    a = ap.parse_args(argv)
    mode = "quick" if a.quick else "default"
    size = {k: v if getattr(a, k) is None else getattr(a, k) for k, v in SIZES[mode].items()}
    out = Path(a.out) if a.out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    cfg = WorkloadConfig(users=size["users"], days=size["days"], median_history=size["median_history"],
                         requests_per_user_day=size["requests"])
    print(f"bench_order ({mode}) on {machine_line()}")
    t0 = time.perf_counter()
    # the data lies beside the results, on disk: page-cache drops mean nothing on a tmpfs /tmp
    with tempfile.TemporaryDirectory(dir=out, prefix="tmp-order") as d:
        data = Path(d) / "data"
        res = build(data, cfg, progress=False)
        build_s = time.perf_counter() - t0
        warm_up(data / "store", file_list(data / "thin"), file_list(data / "fat"),
                [t.projection() for t in cfg.tenants])
        rows = []
        for t in cfg.tenants:
            t1 = time.perf_counter()
            rows.append(tenant_rounds(data, t, size["repeats"], a.batch))
            print(f"  {t.name}: {time.perf_counter() - t1:.0f} s", flush=True)
    baselines = ("stream order (iter_batches, order='stream') and the Fat Row loader (uih.fatrows, fat rows "
                 f"at the union max_len {cfg.union_max_len}) window-shuffled like the thin rows")
    print(f"{size['users']} users, median history {size['median_history']}, {size['days']} days, "
          f"{size['requests']} requests/user/day: {rows[0]['thin_rows']:,} thin rows, default window "
          f"{DEFAULT_WINDOW:,}, batch {a.batch}, {size['repeats']} interleaved round(s), one cold epoch per job; "
          f"reconstructor on cpu. Baselines: {baselines}.")
    print(render(rows))
    for r in rows:
        g = r["goals"]
        print(f"  {r['tenant']}: shuffle >= 0.8x stream: {'met' if g['shuffle_vs_stream_0.8'] else 'MISSED'}; "
              f"shuffle >= 2x fat shuffle: {'met' if g['shuffle_vs_fat_2x'] else 'MISSED'}")
    path = write_json(out / f"order{'' if mode == 'default' else '_' + mode}.json",
                      {"mode": mode, "date": time.strftime("%Y-%m-%d %H:%M"), "size": size, "batch": a.batch,
                       "window": DEFAULT_WINDOW, "baselines": baselines, "device": "cpu",
                       "config": {k: v for k, v in res["config"].items()}, "files": res["files"],
                       "build_s": build_s, "tenants": rows})
    print(f"wrote {path} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
