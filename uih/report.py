"""``uih bench``: the paper's tables on this machine, written to ./uih_bench_out (``--out DIR``: all of it
into DIR; ``--update-repo``: the tracked copies, bench/REPORT.md, bench/*.png and bench/results/*.json).

Sections (each a JSON file and a plot):
  writes     bytes written per day, late materialization vs Fat Row at union max length 1K..64K, vs floor
  reads      per-job bytes read and wall time per tenant: late (DALI and direct) vs fat vs floor
  pushdown   the same jobs with each pushdown dimension switched off in turn
  scaling    reconstruction throughput as max_len grows to 256K
  peers      one job, every loader: ours, the fat-row loader, aten's jagged->padded, DuckDB SQL
  pipeline   prefetch on/off and data affinity on/off

Bytes come from /proc/self/io with the page cache dropped first; times are medians of several runs.

REPORT.md also renders, when their JSON files lie beside the run's, the results of scripts of their own:
``bench/bench_order.py`` and ``bench/train_order_ne.py`` (training order: speed, bytes and held-out NE),
``bench/bench_threading.py`` (Numba's threading layers) and ``bench/bench_ray.py`` (Ray Data against in
process). ``python -m uih.report --from-results DIR``
rebuilds REPORT.md from the JSON files in DIR alone, without running anything (the plots are not redrawn).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import engine

from . import lowdup
from .amplification import read_causes
from .fatrows import project_lists
from .fmt import fmt_bytes, machine, machine_line, table, write_json
from .jobs import fat_job, file_list, late_job, open_pinned, ran_on, thin_column_bytes, warm_up_jobs
from .replay import build
from .speed import assembly_speed, dali_epochs, tenant_stages
from .warmup import warm_up
from .workload import WorkloadConfig, synthetic_store

PUSHDOWN = engine.Reconstructor.PUSHDOWN
DEFAULT_OUT = "uih_bench_out"  # a working folder: no run writes into tracked files unless asked to

SIZES = {
    "quick": dict(users=150, days=2, median_history=400, requests=6.0, fat_lengths=(1024, 4096), repeats=1,
                  scaling=(1024, 4096, 16384), scaling_users=8, scaling_batch=32, scaling_batches=(32, 128),
                  low_dup=lowdup.QUICK),
    # the full workload's shape with a fifth of its users: amplification close to full size in minutes
    "medium": dict(users=600, days=4, median_history=2000, requests=2.0, fat_lengths=(1024, 4096), repeats=1,
                   scaling=(1024, 4096, 16384), scaling_users=8, scaling_batch=32, scaling_batches=(32, 128),
                   low_dup=lowdup.LowDupConfig()),
    "full": dict(users=3000, days=4, median_history=2000, requests=2.0, fat_lengths=(1024, 4096, 16384), repeats=3,
                 scaling=(1024, 4096, 16384, 65536, 262144), scaling_users=16, scaling_batch=128,
                 scaling_batches=(128, 512, 1024), low_dup=lowdup.LowDupConfig()),
}


# the file names plots() gives the figures: a report rebuilt from results refers to those a run drew
FIGURES = {"writes": "write_per_day.png", "write_shares": "write_shares.png", "reads": "read_per_tenant.png",
           "scaling": "scaling.png", "peers": "peers.png"}
# the extra sections' JSON files, as their scripts name them in bench/results
ORDER, ORDER_NE, THREADING, RAY, BYTES = "order.json", "order_ne.json", "threading.json", "bench_ray.json", \
    "bytes.json"
LOW_DUP = "lowdup.json"  # python -m uih.lowdup
ORDERS = {"stream": "stream", "shuffle": "shuffle", "permutation": "permutation", "fat_shuffle": "fat shuffle"}
NE_ORDERS = ("stream", "permutation", "shuffle")

CAUSES = {"thin": "thin rows", "metadata": "footers+index", "needed": "needed rows",
          "filter_columns": "filter columns", "row_groups": "rest of row groups", "page_rounding": "4 KiB pages",
          "beyond": "beyond needed groups"}


def mb(n):
    return fmt_bytes(n, "MB")


def _median(runs: list) -> dict:
    out = dict(runs[0])
    out["seconds"] = float(np.median([r["seconds"] for r in runs]))
    out["read_bytes"] = int(np.median([r["read_bytes"] for r in runs]))
    out["runs"] = len(runs)
    out["each"] = [r["seconds"] for r in runs]  # in repetition order: jobs of one repetition ran side by side
    return out


def _pairs(a: dict, b: dict) -> str:
    if "each" not in a or "each" not in b:  # results written before pairs were kept
        return "-"
    return _spread(pair_ratios(a, b))


def _spread(ratios: list) -> str:
    return f"{np.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def pair_ratios(a: dict, b: dict) -> list:
    """``a``'s time over ``b``'s within each repetition of one ``median_jobs`` call: jobs run side by side
    meet the machine's slow and fast minutes together, so on a machine whose speed swings the ratio of a
    pair is steadier than the ratio of two medians."""
    return [x / y for x, y in zip(a["each"], b["each"], strict=True)]


def pair_ratio(a: dict, b: dict) -> tuple:
    """``(median, lowest, highest)`` of ``pair_ratios(a, b)``."""
    r = pair_ratios(a, b)
    return float(np.median(r)), min(r), max(r)


def median_jobs(fns: list, repeats, first=None) -> list:
    """The median run (seconds, bytes read) of each of ``fns``, run in turn within each repetition and in a
    rotated order from one repetition to the next (a, b, c, b, c, a, c, a, b, ...): jobs compared with each
    other meet the machine's slow and fast minutes alike, and none is always the first after other work.

    ``first``: the index of a job that slows down whichever job comes next (the Fat Row job: on this VM a
    late job ran 0.1-0.3 s slower right after it, direct and DALI alike). It opens every repetition and the
    others rotate after it, ``repeats`` rounded up so that each of them follows it equally often; a plain
    rotation of three had the DALI job follow it twice in three repetitions and the direct job never."""
    if first is not None and not (0 <= first < len(fns) and len(fns) > 1):
        raise ValueError(f"first must index one of {len(fns)} jobs and leave others to compare, got {first!r}")
    runs = [[] for _ in fns]
    rest = [i for i in range(len(fns)) if i != first]
    if first is not None:
        repeats = -(-repeats // len(rest)) * len(rest)
    for r in range(repeats):
        if first is not None:
            runs[first].append(fns[first]())
        for k in range(len(rest)):
            i = rest[(k + r) % len(rest)]
            runs[i].append(fns[i]())
    return [_median(r) for r in runs]


# ---- floors -------------------------------------------------------------------------------------
def read_floor(store_path, thin_files, proj, tmp: Path) -> dict:
    """Bytes of exactly the needed events' needed columns (compressed like a segment, each event once)
    plus the needed thin-row columns."""
    store = open_pinned(store_path)
    probe = engine.Projection([*proj.columns, "seq"] if "seq" not in proj.columns else proj.columns,
                              max_len=proj.max_len, actions=proj.actions, window_us=proj.window_us)
    rec = engine.Reconstructor(store, probe, device="cpu")
    users, counts = store.view.user_counts()
    keys = []
    for path in thin_files:
        t = pq.read_table(path, columns=rec.thin_columns)
        for a in range(0, len(t), 512):
            part = t.slice(a, 512)
            b = rec.reconstruct(part)
            uid = np.repeat(part["user_id"].to_numpy(), b["lengths"])
            hw = np.repeat(part["imm_hw"].to_numpy(), b["lengths"])
            mask = np.arange(proj.max_len)[None, :] < b["lengths"][:, None]
            seq = b["seq"][mask]
            sealed = seq < hw
            rank = np.searchsorted(users, uid[sealed])
            keys.append(np.unique(rank.astype(np.int64) << 32 | seq[sealed]))
    keys = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
    need_cols = [c for c in dict.fromkeys(["ts", *store.schema.columns]) if c in proj.columns]
    buf = store.view.gather(users, need_cols)
    rank_all = np.repeat(np.arange(len(users)), np.diff(buf.offsets))
    all_keys = rank_all.astype(np.int64) << 32 | buf.columns["seq"]
    pick = np.searchsorted(all_keys, keys)
    cols = {"user_id": users[rank_all[pick]], "seq": buf.columns["seq"][pick]}
    cols.update({c: buf.columns[c][pick] for c in need_cols})
    path = tmp / "floor.parquet"
    engine.write_parquet(path, pa.table(cols))
    ev_bytes = path.stat().st_size
    store.close()
    # the probe's extra "seq" adds no thin column (tail_seq is always read), so these are the tenant's
    thin_bytes = thin_column_bytes(thin_files, rec.thin_columns)
    return {"events": int(len(keys)), "event_bytes": int(ev_bytes), "thin_bytes": int(thin_bytes),
            "bytes": int(ev_bytes + thin_bytes), "keys": keys, "thin_columns": rec.thin_columns}


# ---- sections -----------------------------------------------------------------------------------
def section_writes(res, cfg) -> dict:
    days = res["days"]
    lengths = sorted({*(int(k) for k in days[0]["fat_bytes_by_len"]), cfg.union_max_len})
    per_day = []
    for d in days:
        fat = {int(k): v for k, v in d["fat_bytes_by_len"].items()}
        fat[cfg.union_max_len] = d["fat_bytes"]
        per_day.append({"day": d["day"], "late": d["store_bytes"] + d["thin_bytes"], "floor": d["floor_bytes"],
                        "log": d["log_bytes"], "seal": d["seal_bytes"], "compact": d["compact_bytes"],
                        "thin": d["thin_bytes"], "segments": d["segments"], "sidecars": d["sidecar_bytes"], "fat": fat})
    late = sum(r["late"] for r in per_day)
    floor = sum(r["floor"] for r in per_day)
    fat_tot = {L: sum(r["fat"][L] for r in per_day) for L in lengths}
    return {"per_day": per_day, "lengths": lengths, "late_total": late, "floor_total": floor,
            "fat_total": fat_tot, "late_vs_floor": late / floor,
            "reduction_vs_fat": {L: 1 - late / fat_tot[L] for L in lengths},
            "backfill_bytes": res["backfill"]["store_bytes"]}


def section_reads(out: Path, cfg, repeats, tmp) -> dict:
    thin, fat = file_list(out / "thin"), file_list(out / "fat")
    rows = []
    for t in cfg.tenants:
        p = t.projection()
        dali, direct, f = median_jobs([lambda: late_job(out / "store", thin, p, via_dali=True),
                                       lambda: late_job(out / "store", thin, p, via_dali=False),
                                       lambda: fat_job(fat, p)], repeats, first=2)
        floor = read_floor(out / "store", thin, p, tmp)
        causes = read_causes(out / "store", p, floor.pop("keys"), direct["read_bytes"], thin, floor.pop("thin_columns"))
        rows.append({"tenant": t.name, "max_len": t.max_len, "columns": list(t.columns), "actions": t.actions,
                     "window_days": t.window_days, "late_dali": dali, "late": direct, "fat": f, "floor": floor,
                     "causes": causes,
                     "late_vs_floor": direct["read_bytes"] / floor["bytes"],
                     "reduction_vs_fat": 1 - direct["read_bytes"] / f["read_bytes"]})
    return {"tenants": rows}


def section_stages(out: Path, cfg, repeats) -> dict:
    """Where one direct pass's time goes, per tenant (``speed.tenant_stages``)."""
    thin = file_list(out / "thin")
    return {"tenants": [{"tenant": t.name, "max_len": t.max_len,
                         **tenant_stages(out / "store", thin, t.projection(), repeat=max(repeats, 1))}
                        for t in cfg.tenants]}


