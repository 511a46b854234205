"""``uih demo``: the main job, end to end, on an embedded default workload.

Sized to finish in about a minute on 2 cores once the kernels are compiled: it says how much disk it will
use before writing, shows progress for each stage, prints how late materialization compares with Fat Rows
as ratios ("4.3x less", "1.6x faster"), and leaves a plot (``demo.png``) in its folder.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from .fmt import fmt_bytes, machine_line, table

# Bytes on disk per unit of the workload, measured after a demo of 2000 users, median history 2000 and
# 4 days (150 MB store, 52 MB thin rows, 439 MB fat rows): the store holds each event once, thin rows
# carry ~1 KB of request features each, fat rows copy up to the union max_len of history into every request.
STORE_B_PER_EVENT = 23.0
THIN_B_PER_REQUEST = 3300.0
FAT_B_PER_REQUEST_EVENT = 8.4


def expected_bytes(cfg) -> int:
    """Roughly what the demo writes under its folder (store, thin rows, fat rows), before it runs."""
    mean_history = min(cfg.median_history * math.exp(cfg.sigma ** 2 / 2), cfg.max_history)
    requests = cfg.users * cfg.days * cfg.requests_per_user_day
    return int(cfg.users * mean_history * STORE_B_PER_EVENT + requests * THIN_B_PER_REQUEST
               + requests * min(mean_history, cfg.union_max_len) * FAT_B_PER_REQUEST_EVENT)


def times(a: float, b: float, more: str, less: str) -> str:
    """``a`` against ``b`` as a ratio in words: "3.1x less" where a < b, "1.2x more" where a > b."""
    if a <= 0 or b <= 0:
        return "-"
    return f"{b / a:.1f}x {less}" if a <= b else f"{a / b:.1f}x {more}"


def write_report(res: dict) -> str:
    rows = []
    for d in res["days"]:
        late = d["store_bytes"] + d["thin_bytes"]
        rows.append([d["day"], f"{d['events']:,}", f"{d['requests']:,}", fmt_bytes(d["store_bytes"]),
                     fmt_bytes(d["thin_bytes"]), fmt_bytes(late), fmt_bytes(d["fat_bytes"]),
                     times(late, d["fat_bytes"], "more", "less") if d["fat_bytes"] else "-"])
    return table(rows, ["day", "new events", "requests", "store (log+seal+compact)", "thin rows",
                        "late-mat total", "fat rows", "late-mat writes"])


def read_report(store_path, thin_dir, fat_dir, tenants, batch_size, progress=True):
    """Per tenant: one training job over all thin rows through DALI vs the Fat Row loader."""
    from tqdm.auto import tqdm

    from .jobs import fat_job, file_list, late_job, warm_up_jobs
    # DALI and the Fat Row path loaded first: the first measured job must not pay for them
    print("loading the loaders (DALI, Fat Rows) before timing anything ...", flush=True)
    warm_up_jobs(store_path, file_list(thin_dir), file_list(fat_dir), [t.projection() for t in tenants], batch_size)
    rows = []
    for t in tqdm(tenants, desc="training jobs", unit="tenant", disable=not progress):
        p = t.projection()
        late = late_job(store_path, file_list(thin_dir), p, batch_size=batch_size, via_dali=True)
        fat = fat_job(file_list(fat_dir), p, batch_size=batch_size)
        rows.append({"tenant": t.name, "max_len": t.max_len, "late": late, "fat": fat})
    return rows


def format_read(rows) -> str:
    out = []
    for r in rows:
        late, fat = r["late"], r["fat"]
        late_eps, fat_eps = late["examples"] / late["seconds"], fat["examples"] / fat["seconds"]
        out.append([r["tenant"], r["max_len"], f"{late['examples']:,}", fmt_bytes(late["read_bytes"]),
                    fmt_bytes(fat["read_bytes"]), times(late["read_bytes"], fat["read_bytes"], "more", "less"),
                    f"{late_eps:,.0f}", f"{fat_eps:,.0f}", times(fat_eps, late_eps, "slower", "faster")])
    return table(out, ["tenant", "max_len", "examples", "late-mat read", "fat read", "late-mat reads",
                       "late ex/s (DALI)", "fat ex/s", "late-mat speed"])


def plot(res: dict, reads: list, path: Path) -> Path:
    """Bytes written per day and examples per second per tenant, late materialization against Fat Rows."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, (w, r) = plt.subplots(1, 2, figsize=(11, 4))
    days = np.array([d["day"] for d in res["days"]])
    w.bar(days - 0.2, [(d["store_bytes"] + d["thin_bytes"]) / 1e6 for d in res["days"]], 0.4,
          label="late materialization (store + thin rows)")
    w.bar(days + 0.2, [d["fat_bytes"] / 1e6 for d in res["days"]], 0.4, label="fat rows")
    w.set_xticks(days, [str(d) for d in days])
    w.set(xlabel="day", ylabel="MB written", title="Bytes written per day")
    names = [x["tenant"] for x in reads]
    at = np.arange(len(names))
    r.bar(at - 0.2, [x["late"]["examples"] / x["late"]["seconds"] for x in reads], 0.4, label="late materialization")
    r.bar(at + 0.2, [x["fat"]["examples"] / x["fat"]["seconds"] for x in reads], 0.4, label="fat rows")
    r.set_xticks(at, [f"{x['tenant']}\nL={x['max_len']}" for x in reads])
    r.set(ylabel="examples / s", title="One training job per tenant (cold cache)")
    for ax in (w, r):
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_demo(args) -> int:
    t = time.perf_counter()
    out = Path(args.out)
    print(f"uih demo on {machine_line()}: loading the engine ...", flush=True)
    from .jobs import ran_on
    from .replay import build, prepare_out
    from .warmup import warm_up
    from .workload import WorkloadConfig
    cfg = WorkloadConfig(users=args.users, days=args.days, median_history=args.median_history)
    need = expected_bytes(cfg)
    where = out if out.exists() else next((p for p in out.resolve().parents if p.exists()), Path("/"))
    print(f"{cfg.users} users, median history {cfg.median_history}, {cfg.days} days, tenants "
          f"{', '.join(f'{x.name}(L={x.max_len})' for x in cfg.tenants)}; about {fmt_bytes(need)} of disk "
          f"in {out}/ ({fmt_bytes(shutil.disk_usage(where).free)} free there)", flush=True)
    prepare_out(out)  # a wrong --out fails now, not after the kernels compiled
    warm_up(cfg, progress=not args.no_progress)
    res = build(out, cfg, progress=not args.no_progress)
    print(f"\nBytes written per day (OS write counters; fat rows keep the last {cfg.union_max_len} events "
          "of every request, late materialization stores each event once):")
    print(write_report(res), flush=True)
    reads = read_report(out / "store", out / "thin", out / "fat", cfg.tenants, args.batch_size,
                        progress=not args.no_progress)
    print("\nOne training job per tenant, cold page cache (OS read counters); late materialization "
          f"reconstructs through the DALI pipeline ({ran_on([r['late'] for r in reads])}):")
    print(format_read(reads))
    tot_late = sum(d["store_bytes"] + d["thin_bytes"] for d in res["days"])
    tot_fat = sum(d["fat_bytes"] for d in res["days"])
    print(f"\nwrites over {cfg.days} days: late materialization {fmt_bytes(tot_late)} vs fat rows "
          f"{fmt_bytes(tot_fat)} ({times(tot_late, tot_fat, 'more', 'less')})")
    st = res["store"]
    print(f"store: version {st['version']}, {st['segments']} segment(s), {st['sealed_events']:,} sealed + "
          f"{st['mutable_events']:,} mutable events; backfill wrote {fmt_bytes(res['backfill']['store_bytes'])}")
    fig = plot(res, reads, out / "demo.png")
    used = sum(v for v in res["files"].values())
    print(f"done in {time.perf_counter() - t:.1f} s; {fmt_bytes(used)} in {out}/; plot: {fig}; "
          f"inspect with: uih inspect {out}/store")
    return 0
