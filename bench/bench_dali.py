"""DALI CPU pipeline vs direct ``Reconstructor.iter_batches`` on every tenant, the way ``uih bench`` measures
them (``uih.jobs.late_job``: cold page cache, batch 256, prefetch 2).

    python bench/bench_dali.py DATA [--repeats 3] [--tenants ranking,longseq] [--pad-in-dali auto]
                                    [--batch-size 256] [--dali-malloc-threshold 32M] [--layout jagged]
                                    [--batches-per-iteration auto|N] [--assemble-in-dali auto|true|false]
                                    [--json out.json]

DATA is a folder written by ``uih.replay.build`` (``store/`` and ``thin/``), e.g. the full ``uih bench``
workload: ``uih.replay.build(DATA, WorkloadConfig(users=3000, days=4, median_history=2000,
requests_per_user_day=2.0), fat=False)``. Runs alternate direct, DALI, direct, DALI... per tenant so that
machine noise hits both alike; medians are reported, with each run's ratio. ``--pad-in-dali true|false|after``
forces where long rows are padded (``dali_plugin._jagged``) instead of the automatic choice.
``--layout jagged`` measures the tenants' jagged projections (values and offsets, no padding) both ways.
``--dali-malloc-threshold`` sets ``DALI_MALLOC_POOL_THRESHOLD`` for this process instead of
``dali_plugin``'s default (``32M`` is DALI's own: batches of up to 32 MB then come from malloc).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from uih.jobs import file_list, late_job
from uih.workload import DEFAULT_TENANTS as TENANTS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tenants", default=",".join(t.name for t in TENANTS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--pad-in-dali", choices=["auto", "true", "false", "after"], default="auto")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--layout", choices=["padded", "jagged"], default="padded")
    ap.add_argument("--dali-malloc-threshold", default=None)
    ap.add_argument("--batches-per-iteration", default="auto", help="auto or an int (uih_pipeline's option)")
    ap.add_argument("--assemble-in-dali", choices=["auto", "true", "false"], default="auto",
                    help="uih_pipeline's option: the engine's kernels write DALI's outputs (true) or DALI copies")
    args = ap.parse_args()
    if args.dali_malloc_threshold:  # before any DALI allocation: DALI reads it once per process
        os.environ["DALI_MALLOC_POOL_THRESHOLD"] = args.dali_malloc_threshold
    padding = {"auto": "auto", "false": "assembled", "after": "after_dali", "true": "dali_slice"}[args.pad_in_dali]
    assembly = {"auto": "auto", "true": "dali_operator", "false": "engine"}[args.assemble_in_dali]
    options = {"padding": padding, "assembly": assembly}  # uih_pipeline's PipelineOptions
    if args.batches_per_iteration != "auto":
        options["batches_per_iteration"] = int(args.batches_per_iteration)
    thin = file_list(os.path.join(args.data, "thin"))
    store = os.path.join(args.data, "store")
    rows = []
    for t in (t for t in TENANTS if t.name in args.tenants.split(",")):
        p = t.projection(layout=args.layout)
        direct, dali = [], []
        for via_dali in (False, True):  # compile the kernels and load DALI before anything is timed
            late_job(store, thin[:1], p, batch_size=args.batch_size, via_dali=via_dali, pipeline_options=options)
        for _ in range(args.repeats):
            direct.append(late_job(store, thin, p, batch_size=args.batch_size, via_dali=False)["seconds"])
            r = late_job(store, thin, p, batch_size=args.batch_size, via_dali=True, pipeline_options=options)
            dali.append(r["seconds"])
        ratios = [b / a for a, b in zip(direct, dali)]
        row = {"tenant": t.name, "max_len": t.max_len, "examples": r["examples"],
               "direct_s": statistics.median(direct), "dali_s": statistics.median(dali),
               "ratio": statistics.median(dali) / statistics.median(direct), "run_ratios": ratios,
               "load": os.getloadavg()[0], "batch_size": args.batch_size, "layout": args.layout,
               "dali_malloc_threshold": os.environ.get("DALI_MALLOC_POOL_THRESHOLD"),
               "batches_per_iteration": args.batches_per_iteration}
        rows.append(row)
        print(f"{t.name:10s} L={t.max_len:6d} direct {row['direct_s']:.3f} s  dali {row['dali_s']:.3f} s  "
              f"ratio {row['ratio']:.2f}x  per run {', '.join(f'{x:.2f}' for x in ratios)}  "
              f"load {row['load']:.1f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