def section_pushdown(out: Path, cfg) -> dict:
    thin = file_list(out / "thin")
    rows = []
    for t in cfg.tenants:
        p = t.projection()
        row = {"tenant": t.name}
        for label, dims in [("all on", PUSHDOWN)] + [(f"{d} off", PUSHDOWN - {d}) for d in sorted(PUSHDOWN)]:
            r = late_job(out / "store", thin, p, via_dali=False, pushdown=dims)
            row[label] = {"read_bytes": r["read_bytes"], "seconds": r["seconds"]}
        rows.append(row)
    return {"tenants": rows}


def section_scaling(size, tmp) -> dict:
    lengths = list(size["scaling"])
    history = max(lengths) + max(lengths) // 8
    store = synthetic_store(tmp / "scaling", size["scaling_users"], history)
    rows = assembly_speed(store, lengths, size["scaling_batch"], size["scaling_users"])
    # the shortest rows once more at growing batch sizes: what a call's fixed work costs per byte
    batches = [assembly_speed(store, lengths[:1], b, size["scaling_users"])[0] for b in size["scaling_batches"]]
    store.close()
    return {"rows": rows, "users": size["scaling_users"], "history": history, "batch": size["scaling_batch"],
            "batch_rows": batches}


def duckdb_job(store_path, thin_file, p) -> tuple:
    import duckdb
    store = open_pinned(store_path)
    segs = [str(Path(store_path) / s.parts["main"].file) for s in store.segments]
    store.close()
    cols = p.columns
    filt = []
    if p.actions is not None:
        filt.append(f"action IN ({', '.join(map(str, p.actions))})")
    if p.window_us is not None:
        filt.append(f"ts >= request_ts - {p.window_us}")
    where = (" AND " + " AND ".join(filt)) if filt else ""
    need = list(dict.fromkeys(["seq", "ts", "action", *cols]))
    tail_cols = ", ".join(f"unnest(tail_{c}) AS {c}" for c in need)
    sel = ", ".join(f"e.{c}" for c in need if c != "seq")
    aggs = ", ".join(f"list({c} ORDER BY seq) AS {c}" for c in cols)
    sql = f"""
    WITH thin AS (SELECT row_number() OVER () - 1 AS rid, * FROM read_parquet('{thin_file}')),
    imm AS (SELECT t.rid, t.request_ts, e.seq, {sel} FROM thin t
            JOIN read_parquet({segs!r}) e ON e.user_id = t.user_id AND e.seq < t.imm_hw),
    tail AS (SELECT rid, request_ts, {tail_cols} FROM thin),
    u AS (SELECT * FROM (SELECT rid, request_ts, {', '.join(need)} FROM imm UNION ALL
                         SELECT rid, request_ts, {', '.join(need)} FROM tail) WHERE TRUE {where}),
    r AS (SELECT *, row_number() OVER (PARTITION BY rid ORDER BY seq DESC) AS rn FROM u)
    SELECT rid, {aggs} FROM r WHERE rn <= {p.max_len} GROUP BY rid ORDER BY rid"""
    con = duckdb.connect()
    con.execute("SET threads TO 2")
    t0 = time.perf_counter()
    res = con.sql(sql).to_arrow_table()
    B = pq.ParquetFile(thin_file).metadata.num_rows
    # rows with nothing kept do not come back from GROUP BY: place the others by rid
    full = {}
    rid = res.column("rid").to_numpy()
    for c in cols:
        lst = res.column(c).combine_chunks()
        padded = project_lists({c: lst}, np.zeros(len(rid), np.int64),
                               engine.Projection([c], max_len=p.max_len, align=p.align, pad_value=p.pad_value))
        arr = np.full((B, p.max_len), p.pad_value, padded[c].dtype)
        arr[rid] = padded[c]
        full[c] = arr
    seconds = time.perf_counter() - t0
    return full, seconds


