"""Bytes against their floors, per sidecar layout: what each tenant reads and what each day writes.

One workload with nine event types (a dominant view, two mid-frequency types holding about 13% and 9% of
events, six rarer ones holding 2.5% together) is replayed into one store per sidecar layout (the same
events, seqs and thin rows in each), 4 days, a seal a day and a compaction every other day, as ``uih
bench`` does. Per layout: each day's bytes written over its floor (the day's events written once as a
segment, plus the thin rows), and per tenant the bytes a cold job reads (OS counters,
``uih.jobs.late_job``) over its floor (``uih.report.read_floor``), with the over-read by cause
(``uih.amplification``), and what a reader of row ranges would read of the rows the job plans
(``planned_bytes``). Tenants include a selective multi-type filter: the two mid-frequency types, L=512.

    PYTHONPATH=. python bench/bench_bytes.py [--users 300] [--repeats 1] [--layouts before,nested,rare]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from engine.serving import _segment_index, _segments
from uih.amplification import planned_bytes, read_causes
from uih.fmt import machine_line, write_json
from uih.jobs import file_list, late_job
from uih.replay import build
from uih.report import bytes_section, read_floor
from uih.warmup import warm_up
from uih.workload import Tenant, WorkloadConfig

RESULTS = Path(__file__).resolve().parent / "results"

# views, two mid-frequency types, six rarer ones
ACTION_PROBS = (0.755, 0.135, 0.085, 0.007, 0.005, 0.004, 0.004, 0.003, 0.002)
TENANTS = (
    Tenant("ranking", ("item_id", "action"), 4096),
    Tenant("retrieval", ("item_id",), 512, actions=tuple(range(1, 9)), window_days=14),
    Tenant("selective", ("item_id",), 512, actions=(1, 2)),
    Tenant("purchase", ("item_id", "surface", "dwell_ms"), 1024, actions=(3, 4, 5)),
    Tenant("longseq", ("item_id", "action"), 65536),
)
# sidecar layouts compared: part -> the share of a segment's events its least frequent types may hold, and
# whether the segment indexes hold event-type counts (without them typed reads cannot cut rows: "before")
LAYOUTS = {"before": ({"rare": 0.10, "uncommon": 0.25}, False), "nested": ({"rare": 0.10, "uncommon": 0.25}, True),
           "rare": ({"rare": 0.10}, True), "none": ({}, True)}


def _layout(sidecars: dict, type_counts: bool):
    """The patches that make this process write (and read) a layout."""
    build = _segment_index.build
    patches = [mock.patch.object(_segments, "SIDECARS", sidecars)]
    if not type_counts:
        patches.append(mock.patch.object(_segment_index, "build", lambda u, s, t, types=None: build(u, s, t)))
    return patches


def writes(res: dict) -> list:
    return [{"day": d["day"], "total": d["store_bytes"] + d["thin_bytes"], "floor": d["floor_bytes"],
             "log": d["log_bytes"], "seal": d["seal_bytes"], "sidecars": d["sidecar_bytes"],
             "compact": d["compact_bytes"], "thin": d["thin_bytes"], "segments": d["segments"]} for d in res["days"]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=1, help="cold jobs per tenant and layout (bytes barely vary)")
    ap.add_argument("--layouts", default="before,nested,rare", help=f"comma-separated, of {', '.join(LAYOUTS)}")
    ap.add_argument("--out", type=Path, default=RESULTS / "bytes.json")
    a = ap.parse_args(argv)
    layouts = {k: LAYOUTS[k] for k in a.layouts.split(",")}
    cfg = WorkloadConfig(users=a.users, days=4, median_history=2000, requests_per_user_day=2.0,
                         action_probs=ACTION_PROBS, tenants=TENANTS)
    print(f"bench_bytes on {machine_line()}: {a.users} users, layouts {', '.join(layouts)}")
    warm_up(cfg, progress=False)
    t0 = time.perf_counter()
    out = {"machine": machine_line(), "users": a.users, "action_probs": ACTION_PROBS,
           "tenants": [{"name": t.name, "columns": list(t.columns), "max_len": t.max_len, "actions": t.actions,
                        "window_days": t.window_days} for t in TENANTS], "layouts": {}}
    with tempfile.TemporaryDirectory(prefix="bench-bytes-") as d:
        tmp = Path(d)
        for name, (sidecars, type_counts) in layouts.items():
            with contextlib.ExitStack() as stack:
                for patch in _layout(sidecars, type_counts):
                    stack.enter_context(patch)
                res = build(tmp / name, cfg, fat=False, progress=False)
            out["layouts"][name] = {"sidecars": sidecars, "type_counts": type_counts, "writes": writes(res),
                                    "reads": {}}
        first = next(iter(layouts))
        thin = {name: file_list(tmp / name / "thin") for name in layouts}  # the same rows, each store's id
        for t in TENANTS:  # untimed: loads compiled kernels before any measured job
            late_job(tmp / first / "store", thin[first], t.projection(), via_dali=False)
        for t in TENANTS:
            p = t.projection()
            floor = read_floor(tmp / first / "store", thin[first], p, tmp)
            keys, thin_cols = floor.pop("keys"), floor.pop("thin_columns")
            runs = {name: [] for name in layouts}
            for r in range(a.repeats):  # layouts in a rotated order from one repetition to the next
                names = list(layouts)
                for name in names[r % len(names):] + names[:r % len(names)]:
                    runs[name].append(late_job(tmp / name / "store", thin[name], p, via_dali=False))
            for name in layouts:
                read = int(np.median([j["read_bytes"] for j in runs[name]]))
                out["layouts"][name]["reads"][t.name] = {
                    "read_bytes": read, "floor": floor, "read_vs_floor": read / floor["bytes"],
                    "seconds": float(np.median([j["seconds"] for j in runs[name]])),
                    "events_read": int(runs[name][0]["events_read"]),
                    "causes": read_causes(tmp / name / "store", p, keys, read, thin[name], thin_cols),
                    "planned": planned_bytes(tmp / name / "store", thin[name], p)}
    out["seconds"] = time.perf_counter() - t0
    write_json(a.out, out)
    print("\n".join(bytes_section(out)))
    print(f"wrote {a.out} in {out['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
