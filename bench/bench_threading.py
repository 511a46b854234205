"""Warm ``reconstruct`` time per Numba threading layer, interleaved in one sitting.

The layers: ``omp`` (GNU OpenMP: Numba's choice when it finds no TBB; a child forked after it ran dies),
``tbb`` (the engine's: ``kernels._threads`` loads pip's TBB; fork- and thread-safe) and ``workqueue``
(fork-safe, but aborts when two threads run kernels at once). A layer is fixed per process at its first
parallel kernel, so every (round, layer) is a fresh process: it opens the store, warms up, then times
``--reps`` calls of ``Reconstructor.reconstruct(thin)`` for B examples and 3 columns (item_id, action,
ts) per ``max_len``. Rounds visit the layers in a rotated order. Reported per layer and length: the median
over all calls with their range, and the run-to-run spread (each process's median; slowest / median is
issue 31's steadiness measure).

    python bench/bench_threading.py [--lengths 1024,4096] [--batch 512] [--rounds 7] [--reps 15]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LAYERS = ("omp", "tbb", "workqueue")
COLUMNS = ["item_id", "action", "ts"]


def child(a) -> dict:
    """One process: the layer asked for in NUMBA_THREADING_LAYER, each length's timed calls (seconds)."""
    import numba

    import engine
    from uih.speed import requests

    store = engine.UIHStore.open(a.store)
    thin = store.snapshot(requests(np.random.default_rng(1), a.users, a.batch))
    times = {}
    for L in a.lengths:
        rec = engine.Reconstructor(store, engine.Projection(COLUMNS, max_len=L), device="cpu")
        for _ in range(3):
            rec.reconstruct(thin)
        ts = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            rec.reconstruct(thin)
            ts.append(time.perf_counter() - t0)
        times[str(L)] = ts
    return {"layer": numba.threading_layer(), "times": times}


def run_child(layer: str, a, store: Path):
    env = {**os.environ, "NUMBA_THREADING_LAYER": layer,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, __file__, "--child", "--store", str(store), "--lengths", ",".join(map(str, a.lengths)),
           "--batch", str(a.batch), "--users", str(a.users), "--reps", str(a.reps)]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        return None, p.stderr.strip().splitlines()[-1:] or [f"exit {p.returncode}"]
    return json.loads(p.stdout.strip().splitlines()[-1]), None


def summarize(runs: dict, lengths) -> list:
    rows = []
    for L in lengths:
        base = None
        for layer, procs in runs.items():
            if not procs:
                continue
            calls = np.concatenate([r["times"][str(L)] for r in procs])
            per_proc = np.array([np.median(r["times"][str(L)]) for r in procs])
            med = float(np.median(calls))
            base = med if base is None else base
            rows.append({"max_len": L, "layer": layer, "median_ms": med * 1e3,
                         "min_ms": float(calls.min()) * 1e3, "max_ms": float(calls.max()) * 1e3,
                         "p10_ms": float(np.percentile(calls, 10)) * 1e3,
                         "p90_ms": float(np.percentile(calls, 90)) * 1e3,
                         "vs_omp": med / base,
                         "proc_medians_ms": [float(x) * 1e3 for x in per_proc],
                         "slowest_over_median_proc": float(per_proc.max() / np.median(per_proc)),
                         "calls_over_1_5x_median": int((calls > 1.5 * med).sum()), "calls": int(calls.size)})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="1024,4096")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--layers", default=",".join(LAYERS))
    ap.add_argument("--out", default=str(RESULTS / "threading.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--store", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.lengths = [int(x) for x in a.lengths.split(",")]
    if a.child:
        print(json.dumps(child(a)))
        return
    from uih.fmt import machine_line, table, write_json
    from uih.workload import synthetic_store

    layers = a.layers.split(",")
    runs, missing = {x: [] for x in layers}, {}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as d:
        store = Path(d) / "store"
        synthetic_store(store, a.users, max(a.lengths) + max(a.lengths) // 8).close()
        for r in range(a.rounds):
            for layer in layers[r % len(layers):] + layers[:r % len(layers)]:
                if layer in missing:
                    continue
                got, err = run_child(layer, a, store)
                if got is None:
                    missing[layer] = err
                elif got["layer"] != layer:
                    missing[layer] = [f"asked for {layer}, Numba started {got['layer']}"]
                else:
                    runs[layer].append(got)
            load.append(os.getloadavg()[0])
    rows = summarize({k: v for k, v in runs.items() if k not in missing}, a.lengths)
    print(f"warm reconstruct, B={a.batch}, 3 columns, {a.rounds} rounds x {a.reps} calls per layer; {machine_line()}; "
          f"load average {min(load):.1f}-{max(load):.1f}")
    print(table([[f"L={r['max_len']} {r['layer']}", f"{r['median_ms']:.1f}", f"{r['min_ms']:.1f}-{r['max_ms']:.1f}",
                  f"{r['p10_ms']:.1f}-{r['p90_ms']:.1f}", f"{r['vs_omp']:.2f}x",
                  f"{min(r['proc_medians_ms']):.1f}-{max(r['proc_medians_ms']):.1f}",
                  f"{r['slowest_over_median_proc']:.2f}", f"{r['calls_over_1_5x_median']}/{r['calls']}"]
                 for r in rows],
                ["layer", "median ms", "range", "p10-p90", "vs omp", "process medians", "slowest/median",
                 "calls >1.5x median"]))
    for layer, err in missing.items():
        print(f"{layer}: not measured ({' '.join(err)})")
    path = write_json(a.out, {"batch": a.batch, "columns": COLUMNS, "users": a.users, "rounds": a.rounds,
                              "reps": a.reps, "load_average": load, "rows": rows, "missing": missing})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