def section_peers(out: Path, cfg, repeats, low_dup: lowdup.LowDupConfig | None = None) -> dict:
    """One of the bench's tenants through every loader, and the low-duplication job (``uih.lowdup``): ours
    against the Fat Row loader in interleaved rounds, ``low_dup`` its size (None: skipped)."""
    import torch
    t = cfg.tenants[0]
    p = t.projection()
    thin, fat = file_list(out / "thin")[0], file_list(out / "fat")[0]
    ours, ours_dali, f = median_jobs([lambda: late_job(out / "store", [thin], p, via_dali=False),
                                      lambda: late_job(out / "store", [thin], p, via_dali=True),
                                      lambda: fat_job([fat], p)], repeats, first=2)
    store = open_pinned(out / "store")
    mine = engine.Reconstructor(store, p, device="cpu").reconstruct(pq.read_table(thin))
    store.close()
    duck, duck_s = duckdb_job(out / "store", thin, p)
    duck_equal = all(np.array_equal(duck[c], mine[c]) for c in p.columns)
    # aten pads values we already gathered: a peer doing less work (no versioned cut, no tail merge)
    lens = mine["lengths"].astype(np.int64)
    mask = np.arange(p.max_len)[None, :] < lens[:, None]
    offsets = torch.from_numpy(np.r_[0, np.cumsum(lens)])
    vals = [torch.from_numpy(mine[c][mask]).reshape(-1, 1) for c in p.columns]
    aten = torch.ops.aten._jagged_to_padded_dense_forward
    times = []
    for _ in range(max(repeats, 3)):
        t0 = time.perf_counter()
        for a in range(0, len(lens), 256):
            o = offsets[a:a + 257] - offsets[a]
            for v in vals:
                aten(v[int(offsets[a]):int(offsets[min(a + 256, len(lens))])], [o], [p.max_len], 0.0)
        times.append(time.perf_counter() - t0)
    n = ours["examples"]
    rows = [
        {"loader": "uih (this engine), iter_batches", "seconds": ours["seconds"], "read_bytes": ours["read_bytes"]},
        {"loader": f"uih through DALI ({ran_on([ours_dali])})", "seconds": ours_dali["seconds"],
         "read_bytes": ours_dali["read_bytes"]},
        {"loader": "fat rows: PyArrow lists -> padded (NumPy)", "seconds": f["seconds"], "read_bytes": f["read_bytes"]},
        {"loader": "DuckDB SQL over the same Parquet (window fn)", "seconds": duck_s, "read_bytes": None,
         "equal_to_ours": duck_equal},
        {"loader": "aten _jagged_to_padded_dense (pre-gathered, pad only)", "seconds": float(np.median(times)),
         "read_bytes": None},
    ]
    for r in rows:
        r["examples_per_s"] = n / r["seconds"]
        r["ours_speedup"] = r["seconds"] / ours["seconds"]
    res = {"tenant": t.name, "max_len": t.max_len, "examples": n, "rows": rows, "duckdb_equal": duck_equal,
           "dali_pairs": pair_ratio(ours_dali, ours)}
    if low_dup is not None:
        res["low_dup"] = lowdup.run(out.parent / "lowdup", low_dup)
    return res


def section_pipeline(out: Path, cfg, repeats) -> dict:
    thin = file_list(out / "thin")
    p = cfg.tenants[0].projection()
    rows = []
    settings = [("prefetch on, affinity on", {}), ("prefetch off", {"prefetch": 0}),
                ("affinity off (chunk = batch, no row-group cache)", {"affinity": False})]
    jobs = median_jobs([lambda kw=kw: late_job(out / "store", thin, p, via_dali=False, **kw) for _, kw in settings],
                       repeats)
    for (label, _), r in zip(settings, jobs):
        rows.append({"setting": label, "seconds": r["seconds"], "read_bytes": r["read_bytes"],
                     "rchar": r["rchar"], "examples_per_s": r["examples"] / r["seconds"]})
    # prefetch on and off on every tenant, in pairs taken in turn (on first, then off first...), the pair's
    # ratio counted too: a single cold job swings by 10-20% on a small shared machine
    tenants = []
    for t in cfg.tenants:
        on, off = median_jobs([lambda depth=depth: late_job(out / "store", thin, t.projection(),  # noqa: B023
                                                           via_dali=False, prefetch=depth) for depth in (2, 0)],
                              max(repeats, 5))
        tenants.append({"tenant": t.name, "max_len": t.max_len, "on_s": on["seconds"], "off_s": off["seconds"],
                        "pair_ratios": pair_ratios(on, off)})
    # worker processes: steady epochs (what a training loop sees after the first), startup apart
    workers = [dali_epochs(out / "store", thin, p, w, epochs=1 + max(repeats, 2)) for w in (0, 1, 2)]
    return {"tenant": cfg.tenants[0].name, "rows": rows, "workers": workers, "prefetch": tenants}


# ---- report -------------------------------------------------------------------------------------
def low_dup_lines(d: dict) -> list:
    """The low-duplication job's table: each loader's rounds (median, range, slowest over median) and the
    round-by-round speed-up."""
    c = d["config"]
    sp = d["speedup_pairs"]
    rows = [[name, f"{d[k]['median']:.3f} s", f"{d[k]['min']:.3f}-{d[k]['max']:.3f} s",
             f"{d[k]['slowest_over_median']:.2f}", f"{d[k]['examples'] / d[k]['median']:,.0f}", mb(d[k]["read_bytes"])]
            for k, name in (("ours", "uih (this engine), iter_batches"),
                            ("fat", "fat rows: PyArrow lists -> padded (NumPy)"))]
    return ["### The low-duplication job", "",
            f"{d['examples']:,} examples over {c['users']:,} users (each about {d['examples'] / c['users']:.1f} "
            f"times), log-normal histories (median {c['median_history']:,}, sigma {c['sigma']}, at most "
            f"{c['max_history']:,}; {d['events']:,} events), max_len {c['max_len']:,}, columns "
            f"{', '.join(c['columns'])}; the store was built by {c['chunks']} appends each followed by a seal, a "
            f"compaction every {c['compact_every']} ({d['segments']} segments at the end). Files: store "
            f"{fmt_bytes(d['files']['store'])}, thin rows {fmt_bytes(d['files']['thin'])}, fat rows "
            f"{fmt_bytes(d['files']['fat'])}. "
            f"{len(d['ours']['each'])} interleaved rounds, each job from a cold page cache, who goes first "
            "alternating.", "",
            table(rows, ["loader", "median", "range", "slowest / median", "examples/s", "bytes read (median)"]),
            "", f"Fat Row time over ours, round by round: median {sp['median']:.2f}x, range "
            f"{sp['min']:.2f}-{sp['max']:.2f}x.", ""]


def _newer_low_dup(results: Path | None, in_run: dict | None) -> dict | None:
    """The low-duplication job's figures: ``python -m uih.lowdup``'s JSON in ``results`` when there is one
    (a run of the job alone, newer than the bench's), else the bench run's own."""
    path = None if results is None else Path(results) / LOW_DUP
    return json.loads(path.read_text()) if path is not None and path.is_file() else in_run


def _write_floor_note(days) -> str:
    """What the write floor leaves out: the durable log's copy of each event, measured per day."""
    quiet = [d for d in days if not d["compact"]] or days
    log_vs_events = [d["log"] / max(d["floor"] - d["thin"], 1) for d in quiet]
    with_log = [(d["floor"] + d["log"]) / d["floor"] for d in quiet]
    return (f"Durability sets a second floor: the log holds each event once more before it is acknowledged, at "
            f"{min(log_vs_events):.2f}-{max(log_vs_events):.2f}x the bytes of the day's events as a segment, so the "
            f"floor plus the log alone is {min(with_log):.2f}-{max(with_log):.2f}x on days without compaction. "
            "Compaction cannot be spread thin either: a store kept to K segments must, N daily seals in, write a "
            "segment of at least N/K days in one compaction (bench/bench_compaction.py measures policies over "
            "years of seals, and what each extra segment costs readers).")


def plots(R, out_dir: Path) -> dict:
    """Draw the report's figures into ``out_dir``; returns figure key -> file name."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figs = {"writes": "write_per_day.png", "write_shares": "write_shares.png", "reads": "read_per_tenant.png",
            "scaling": "scaling.png", "peers": "peers.png"}
    for key, draw in [("writes", _plot_writes), ("write_shares", _plot_write_shares), ("reads", _plot_reads),
                      ("scaling", _plot_scaling), ("peers", _plot_peers)]:
        fig = draw(plt, R)
        fig.savefig(out_dir / figs[key], dpi=110, bbox_inches="tight"), plt.close(fig)
    return figs


def _day_axis(ax, days: list) -> None:
    """Whole days on the x axis (matplotlib would otherwise tick 0.5, -0.5)."""
    ax.set_xticks(days)
    ax.set_xlim(min(days) - 0.6, max(days) + 0.6)


def _legend_outside(ax) -> None:
    """The legend right of the axes, where it cannot cover the data."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)


