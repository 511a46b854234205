"""``uih demo``: the main job, end to end, on an embedded default workload."""

from __future__ import annotations

import platform
import time

from ._cli import _fmt_bytes, _table
from ._dataset import build
from ._workload import WorkloadConfig


def machine() -> str:
    import os
    return f"{platform.machine()} {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def write_report(res: dict) -> str:
    rows = []
    for d in res["days"]:
        rows.append([d["day"], f"{d['events']:,}", f"{d['requests']:,}", _fmt_bytes(d["store_bytes"]),
                     _fmt_bytes(d["thin_bytes"]), _fmt_bytes(d["store_bytes"] + d["thin_bytes"]),
                     _fmt_bytes(d["fat_bytes"]),
                     f"{1 - (d['store_bytes'] + d['thin_bytes']) / max(d['fat_bytes'], 1):+.1%}".replace("+", "-", 1)
                     if d["fat_bytes"] else "-"])
    return _table(rows, ["day", "new events", "requests", "store (log+seal+compact)", "thin rows",
                         "late-mat total", "fat rows", "saved vs fat"])


def run_demo(args) -> int:
    cfg = WorkloadConfig(users=args.users, days=args.days, median_history=args.median_history)
    t = time.perf_counter()
    print(f"uih demo on {machine()}: {cfg.users} users, median history {cfg.median_history}, {cfg.days} days, "
          f"tenants {', '.join(f'{x.name}(L={x.max_len})' for x in cfg.tenants)}")
    res = build(args.out, cfg, progress=not args.no_progress)
    print(f"\nBytes written per day (OS write counters; fat rows keep the last {cfg.union_max_len} events "
          "of every request, late materialization stores each event once):")
    print(write_report(res))
    st = res["store"]
    print(f"\nstore: version {st['version']}, {st['segments']} segment(s), {st['sealed_events']:,} sealed + "
          f"{st['mutable_events']:,} mutable events; backfill wrote {_fmt_bytes(res['backfill']['store_bytes'])}")
    print(f"done in {time.perf_counter() - t:.1f} s; inspect with: uih inspect {args.out}/store")
    return 0
