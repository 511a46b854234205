"""Run-to-run steadiness of ``iter_batches`` on a low-duplication job, per thread setting, interleaved.

The job: 4,096 requests over 1,500 users (each about 3 times), log-normal histories (median
about 3K events, clipped at 30K), ``max_len=2048``, 3 columns (item_id, action, ts); the store is built
from 32 appended chunks, each followed by a seal, with a compaction after every 8th. One run is a whole
pass of ``iter_batches`` (open the store, reconstruct every batch), page cache warm.

Each variant runs in fresh processes (a threading layer is fixed per process), ``--rounds`` of them,
visiting the variants in a rotated order per round; each process runs the job ``--reps`` times back to back,
after a torch matmul, a NumPy matmul and a Polars query where Polars is installed (``--noise``), as a
training process runs between epochs. Per variant: the median run, and slowest / median over every run
(the steadiness target: at most 1.3).

Variants: ``default`` (the engine as it is: Numba on TBB, which ``kernels._threads`` loads; host buffers
from the process-wide reserve of ``engine.training._buffer_pool``), ``fresh`` (the same with the reserve
off: each pass's reconstructor faults its arena and output buffers afresh, as before the reserve), and the
Numba layer overrides ``omp`` (GNU OpenMP: Numba's choice before the engine loaded TBB), ``workqueue``.
Besides wall time, each pass records its process CPU time (user, system): a pass whose CPU time stays while its
wall time grows waited (for a core, a lock, another thread); one whose CPU time grows did more work
(spinning threads, page faults).

    python bench/bench_jitter.py [--rounds 7] [--reps 3] [--variants default,fresh,omp] [--noise 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
COLUMNS = ["item_id", "action", "ts"]
DAY = 86_400_000_000
VARIANTS = {
    "default": {},
    "fresh": {},  # the child turns the reserve off
    "omp": {"NUMBA_THREADING_LAYER": "omp"},
    "tbb": {"NUMBA_THREADING_LAYER": "tbb"},
    "workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
}


def build(root: Path, users: int, examples: int, median: int, cap: int, chunks: int, every: int, seed: int = 0):
    """The store and the thin rows of the job; returns the thin-row Parquet path."""
    import pyarrow.parquet as pq

    import engine
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(median), 0.9, users), 1, cap).astype(np.int64)
    store = engine.UIHStore.create(root / "store", columns={"item_id": "int64", "action": "int32"})
    span = 30 * DAY // chunks
    for k in range(chunks):
        n_u = rng.binomial(lengths, 1.0 / chunks)  # each user's events of this chunk
        uid = np.repeat(np.arange(users, dtype=np.int64), n_u)
        ts = k * span + rng.integers(0, span, len(uid))
        order = np.argsort(ts, kind="stable")
        store.append({"user_id": uid[order], "ts": ts[order], "item_id": rng.integers(0, 1 << 40, len(uid)),
                      "action": rng.choice(5, len(uid), p=[0.8, 0.12, 0.05, 0.02, 0.01]).astype(np.int32)})
        store.seal((k + 1) * span)
        if (k + 1) % every == 0:
            store.compact()
    req = {"user_id": rng.integers(0, users, examples), "request_ts": np.full(examples, 31 * DAY)}
    thin = root / "thin.parquet"
    pq.write_table(store.snapshot(req), thin)
    store.close()
    return thin


def noise():
    """What a training process runs between passes: a torch matmul (OpenMP pool) and a Polars query (its
    Rayon pool; skipped where Polars is not installed)."""
    import torch
    a = torch.randn(512, 512)
    (a @ a).sum().item()
    b = np.random.default_rng(0).random((512, 512))
    float((b @ b).sum())  # NumPy's OpenBLAS pool
    try:
        import polars as pl
    except ImportError:
        return
    df = pl.DataFrame({"k": np.arange(200_000) % 97, "v": np.arange(200_000, dtype=np.float64)})
    assert df.group_by("k").agg(pl.col("v").sum()).height == 97


def child(a) -> dict:
    import numba

    import engine
    from engine.training import _buffer_pool
    from uih.jobs import open_pinned
    if a.variant == "fresh":
        _buffer_pool.RESERVE_BYTES = 0  # idle buffers are let go at once: every pass faults new memory
    if a.noise:
        noise()
    proj = engine.Projection(COLUMNS, max_len=a.max_len)
    times, cpu, sys_ = [], [], []
    for rep in range(a.reps + 1):  # the first pass warms up (compiles, fills the page cache)
        if a.noise:
            noise()
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        store = open_pinned(a.store)
        rec = engine.Reconstructor(store, proj, device="cpu")
        n = sum(b.size for b in rec.iter_batches(a.thin, a.batch))
        store.close()
        t, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        if rep:
            times.append(t)
            cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
            sys_.append(r1.ru_stime - r0.ru_stime)
    if n != a.examples:
        raise RuntimeError(f"a pass gave {n} examples, expected {a.examples}")
    return {"layer": numba.threading_layer(), "numba_threads": numba.get_num_threads(), "times": times,
            "cpu": cpu, "sys": sys_}


def run_child(variant: str, a, root: Path):
    env = {**os.environ, **VARIANTS.get(variant, {}),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, __file__, "--child", "--store", str(root / "store"), "--thin", str(root / "thin.parquet"),
           "--reps", str(a.reps), "--batch", str(a.batch), "--max-len", str(a.max_len), "--noise", str(a.noise),
           "--examples", str(a.examples), "--variant", variant]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        return None, p.stderr.strip().splitlines()[-1:] or [f"exit {p.returncode}"]
    return json.loads(p.stdout.strip().splitlines()[-1]), None


def summarize(runs: dict) -> list:
    rows = []
    for variant, procs in runs.items():
        if not procs:
            continue
        t = np.concatenate([p["times"] for p in procs])
        cpu, sys_ = np.concatenate([p["cpu"] for p in procs]), np.concatenate([p["sys"] for p in procs])
        med = float(np.median(t))
        rows.append({"variant": variant, "layer": procs[0]["layer"], "numba_threads": procs[0]["numba_threads"],
                     "median_s": med, "min_s": float(t.min()), "max_s": float(t.max()),
                     "slowest_over_median": float(t.max() / med), "runs_over_1_3x": int((t > 1.3 * med).sum()),
                     "runs": int(t.size), "cpu_median_s": float(np.median(cpu)),
                     "cpu_slowest_over_median": float(cpu.max() / np.median(cpu)),
                     "sys_median_s": float(np.median(sys_)),
                     "sys_max_s": float(sys_.max()), "times_s": [float(x) for x in t],
                     "cpu_s": [float(x) for x in cpu], "sys_s": [float(x) for x in sys_]})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--variants", default="default,fresh,omp")
    ap.add_argument("--noise", type=int, default=1, help="torch + Polars work before each pass (0: none)")
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--examples", type=int, default=4096)
    ap.add_argument("--median-history", type=int, default=3000)
    ap.add_argument("--max-history", type=int, default=30000)
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", default=str(RESULTS / "jitter.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--store", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--thin", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="default", help=argparse.SUPPRESS)
    ap.add_argument("--keep", default=None, help="build the job here (or reuse it) instead of a temporary folder")
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a)))
        return
    from uih.fmt import machine_line, table, write_json

    variants = a.variants.split(",")
    runs, missing = {v: [] for v in variants}, {}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as d:
        root = Path(a.keep or d)
        if not (root / "thin.parquet").exists():
            root.mkdir(parents=True, exist_ok=True)
            build(root, a.users, a.examples, a.median_history, a.max_history, chunks=32, every=8)
        for r in range(a.rounds):
            for v in variants[r % len(variants):] + variants[:r % len(variants)]:
                if v in missing:
                    continue
                got, err = run_child(v, a, root)
                if got is None:
                    missing[v] = err
                else:
                    runs[v].append(got)
            load.append(os.getloadavg()[0])
    rows = summarize({k: v for k, v in runs.items() if k not in missing})
    print(f"iter_batches, {a.examples} requests over {a.users} users, L={a.max_len}, 3 columns; {a.rounds} rounds x "
          f"{a.reps} passes per variant, noise={a.noise}; {machine_line()}; "
          f"load average {min(load):.1f}-{max(load):.1f}")
    print(table([[r["variant"], r["layer"], r["numba_threads"], f"{r['median_s']:.3f}",
                  f"{r['min_s']:.3f}-{r['max_s']:.3f}", f"{r['slowest_over_median']:.2f}",
                  f"{r['runs_over_1_3x']}/{r['runs']}", f"{r['cpu_median_s']:.3f}",
                  f"{r['cpu_slowest_over_median']:.2f}", f"{r['sys_median_s']:.3f} / {r['sys_max_s']:.3f}"]
                 for r in rows],
                ["variant", "layer", "numba threads", "median s", "range s", "slowest/median", "runs >1.3x median",
                 "CPU s (median)", "CPU slowest/median", "system CPU s (median / max)"]))
    for v, err in missing.items():
        print(f"{v}: not measured ({' '.join(err)})")
    path = write_json(a.out, {"examples": a.examples, "users": a.users, "max_len": a.max_len, "batch": a.batch,
                              "rounds": a.rounds, "reps": a.reps, "noise": a.noise, "load_average": load,
                              "rows": rows, "missing": missing})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