def _plot_writes(plt, R):
    w = R["writes"]
    days = [d["day"] for d in w["per_day"]]
    fig, ax = plt.subplots(figsize=(8, 4))
    for L in w["lengths"]:
        ax.plot(days, [d["fat"][L] / 1e6 for d in w["per_day"]], "o--", label=f"fat rows, union max_len {L}")
    ax.plot(days, [d["late"] / 1e6 for d in w["per_day"]], "s-", lw=2, label="late materialization")
    ax.plot(days, [d["floor"] / 1e6 for d in w["per_day"]], "k:", label="floor")
    ax.set(xlabel="day", ylabel="MB written (log scale)", title="Write bandwidth per day", yscale="log")
    _day_axis(ax, days)
    _legend_outside(ax)
    fig.tight_layout()
    return fig


def _plot_write_shares(plt, R):
    w = R["writes"]
    days = np.array([d["day"] for d in w["per_day"]])
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = np.zeros(len(days))
    for part in ("log", "seal", "compact", "thin"):
        v = np.array([d[part] for d in w["per_day"]]) / 1e6
        ax.bar(days, v, 0.8, bottom=bottom, label=part)
        bottom += v
    # one segment across each day's bar: a line handle in the legend, nothing past the axes
    ax.hlines([d["floor"] / 1e6 for d in w["per_day"]], days - 0.4, days + 0.4, colors="k", lw=3, label="floor")
    ax.set(xlabel="day", ylabel="MB written", title="Late materialization writes: shares vs floor")
    _day_axis(ax, list(days))
    _legend_outside(ax)
    fig.tight_layout()
    return fig


def _plot_reads(plt, R):
    t = R["reads"]["tenants"]
    x = np.arange(len(t))
    fig, ax = plt.subplots(figsize=(8, 4.2))
    bars = [("late", "read_bytes", "late materialization"), ("fat", "read_bytes", "fat rows"),
            ("floor", "bytes", "floor")]
    for i, (k, field, lab) in enumerate(bars):
        ax.bar(x + (i - 1) * 0.27, [r[k][field] / 1e6 for r in t], 0.27, label=lab)
    top = max(r["fat"]["read_bytes"] for r in t) / 1e6
    for xi, r in zip(x, t):  # a linear axis shows the gap; the label says it in one number
        ratio = r["fat"]["read_bytes"] / max(r["late"]["read_bytes"], 1)
        ax.annotate(f"fat reads {ratio:.1f}x", (xi, r["fat"]["read_bytes"] / 1e6 + 0.02 * top), ha="center",
                    va="bottom", fontsize=8)
    ax.set_xticks(x, [f"{r['tenant']}\n(L={r['max_len']})" for r in t])
    ax.set(ylabel="MB read per job", title="Per-job bytes read per tenant", ylim=(0, top * 1.15))
    _legend_outside(ax)
    fig.tight_layout()
    return fig


def _plot_scaling(plt, R):
    sc = R["scaling"]
    s = sc["rows"]
    fig, ax = plt.subplots(figsize=(8, 4.6))
    Ls = [r["max_len"] for r in s]
    ax.plot(Ls, [r["assembly_gbps"] for r in s], "o-", label="assembly (kernels)")
    ax.plot(Ls, [r["end_to_end_gbps"] for r in s], "s-", label="reconstruct, end to end")
    ax.plot(Ls, [r["copy_gbps"] for r in s], "k--", label="2-thread copy of the output's bytes")
    if all("copy_mem_gbps" in r for r in s):
        ax.plot(Ls, [r["copy_mem_gbps"] for r in s], "k:", label="same copy, source out of cache")
    ax.set(xscale="log", xlabel="max_len", ylabel="GB/s of output", title="Throughput as histories grow")
    _legend_outside(ax)
    users, batch = sc.get("users"), sc.get("batch")
    fig.text(0.01, 0.01, "Why reconstruction can beat a copy: the copy reads a source as large as the padded "
             "output and writes it,\nso past the cache it moves 2 bytes through memory per output byte. "
             f"Reconstruction writes each output byte once,\nreading the decoded runs of only {users} users that "
             f"the batch's {batch} requests share: they stay in cache.", fontsize=7.5, va="bottom")
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    return fig


def _plot_peers(plt, R):
    pr = R["peers"]["rows"][::-1]
    pad_only = ["pad only" in r["loader"] for r in pr]
    fig, ax = plt.subplots(figsize=(9, 4))
    colors = ["lightgrey" if p else ("C0" if r["loader"].startswith("uih") else "C1") for r, p in zip(pr, pad_only)]
    names = [f"{r['loader']}\nnot a loader: the padding step alone" if p else r["loader"] for r, p in zip(pr, pad_only)]
    bars = ax.barh(names, [r["examples_per_s"] for r in pr], color=colors, hatch=["//" if p else "" for p in pad_only],
                   edgecolor="k", lw=0.5)
    for b, r in zip(bars, pr):
        ax.text(b.get_width(), b.get_y() + b.get_height() / 2, f" {r['examples_per_s']:,.0f}/s", va="center",
                fontsize=8)
    ax.set(xlabel="examples/s (log scale)", title=f"One job ({R['peers']['tenant']}), every loader", xscale="log")
    ax.set_xlim(right=max(r["examples_per_s"] for r in pr) * 4)  # room for the labels
    if any(pad_only):
        fig.text(0.01, 0.01, "Hatched: aten pads rows that were already gathered in memory; it reads nothing from "
                 "disk and slices nothing,\nso it bounds only the padding step. Blue: this engine; orange: "
                 "loaders that read the same job from files.", fontsize=7.5, va="bottom")
        fig.tight_layout(rect=(0, 0.1, 1, 1))
    else:
        fig.tight_layout()
    return fig


# ---- training order and threading layers (each from its script's JSON) ----------------------------------
def _range(median: float, lo: float, hi: float, fmt: str, unit: str = "") -> str:
    return f"{median:{fmt}}{unit} ({lo:{fmt}}-{hi:{fmt}})"


def order_speed(d: dict) -> tuple:
    """(headers, rows) of ``order.json``: examples/s per order (median of the rounds, their range) and the
    paired ratios of examples/s (within each round; median and range)."""
    ratios = [("shuffle_vs_stream", "shuffle / stream"), ("shuffle_vs_permutation", "shuffle / permutation"),
              ("permutation_vs_stream", "permutation / stream"), ("shuffle_vs_fat", "shuffle / Fat Rows")]
    rows = []
    for t in d["tenants"]:
        runs = t["runs"]
        rows.append([t["tenant"], f"{t['max_len']:,}", f"{t['thin_rows']:,}",
                     *(_range(runs[k]["examples_per_s"], min(runs[k]["eps_each"]), max(runs[k]["eps_each"]), ",.0f")
                       for k in ORDERS),
                     *(_range(t["ratios"][k]["median"], t["ratios"][k]["min"], t["ratios"][k]["max"], ".2f", "x")
                       for k, _ in ratios)])
    return (["tenant", "max_len", "examples", *(f"{v} ex/s" for v in ORDERS.values()),
             *(f"{label}, pairs" for _, label in ratios)], rows)


def order_bytes(d: dict) -> tuple:
    """(headers, rows) of ``order.json``: bytes read per epoch in each order (the OS's count, median of the
    rounds), the compressed columns each loader needs, and the events the late orders read."""
    late = [k for k in ORDERS if k != "fat_shuffle"]
    rows = [[t["tenant"], f"{t['max_len']:,}", *(mb(t["runs"][k]["read_bytes"]) for k in ORDERS),
             mb(t["thin_column_bytes"]), mb(t["runs"]["fat_shuffle"]["column_bytes"]),
             " / ".join(f"{t['runs'][k]['events_read'] / 1e6:.2f} M" for k in late)] for t in d["tenants"]]
    return (["tenant", "max_len", *(f"{v} read" for v in ORDERS.values()), "thin-row columns",
             "fat-row columns", "events read: " + " / ".join(late)], rows)


