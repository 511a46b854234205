"""End to end per tenant on a GPU: late materialization on CUDA vs on the host's CPUs vs Fat Rows.

Builds ``uih bench``'s workload on this machine (``--users``, default the full bench's 3,000), then for
each tenant times, as medians of interleaved runs (``uih.report.median_jobs``), page cache dropped:

* ``iter_batches`` with ``device="cuda"``: batches stay in device memory (the job ends at a device sync);
* the same with ``device="cpu"`` on all of this host's cores;
* the Fat Row loader reading the same examples' materialized lists, its tensors copied to the GPU (what a
  GPU training job reading Fat Rows pays).

Before timing, every CUDA batch of the tenant's pass is compared bit for bit with the CPU batch (on the
device). Prints a table, writes bench/results/gpu_tenants.json, exits 1 on a mismatch. Needs CuPy,
numba-cuda and torch on a GPU; no DALI, no cuDF (their rows belong to ``bench/gpu_check.sh``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import engine
from uih.fmt import machine, table, write_json
from uih.jobs import fat_job, file_list, late_job, open_pinned
from uih.replay import build
from uih.report import median_jobs
from uih.workload import WorkloadConfig

RESULTS = Path(__file__).resolve().parent / "results"


def same_batches(store_path, thin, proj, batch_size: int) -> int:
    """Examples compared; raises AssertionError at the first column whose CUDA batch differs from CPU's."""
    import cupy
    store = open_pinned(store_path)
    try:
        gpu = engine.Reconstructor(store, proj, device="cuda")
        cpu = engine.Reconstructor(store, proj, device="cpu")
        n = 0
        for g, c in zip(gpu.iter_batches(thin, batch_size), cpu.iter_batches(thin, batch_size), strict=True):
            for k in c:
                if not bool(cupy.array_equal(g[k], cupy.asarray(c[k]))):
                    raise AssertionError(f"{k}: CUDA batch at example {n} differs from the CPU batch")
            n += c.size
        return n
    finally:
        store.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args(argv)
    cfg = WorkloadConfig(users=args.users, days=4, median_history=2000, requests_per_user_day=2.0)
    rows, failed = [], []
    with tempfile.TemporaryDirectory(prefix="uih_gpu_tenants") as d:
        data = Path(d) / "data"
        t = time.perf_counter()
        build(data, cfg, progress=False)
        print(f"built {args.users} users' workload in {time.perf_counter() - t:.0f} s", flush=True)
        thin, fat = file_list(data / "thin"), file_list(data / "fat")
        for tenant in cfg.tenants:
            p = tenant.projection()
            try:
                compared = same_batches(data / "store", thin, p, args.batch)
            except AssertionError as e:
                failed.append(f"{tenant.name}: {e}")
                compared = None
            cuda, cpu, f = median_jobs([
                lambda p=p: late_job(data / "store", thin, p, batch_size=args.batch, via_dali=False, device="cuda"),
                lambda p=p: late_job(data / "store", thin, p, batch_size=args.batch, via_dali=False, device="cpu"),
                lambda p=p: fat_job(fat, p, batch_size=args.batch, device="cuda")], args.repeats)
            rows.append({"tenant": tenant.name, "max_len": tenant.max_len, "examples": cuda["examples"],
                         "equal_examples": compared, "cuda": cuda, "cpu": cpu, "fat_to_cuda": f})
            print(f"  {tenant.name}: cuda {cuda['seconds']:.3f} s, cpu {cpu['seconds']:.3f} s, "
                  f"fat {f['seconds']:.3f} s", flush=True)
    print(table([[r["tenant"], r["max_len"], r["examples"], "yes" if r["equal_examples"] else "NO",
                  *(f"{r[k]['seconds']:.3f} s" for k in ("cuda", "cpu", "fat_to_cuda")),
                  f"{r['cpu']['seconds'] / r['cuda']['seconds']:.1f}x",
                  f"{r['fat_to_cuda']['seconds'] / r['cuda']['seconds']:.1f}x",
                  f"{r['cuda']['read_bytes'] / 1e6:.0f} / {r['fat_to_cuda']['read_bytes'] / 1e6:.0f} MB"]
                 for r in rows],
                ["tenant", "L", "examples", "CUDA == CPU", "late, CUDA", "late, CPU", "fat -> GPU",
                 "CPU / CUDA", "fat / CUDA", "read late / fat"]))
    write_json(RESULTS / "gpu_tenants.json", {"machine": machine(), "users": args.users, "batch": args.batch,
                                              "repeats": args.repeats, "tenants": rows, "failed": failed})
    for f in failed:
        print("FAIL", f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