def order_ne(d: dict) -> tuple:
    """(headers, rows) of ``order_ne.json``: held-out NE per seed and its min / median / max, per order."""
    s = d["summary"]
    rows = [[ORDERS[o], " ".join(f"{x:.4f}" for x in s[o]["ne"]), f"{s[o]['min']:.4f}", f"{s[o]['median']:.4f}",
             f"{s[o]['max']:.4f}"] for o in NE_ORDERS if o in s]
    return ["order", "held-out NE per seed", "min", "median", "max"], rows


def threading_layers(d: dict) -> tuple:
    """(headers, rows) of ``threading.json``: warm reconstruct time per threading layer and max_len."""
    rows = [[f"{r['max_len']:,}", r["layer"], f"{r['median_ms']:.1f}", f"{r['min_ms']:.1f}-{r['max_ms']:.1f}",
             f"{r['p10_ms']:.1f}-{r['p90_ms']:.1f}", f"{r['vs_omp']:.2f}x",
             f"{min(r['proc_medians_ms']):.1f}-{max(r['proc_medians_ms']):.1f}",
             f"{r['slowest_over_median_proc']:.2f}", f"{r['calls_over_1_5x_median']} / {r['calls']}"]
            for r in d["rows"]]
    return (["max_len", "layer", "median (ms)", "range (ms)", "p10-p90 (ms)", "median vs omp",
             "process medians (ms)", "slowest / median process", "calls over 1.5x median"], rows)


def _machine(d: dict) -> str:
    m = d.get("machine", {})
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores"


def _goals(d: dict) -> str:
    """The bench's goals as its JSON records them, met or missed per tenant."""
    said = {"shuffle_vs_stream_0.8": "shuffle at 0.8x stream or better",
            "shuffle_vs_fat_2x": "shuffle at 2x the fat shuffle or better"}
    out = []
    for key, what in said.items():
        met = [t["tenant"] for t in d["tenants"] if t["goals"].get(key)]
        missed = [t["tenant"] for t in d["tenants"] if key in t["goals"] and not t["goals"][key]]
        out.append(f"{what}: met by {', '.join(met) or 'none'}"
                   + (f", missed by {', '.join(missed)}" if missed else ""))
    return "Goals (pair medians): " + "; ".join(out) + "."


def _order_section(d: dict, ne: dict | None) -> list:
    size, lines = d["size"], ["## Training order", ""]
    lines += [f"Measured by `bench/bench_order.py` on {d['date']} ({_machine(d)}; reconstructor on {d['device']}), "
              f"on a workload of its own: {size['users']:,} users, median history {size['median_history']:,}, "
              f"{size['days']} days, {size['requests']} requests per user and day, "
              f"{d['tenants'][0]['thin_rows']:,} thin rows; batch {d['batch']}, default window {d['window']:,}. "
              "Each job is one cold epoch (page cache dropped, store opened afresh); a tenant's jobs run in "
              f"{size['repeats']} interleaved round(s), each with its own seed, the Fat Row job opening each. "
              "Orders: stream (`iter_batches` in the thin rows' order), shuffle (the default: "
              "`order=\"shuffle\"`), permutation (a full random permutation: `shuffle_window` = the thin rows), "
              "fat shuffle (the Fat Row loader, `uih.fatrows`, over fat rows at the workload's union max_len, its "
              "row groups in a random order and rows permuted within windows of the default size).", "",
              table(*reversed(order_speed(d))), "",
              "Examples/s: the median of the rounds and their range. Pairs: one order's examples/s over the "
              "other's within each round (the two met the same minutes of the machine), median and range. "
              + _goals(d), "",
              table(*reversed(order_bytes(d))), "",
              "Bytes read per epoch (`/proc/self/io`, median of the rounds): the late orders read the store and "
              "the thin rows, the Fat Row loader its fat rows. Columns: the compressed bytes of the columns each "
              "loader needs (the Parquet footers' sizes). Events read: the events the chunks decoded, medians.", ""]
    if ne is not None:
        p = ne["params"]
        met = ne["summary"].get("goal_shuffle_within_permutation_spread")
        lines += [f"Model quality (`bench/train_order_ne.py`, {ne['date']}, {_machine(ne)}): the HSTU-style loop "
                  f"trained in each order, {p['users']:,} users x {p['history']:,} events, "
                  f"{ne['train_rows']:,} train / {ne['test_rows']:,} held-out examples (held-out users), max_len "
                  f"{p['max_len']}, {p['epochs']} epoch(s), batch {p['batch']}, {p['seeds']} seeds (the model's "
                  "and the order's). Held-out normalized entropy, lower is better:", "",
                  table(*reversed(order_ne(ne))), ""]
        if met is not None:
            lines += [f"The default shuffle's median NE {'lies' if met else 'does not lie'} within the full "
                      "permutation's seed spread.", ""]
    return lines


def _threading_section(d: dict) -> list:
    load = d.get("load_average") or [float("nan")]
    lines = ["## Numba threading layer", "",
             f"Measured by `bench/bench_threading.py` ({_machine(d)}): warm `reconstruct` of {d['batch']} examples, "
             f"columns {', '.join(d['columns'])}, {d['users']} users; {d['rounds']} rounds x {d['reps']} calls "
             "per layer, each (round, layer) a fresh process, rounds visiting the layers in a rotated order; "
             f"load average {min(load):.1f}-{max(load):.1f} during the run.", "",
             table(*reversed(threading_layers(d))), "",
             "Median, range and p10-p90: over every timed call of the layer. Process medians: each process's "
             "median call; slowest / median process: the slowest of them over their median (the run-to-run "
             "spread).", ""]
    lines += [f"{layer}: not measured ({' '.join(err)})." for layer, err in d.get("missing", {}).items()]
    return lines


def ray_epochs(d: dict) -> tuple:
    """(headers, rows) of ``bench_ray.json``: in process against Ray tasks on the same job, and the adapter
    before (an actor pool started per epoch) when the file keeps it."""
    rng = lambda r: f"{r[0] / 1e3:,.0f}-{r[1] / 1e3:,.0f} K"  # noqa: E731
    rows = []
    for name, r in d["rows"].items():
        if "examples_per_s" in r:  # in process
            rows.append([name, "-", "-", f"{r['examples_per_s']:,.0f} ({rng(r['examples_per_s_range'])})",
                         f"{r['examples_per_s']:,.0f}", "-", "-"])
        else:
            rows.append([name, f"{r['first_epoch_first_batch_s']:.2f} s", f"{r['warm_first_batch_s']:.2f} s",
                         f"{r['warm_after_first_per_s']:,.0f} ({rng(r['warm_after_first_per_s_range'])})",
                         f"{r['warm_epoch_per_s']:,.0f}",
                         f"{r['vs_in_process_warm']:.2f}x / {r['vs_in_process_fresh']:.2f}x",
                         f"{r['object_store_bytes_per_example'] / 1e3:,.1f} kB"])
    for name, r in d.get("before", {}).get("rows", {}).items():
        if name.startswith("Ray"):  # the actor pool started per epoch, consumed by the driver
            rows.append([f"before: {name}", "-", f"{r['startup_s']:.2f} s", f"{r['steady_examples_per_s']:,.0f}",
                         f"{r['examples_per_s']:,.0f}", "-", "-"])
    return (["epoch of the same job", "1st batch, 1st epoch", "1st batch, warm epoch",
             "examples/s after the 1st batch (range)", "examples/s, whole epoch",
             "per core vs in process (warm / fresh)", "object store per example"], rows)


def _ray_section(d: dict) -> list:
    p = d["params"]
    return ["## Ray Data", "",
            f"Measured by `bench/bench_ray.py` ({_machine(d)}): {p['requests']:,} examples over {p['users']:,} "
            f"users x {p['history']:,} events, max_len {p['max_len']}, 3 columns, batch {p['batch']}, order "
            f"{p['order']}. In process: one epoch with a fresh `Reconstructor` or a warm one (its arena keeps the "
            "decoded row groups, as a Ray worker's does). Ray: `uih_dataset` tasks of 1 CPU and 1 Numba thread, "
            "consumed by the driver or by 2 `streaming_split` consumers; warm: the median and range of "
            f"{p['repeat']} epochs after the first. The 1st epoch of the first Ray row pays the worker processes' "
            "start and kernel load; later rows find the processes running. Per core: Ray's rate after the "
            "first batch over in process on as many threads as tasks.", "",
            table(*reversed(ray_epochs(d))), ""]


def bytes_section(d: dict) -> list:
    """REPORT.md's section of ``bench/bench_bytes.py``'s JSON: per sidecar layout, each tenant's bytes read
    over its floor, each day's bytes written over its floor, and the over-read by cause."""
    names = list(d["layouts"])
    L = d["layouts"]

    def layout(n):
        parts = ", ".join(f"{k} (types holding <= {v:.0%})" for k, v in L[n]["sidecars"].items()) or "none"
        return f"{n}: sidecars {parts}, {'with' if L[n]['type_counts'] else 'without'} event-type counts in the index"

    def read(n, t):
        r = L[n]["reads"][t]
        return f"{mb(r['read_bytes'])} / {r['read_vs_floor']:.2f}x"

    def wrote(w):
        return f"{w['total'] / w['floor']:.3f}x ({w['sidecars'] / w['floor']:.3f}x, {w['compact'] / w['floor']:.2f}x)"
    lines = ["## Bytes against their floors, per sidecar layout", "",
             f"Measured by `bench/bench_bytes.py` ({d['machine']}): {d['users']:,} users, 4 days, nine event types "
             f"(shares {', '.join(f'{x:.1%}' for x in d['action_probs'])}), one store per layout built from the "
             "same events. Layouts: " + "; ".join(map(layout, names)) + ".", "",
             table([[t["name"], t["max_len"], ",".join(map(str, t["actions"] or ())) or "all",
                     "-" if t["window_days"] is None else f"{t['window_days']:g} d",
                     mb(L[names[0]]["reads"][t["name"]]["floor"]["bytes"]),
                     *(read(n, t["name"]) for n in names)] for t in d["tenants"]],
                   ["tenant", "max_len", "types", "window", "floor", *(f"{n}: read / floor" for n in names)]), "",
             "Reads: OS-counted bytes of one cold job (`iter_batches`) over the floor (the needed columns of exactly "
             "the needed sealed events, plus the needed thin-row columns).", ""]
    days = L[names[0]]["writes"]
    lines += [table([[w0["day"], mb(w0["floor"]),
                      *(wrote(L[n]["writes"][i]) for n in names)] for i, w0 in enumerate(days)],
                    ["day", "floor", *(f"{n}: total (sidecars, compaction)" for n in names)]), "",
              "Writes: the day's log, seal, compaction and thin rows over its floor (the day's events written once "
              "as a segment, plus the thin rows); sidecars and compaction as shares of the same floor.", ""]
    if all("planned" in r for n in names for r in L[n]["reads"].values()):
        def planned(n, t):
            r = L[n]["reads"][t]
            est = r["causes"]["thin"] + r["planned"]["metadata"] + r["planned"]["data"]
            return f"{r['planned']['rows']:,} / {est / r['floor']['bytes']:.2f}x"
        lines += [table([[t["name"], f"{L[names[0]]['reads'][t['name']]['floor']['events']:,}",
                          *(planned(n, t["name"]) for n in names)] for t in d["tenants"]],
                        ["tenant", "needed events", *(f"{n}: rows planned / row-range read / floor" for n in names)]),
                  "", "Rows planned: the store rows the job's plans name, each once. Row-range read: what a reader "
                  "decoding only those rows would read (their share of each column chunk, the parts' footers and "
                  "indexes, and the thin rows as this job read them), over the floor: an estimate for page-level "
                  "reads, which whole pages round up. The reader measured above decodes whole 16K-row groups.", ""]
    causes = list(CAUSES)
    lines += [table([[t["name"], n, f"{L[n]['reads'][t['name']]['events_read']:,}",
                      *(fmt_bytes(L[n]["reads"][t["name"]]["causes"][c], "kB").split()[0] for c in causes)]
                     for t in d["tenants"] for n in names],
                    ["tenant", "layout", "events decoded", *(f"{CAUSES[c]} (kB)" for c in causes)]), "",
              "Over-read by cause, as in the per-job table of `uih bench`.", ""]
    return lines


def extra_sections(results: Path | None) -> list:
    """REPORT.md's sections from the scripts of their own whose JSON files lie in ``results``."""
    if results is None:
        return []
    found = {n: json.loads((results / n).read_text()) for n in (ORDER, ORDER_NE, THREADING, RAY, BYTES)
             if (results / n).is_file()}
    lines = []
    if ORDER in found:
        lines += _order_section(found[ORDER], found.get(ORDER_NE))
    if THREADING in found:
        lines += _threading_section(found[THREADING])
    if RAY in found:
        lines += _ray_section(found[RAY])
    if BYTES in found:
        lines += bytes_section(found[BYTES])
    return lines


def render(R, figs, results: Path | None = None) -> str:
    """REPORT.md from a run's results ``R``, its plots ``figs`` and, from ``results``, ``extra_sections``."""
    m, cfg = R["machine"], R["config"]
    w, reads = R["writes"], R["reads"]["tenants"]
    L = cfg["union_max_len"]
    cause_unit = "MB" if max(r["floor"]["bytes"] for r in reads) >= 1e7 else "kB"  # the quick run's are small
    lines = [
        "# UIH late materialization: benchmark report", "",
        f"Generated by `uih bench{'' if R['mode'] == 'full' else ' --' + R['mode']}` on {R['date']}. "
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, Python {m['python']}, {m['os']}; "
        f"late-materialization jobs ran with {ran_on([r[k] for r in reads for k in ('late', 'late_dali')])}.",
        f"Workload: {cfg['users']:,} users, median history {cfg['median_history']:,} "
        f"(log-normal, sigma {cfg['sigma']}, "
        f"max {cfg['max_history']:,}), {cfg['days']} days, {cfg['requests_per_user_day']} requests/user/day with "
        f"{cfg['dense_features']} dense float features each, {cfg['late_share']:.0%} late arrivals, "
        f"{cfg['update_share']:.0%} updates. Bytes from `/proc/self/io` (page cache dropped first), cross-checked "
        f"with file sizes; times are medians of {R['repeats']} run(s) ({reads[0]['fat']['runs']} where the "
        "Fat Row job is compared: it opens each repetition and the other two jobs follow it equally often).", "",
        "## Headline", "",
        table([["bytes written (all days)", mb(w["late_total"]), mb(w["fat_total"][L]), mb(w["floor_total"]),
                f"{-w['reduction_vs_fat'][L]:+.1%}", f"{w['late_vs_floor']:.2f}x"]] +
              [[f"bytes read, job '{r['tenant']}' (L={r['max_len']})", mb(r["late"]["read_bytes"]),
                mb(r["fat"]["read_bytes"]), mb(r["floor"]["bytes"]), f"{-r['reduction_vs_fat']:+.1%}",
                f"{r['late_vs_floor']:.2f}x"] for r in reads],
              ["measure", "late materialization", f"fat rows (L={L})", "floor", "late vs fat", "late / floor"]),
        "", f"Files on disk: store {mb(R['files']['store'])}, thin rows {mb(R['files']['thin'])}, "
        f"fat rows {mb(R['files']['fat'])} (write counters include the log and compactions; files hold the result).",
        "", "## Write bandwidth per day", "", f"![writes]({figs['writes']})", "",
        table([[d["day"], mb(d["late"]), mb(d["floor"]), *(mb(d["fat"][k]) for k in w["lengths"])]
               for d in w["per_day"]], ["day", "late", "floor", *(f"fat L={k}" for k in w["lengths"])]),
        "", "Reduction of late materialization vs Fat Row, all days: " +
        ", ".join(f"L={k}: {-v:+.1%}" for k, v in w["reduction_vs_fat"].items()) + ".",
        "", "### Write amplification", "", f"![shares]({figs['write_shares']})", "",
        table([[d["day"], mb(d["log"]), mb(d["seal"]), mb(d["sidecars"]), mb(d["compact"]), mb(d["thin"]),
                mb(d["late"]), mb(d["floor"]), f"{d['late'] / d['floor']:.2f}x", f"{d['log'] / d['floor']:.2f}x",
                f"{d['sidecars'] / d['floor']:.2f}x", f"{d['compact'] / d['floor']:.2f}x", d["segments"]]
               for d in w["per_day"]],
              ["day", "log", "seal", "of which sidecars", "compaction", "thin rows", "total", "floor", "total/floor",
               "log/floor", "sidecars/floor", "compaction/floor", "segments"]),
        "", f"The floor is each day's new events written once as a zstd Parquet segment plus the thin rows. The "
        f"durable log is the price of acknowledging appends before they are sealed (key-sorted Parquet records, "
        "fsync'd before the append returns); seals also write the rare/uncommon event-type sidecars and the user "
        "indexes; compaction is size-tiered (the cheapest 4 neighbours of any tier of segments within 2x of each "
        "other merge; past 16 segments a balanced window merges). "
        f"The backfill before day 0 wrote {mb(w['backfill_bytes'])} "
        "(not in the daily figures). " + _write_floor_note(w["per_day"]),
        "", "## Per-job reads per tenant", "", f"![reads]({figs['reads']})", "",
        table([[r["tenant"], r["max_len"], mb(r["late"]["read_bytes"]), mb(r["fat"]["read_bytes"]),
                mb(r["floor"]["bytes"]),
                f"{r['late']['seconds']:.2f} s", f"{r['late_dali']['seconds']:.2f} s", f"{r['fat']['seconds']:.2f} s",
                _pairs(r["late_dali"], r["late"]), f"{r['late']['examples']:,}"] for r in reads],
              ["tenant", "max_len", "late read", "fat read", "floor", "late time", "late via DALI", "fat time",
               "DALI / direct, pairs", "examples"]),
        "", "DALI / direct, pairs: the median of the two jobs' time ratios within each repetition, and their range "
        "(each repetition runs the two side by side, so a slow minute of the machine hits both).",
        "", "The floor: the needed columns of exactly the needed sealed events, each once, compressed like a segment, "
        "plus the needed thin-row columns (tails and pointers). Fat rows are read with column projection too.",
        "", "### Read amplification by cause", "",
        table([[r["tenant"], mb(r["late"]["read_bytes"]), mb(r["floor"]["bytes"]), f"{r['late_vs_floor']:.2f}x",
                *(fmt_bytes(r["floor"][k], cause_unit).split()[0] for k in ("event_bytes", "thin_bytes")),
                *(fmt_bytes(r["causes"][k], cause_unit).split()[0] for k in CAUSES)] for r in reads],
              ["tenant", "late read", "floor", "read/floor", f"floor: events ({cause_unit})",
               f"floor: thin ({cause_unit})", *(f"{v} ({cause_unit})" for v in CAUSES.values())]),
        "", "Each job's OS-counted bytes, split on the files as they lie: the thin-row columns it reads (OS-counted "
        "alone, readahead included; the floor holds their compressed size); Parquet "
        "footers and user indexes; the needed columns of exactly the needed rows (their share of each column "
        "chunk); columns read only to filter them (event type, ts, a sidecar's seq); the rest of the row groups "
        "holding a needed row; the OS's whole 4 KiB pages around each run of column chunks read; and the "
        "remainder: row groups with no needed row (the seq range the reader "
        "cannot cut finer under an event-type or time filter) plus readahead.",
        "", "### Each pushdown dimension switched off", "",
    ]
    push = R["pushdown"]["tenants"]
    labels = [k for k in push[0] if k != "tenant"]
    lines += [table([[r["tenant"], *(f"{mb(r[k]['read_bytes'])} / {r[k]['seconds']:.2f} s" for k in labels)]
                     for r in push], ["tenant (bytes / time)", *labels]),
              "", "columns: read only projected columns; users: only row groups holding the batch's users; rows: only "
              "the seq range max_len needs and segments inside the time window; types: the rare-type sidecar.", ""]
    s = R["scaling"]
    lines += ["## Sequence-length scaling", "", f"![scaling]({figs['scaling']})", "",
              f"B={s['batch']}, 3 columns (20 bytes/event), {s['users']} users x {s['history']:,} sealed events.", "",
              table([[r["max_len"], mb(r["bytes"]), f"{r['assembly_gbps']:.2f}", f"{r['end_to_end_gbps']:.2f}",
                      f"{r['copy_gbps']:.2f} / {r.get('copy_mem_gbps', float('nan')):.2f}", f"{r['vs_copy']:.2f}x",
                      f"{r.get('e2e_vs_copy', float('nan')):.2f}x / {r.get('e2e_vs_copy_mem', float('nan')):.2f}x",
                      f"{r['aten_gbps']:.2f}", f"{r['vs_aten']:.1f}x"]
                     for r in s["rows"]],
                    ["max_len", "output", "assembly GB/s", "end-to-end GB/s", "2-thread copy GB/s (cache / memory)",
                     "assembly/copy", "end-to-end/copy (cache / memory)", "aten GB/s", "assembly/aten"]),
              "", "The copy reads its source from cache (the output bytes copied again and again) or from memory "
              "(each repetition the next slice of a 1 GiB buffer, larger than the last-level cache): reconstruction "
              "reads decoded columns that earlier batches pushed out of cache, so the memory copy is its ceiling; "
              "the cache copy is the upper bound of any copy. Every figure is a median of warm calls: the kernels, "
              "reconstruct and the two copies are each timed in runs of their own calls, five rounds taken in turn "
              "(as many calls as fit 0.3 s, up to 100 in all, after 0.2 s of untimed calls), so that a slow spell "
              "of the machine hits all four alike.", ""]
    if s.get("batch_rows"):
        lines += [f"The shortest rows (max_len {s['batch_rows'][0]['max_len']:,}) at other batch sizes: a call's "
                  "fixed work (validating the thin rows, finding runs, the tails) is per call, so larger batches "
                  "spread it.", "",
                  table([[r["batch"], mb(r["bytes"]), f"{r['assembly_gbps']:.2f}", f"{r['end_to_end_gbps']:.2f}",
                          f"{r['copy_mem_gbps']:.2f}", f"{r['e2e_vs_copy_mem']:.2f}x"] for r in s["batch_rows"]],
                        ["batch", "output", "assembly GB/s", "end-to-end GB/s", "memory copy GB/s",
                         "end-to-end/memory copy"]), ""]
    if R.get("stages"):
        jobs = {r["tenant"]: r for r in reads}
        lines += ["## Where the time goes, per tenant", "",
                  "One pass over each tenant's thin rows in iter_batches' chunks and batches of 256, prefetch off, "
                  "each stage timed alone (medians): the thin rows' Parquet into chunks; the store's file reads (page "
                  "cache dropped minus warm); decoding row groups into the arena (none decoded minus all decoded); "
                  "staging (preparing every chunk with every row group decoded); the two kernels (assembly includes "
                  "the batch's allocation and views); the hand-off to torch (DLPack). DALI: the job through the DALI "
                  "CPU pipeline minus the direct job (both from the per-job table above).", "",
                  table([[r["tenant"], f"{r['examples']:,}", f"{r['events'] / 1e6:.1f} M", f"{r['thin_s']:.3f}",
                          f"{r['read_s']:.3f}", f"{r['decode_s']:.3f}", f"{r['staging_s']:.3f}",
                          f"{r['slicing_s']:.3f}", f"{r['assembly_s']:.3f}", f"{r['to_torch_s']:.3f}",
                          f"{jobs[r['tenant']]['late_dali']['seconds'] - jobs[r['tenant']]['late']['seconds']:+.3f}"]
                         for r in R["stages"]["tenants"]],
                        ["tenant", "examples", "events read", "thin rows (s)", "read (s)", "decode (s)",
                         "staging (s)", "slicing (s)", "assembly (s)", "to torch (s)", "DALI (s)"]), ""]
    p = R["peers"]
    lines += ["## Speed against peers on the same job", "", f"![peers]({figs['peers']})", "",
              f"Job: tenant '{p['tenant']}' (max_len {p['max_len']}) over the first day's {p['examples']:,} thin rows; "
              f"DuckDB's result equals ours bit for bit: {p['duckdb_equal']}.", "",
              table([[r["loader"], f"{r['seconds']:.2f} s", f"{r['examples_per_s']:,.0f}",
                      mb(r["read_bytes"]) if r["read_bytes"] is not None else "-", f"{r['ours_speedup']:.2f}x"]
                     for r in p["rows"]], ["loader", "time", "examples/s", "bytes read", "time / ours"]), ""]
    if p.get("dali_pairs"):
        m, lo, hi = p["dali_pairs"]
        lines += [f"DALI over direct within each repetition (the two run side by side): median {m:.2f}x, "
                  f"range {lo:.2f}-{hi:.2f}x.", ""]
    low_dup = _newer_low_dup(results, p.get("low_dup"))
    if low_dup:
        lines += low_dup_lines(low_dup)
    pl = R["pipeline"]
    lines += ["## Prefetch, data affinity and worker processes", "",
              f"Tenant '{pl['tenant']}', all thin rows, direct iter_batches, with prefetch and affinity switched off "
              "in turn.", "",
              table([[r["setting"], f"{r['seconds']:.2f} s", f"{r['examples_per_s']:,.0f}", mb(r["read_bytes"]),
                      mb(r["rchar"])] for r in pl["rows"]],
                    ["setting", "time", "examples/s", "read from disk", "read incl. page cache"]), ""]
    if pl.get("prefetch"):
        lines += ["Prefetch on and off on every tenant (direct iter_batches, cold page cache), in pairs taken in turn: "
                  "medians, and the range of the pairs' on/off ratios. With prefetch, one thread reads and checks "
                  "the next chunks' thin rows and asks the OS for the store bytes they need, another decodes and "
                  "stages them, while the caller's thread runs the kernels.", "",
                  table([[r["tenant"], r["max_len"], f"{r['on_s']:.2f} s", f"{r['off_s']:.2f} s",
                          f"{r['on_s'] / r['off_s']:.2f}x", _spread(r["pair_ratios"])] for r in pl["prefetch"]],
                        ["tenant", "max_len", "prefetch on", "prefetch off", "on / off",
                         "pairs on / off: median (range)"]), ""]
    if pl.get("workers"):
        base = pl["workers"][0]["epoch_s"]
        lines += ["The same tenant through the DALI CPU pipeline, reconstructed in process and by 1 and 2 worker "
                  "processes (each owns a user shard and its own reconstructor; batches come back through shared "
                  "memory). An epoch is timed after the first, which pays for building the pipeline, spawning "
                  "the workers and the cold reads (startup).", "",
                  table([["in process" if not w["workers"] else f"{w['workers']} worker process"
                          + ("es" if w["workers"] > 1 else ""), f"{w['epoch_s']:.2f} s",
                          f"{w['examples'] / w['epoch_s']:,.0f}", f"{base / w['epoch_s']:.2f}x",
                          f"{w['startup_s']:.1f} s"]
                         for w in pl["workers"]],
                        ["reconstruction", "epoch", "examples/s", "vs in process", "startup + first epoch"]), ""]
    lines += extra_sections(results)
    return "\n".join(lines)


def run_bench(args) -> int:
    mode = "quick" if args.quick else "medium" if getattr(args, "medium", False) else "full"
    size = SIZES[mode]
    if getattr(args, "update_repo", False):  # the tracked copies, only when asked for by name
        report_dir = Path(__file__).resolve().parent.parent / "bench"
        out = report_dir / "results"
    else:
        report_dir = out = Path(args.out or DEFAULT_OUT)
    out.mkdir(parents=True, exist_ok=True)
    cfg = WorkloadConfig(users=size["users"], days=size["days"], median_history=size["median_history"],
                         requests_per_user_day=size["requests"])
    print(f"uih bench ({mode}) on {machine_line()}")
    t0 = time.perf_counter()
    warm_up(cfg, progress=not args.no_progress)  # compiles once, visibly, before anything is measured
    with tempfile.TemporaryDirectory(dir=report_dir, prefix="tmp") as d:
        tmp = Path(d)
        res = build(tmp / "data", cfg, progress=not args.no_progress, fat_lengths=size["fat_lengths"])
        R = {"mode": mode, "date": time.strftime("%Y-%m-%d"), "machine": machine(), "repeats": size["repeats"],
             "config": {**res["config"], "union_max_len": cfg.union_max_len}, "tenants": res["tenants"],
             "files": res["files"]}
        # every loader run once before anything is timed (compiled kernels and libraries loaded)
        warm_up_jobs(tmp / "data" / "store", file_list(tmp / "data" / "thin"), file_list(tmp / "data" / "fat"),
                     [t.projection() for t in cfg.tenants])
        steps = [("writes", lambda: section_writes(res, cfg)),
                 ("reads", lambda: section_reads(tmp / "data", cfg, size["repeats"], tmp)),
                 ("stages", lambda: section_stages(tmp / "data", cfg, size["repeats"])),
                 ("pushdown", lambda: section_pushdown(tmp / "data", cfg)),
                 ("peers", lambda: section_peers(tmp / "data", cfg, size["repeats"], size["low_dup"])),
                 ("pipeline", lambda: section_pipeline(tmp / "data", cfg, size["repeats"])),
                 ("scaling", lambda: section_scaling(size, tmp))]
        for name, fn in steps:
            t = time.perf_counter()
            R[name] = fn()
            write_json(out / f"{name}{'' if mode == 'full' else '_' + mode}.json", {"mode": mode, name: R[name]})
            print(f"  {name}: {time.perf_counter() - t:.0f} s")
    if mode == "full" and R["peers"].get("low_dup"):  # the newest low-duplication figures, wherever they came from
        write_json(out / LOW_DUP, R["peers"]["low_dup"])
    figs = plots(R, report_dir)
    report = render(R, figs, out)
    target = report_dir / "REPORT.md"
    target.write_text(report)
    (out / f"bench{'' if mode == 'full' else '_' + mode}.json").write_text(json.dumps(R, indent=1, default=float))
    print(report.split("## Write bandwidth")[0])
    print(f"wrote {target} and {out}/*.json in {time.perf_counter() - t0:.0f} s")
    return 0


def _int_keys(R: dict) -> dict:
    """``R`` as a run holds it: JSON turned the writes' per-length keys into strings."""
    w = R["writes"]
    for k in ("fat_total", "reduction_vs_fat"):
        w[k] = {int(L): v for L, v in w[k].items()}
    for d in w["per_day"]:
        d["fat"] = {int(L): v for L, v in d["fat"].items()}
    return R


def from_results(results: Path, bench: str = "bench.json") -> str:
    """REPORT.md rebuilt from the JSON files in ``results`` (a run's ``bench``, plus ``extra_sections``),
    referring to the plots that run drew."""
    R = _int_keys(json.loads((Path(results) / bench).read_text()))
    return render(R, dict(FIGURES), Path(results))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Rebuild REPORT.md from results already written (nothing runs).")
    ap.add_argument("--from-results", type=Path, required=True, metavar="DIR",
                    help="folder of the JSON results (bench/results)")
    ap.add_argument("--bench", default="bench.json", help="the uih bench run's file in DIR (default bench.json)")
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: REPORT.md beside DIR)")
    a = ap.parse_args(argv)
    target = a.out or a.from_results.resolve().parent / "REPORT.md"
    target.write_text(from_results(a.from_results, a.bench))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
