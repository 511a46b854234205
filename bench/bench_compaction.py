"""Compaction: what each policy writes per day, and what the segments it leaves cost a reader.

1. What ``uih bench``'s compaction day merges: uih's replay (4 days, ``compact()`` every 2 days) on a small
   workload, with every ``plan()`` decision and the bytes of the segments it saw.
2. Policies simulated over 1 and 3 years of daily seals with a ``compact()`` every 2 days, in units of one
   day's seal (its segment, sidecars and index: bytes are proportional to rows). Three shapes: the bench's
   (a backfill of 9.3 days' worth, as ``uih bench`` has), a production-like one (180 days of backfill),
   and that one with daily volumes varying +-30%. Backfill and merges split old from recent exactly as
   ``write_segments`` does (28 days, 25% share). Per policy: the worst and 99th-percentile day's
   compaction bytes, the mean (= rewrites per event sealed), the most rewrites any day's events saw, the
   days compacting more than the bench's day 3 (4 units), and the most segments a reader ever opens
   (after a seal, before that day's compaction). Any policy leaving at most K segments must, after N
   days, have written one segment of at least N/K days in one compaction (seals are one day each): that
   bound is printed beside them. Then the store's hard bound against the previous one over 1, 3 and 5
   years of flat, noisy (+-30%, +-60%), weekly and growing daily volumes, compacting daily and every
   other day.
3. Measured: a store of N daily seals without compaction, copied and compacted to fewer segments (by the
   cheapest pair at a time, and fully); per copy, what the compaction wrote
   (OS counters) and, for each tenant, the bytes its job reads (OS counters, page cache dropped;
   ``uih.jobs.late_job``), read/floor and the job's time (median of ``--repeats``).

    python bench/bench_compaction.py [--users 400] [--days 24] [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

from engine import UIHStore
from engine.serving import _compaction, _segments
from engine.serving._compaction import plan
from uih.fmt import machine_line, table, write_json
from uih.iostats import measure
from uih.jobs import file_list, late_job
from uih.replay import build
from uih.report import median_jobs, read_floor
from uih.workload import DAY_US, WorkloadConfig

RESULTS = Path(__file__).resolve().parent / "results"
RECENT_DAYS = _segments.RECENT_US // DAY_US
EVERY = 2  # uih's replay compacts every other day
BENCH_DAY3_UNITS = 4  # what uih bench's day 3 merged: four daily segments


# ---- policies: (rows, units sealed since the last compaction) -> (first, stop) --------------------
def tiered(tier_min=4, ratio=2, cap=16):
    return lambda rows, sealed: plan(rows, max_segments=cap, tier_min=tier_min, tier_ratio=ratio)


def previous(rows, sealed, cap=16):
    """The store's policy before this bench: tiered 4/2x, and past the bound the cheapest neighbours."""
    n = len(rows)
    return _compaction.cheapest_window(rows, n - cap + 1) if n > cap else plan(rows, max_segments=cap)


def guard(k, cap=16):
    """The newest run, taking an older neighbour only while it is at most ``k`` x the run so far: k < 1
    never rewrites a segment bigger than the rest of the merge; k = 4 is leveled with fan-out 4 (an older
    segment is rewritten once the newer ones reach a quarter of it)."""
    def policy(rows, sealed):
        n = len(rows)
        if n > cap:
            return plan(rows, max_segments=cap)
        first, run = n - 1, rows[-1]
        while first > 0 and rows[first - 1] <= k * run:
            first -= 1
            run += rows[first]
        return (first, n) if n - first >= 2 else (n, n)
    return policy


def budget(c, cap=16):
    """The window removing the most segments whose bytes stay within ``c`` x those sealed since the last
    compaction (ties: the cheaper); past ``cap``, the store's hard bound whatever it costs."""
    def policy(rows, sealed):
        n = len(rows)
        if n > cap:
            return plan(rows, max_segments=cap)
        best, key = (n, n), (1, 0.0)
        for a in range(n):
            total = 0.0
            for b in range(a, n):
                total += rows[b]
                if total > c * sealed:
                    break
                if (b - a + 1, -total) > key:
                    best, key = (a, b + 1), (b - a + 1, -total)
        return best
    return policy


def output_cap(m, cap=16):
    """Tiered (4, 2x), but no merge may write more than 1/``m`` of the store, bar the hard bound."""
    def policy(rows, sealed):
        n = len(rows)
        if n > cap:
            return plan(rows, max_segments=cap)
        limit = sum(rows) / m
        due = [(sum(rows[a:a + 4]), a) for f, b in _compaction._tiers(rows, 2) for a in range(f, b - 3)
               if sum(rows[a:a + 4]) <= limit]
        return (min(due)[1], min(due)[1] + 4) if due else (n, n)
    return policy


def lazy(trigger, cap):
    """Tiered (4, 2x), but only once a reader would open ``trigger`` segments."""
    return lambda rows, sealed: plan(rows, max_segments=cap) if len(rows) >= trigger else (len(rows), len(rows))


CURRENT = "tiered 4/2x, cap 16, balanced bound (store)"
PREVIOUS = "tiered 4/2x, cap 16, cheapest bound (before)"
POLICIES = {  # every hard bound but the previous policy's is the store's balanced one
    CURRENT: tiered(),
    PREVIOUS: previous,
    "tiered 8/2x, cap 16": tiered(8),
    "tiered 3/2x, cap 16": tiered(3),
    "tiered 4/3x, cap 16": tiered(4, 3),
    "tiered 4/2x, cap 8": tiered(cap=8),
    "tiered 4/2x, cap 32": tiered(cap=32),
    "guard: older <= 0.5x rest, cap 16": guard(0.5),
    "guard: older <= 1x rest, cap 16": guard(1.0),
    "leveled fan-out 4, cap 16": guard(4.0),
    "budget 1x sealed, cap 16": budget(1.0),
    "budget 2x sealed, cap 16": budget(2.0),
    "budget 1x sealed, cap 32": budget(1.0, 32),
    "budget 1x sealed, cap 64": budget(1.0, 64),
    "tiered, output <= store/4, cap 16": output_cap(4),
    "tiered past 12 segments, cap 24": lazy(12, 24),
}


# ---- simulation -----------------------------------------------------------------------------------
BACKFILL_DAYS = 180  # the backfill's events span 180 days before day 0, as uih's workload has


def _split(units: np.ndarray, newest: int) -> list:
    """``write_segments``' old/recent split of one written segment (units per day, day d at d + 180)."""
    old = units.copy()
    old[max(newest - RECENT_DAYS + 1 + BACKFILL_DAYS, 0):] = 0  # old: all of its day 28 days before the newest
    if old.sum() < _segments.OLD_SHARE_MIN * units.sum() or old.sum() == units.sum():
        return [units]
    return [old, units - old]


def daily_volumes(pattern: str, days: int) -> np.ndarray:
    """Units sealed each day: flat, +-30% or +-60% (log-normal, seeded), weekends at half, or +50% a year."""
    rng = np.random.default_rng(0)
    return {"flat": lambda: np.ones(days), "noise 30%": lambda: rng.lognormal(0, 0.3, days),
            "noise 60%": lambda: rng.lognormal(0, 0.6, days),
            "weekly": lambda: np.resize([1, 1, 1, 1, 1, 0.5, 0.5], days),
            "growth 50%/y": lambda: 1.5 ** (np.arange(days) / 365)}[pattern]()


def simulate(policy, days: int, backfill: float, pattern: str = "flat", every: int = EVERY) -> dict:
    """Daily seals (``pattern``) after a backfill of ``backfill`` units, ``compact()`` every ``every`` days."""
    daily = daily_volumes(pattern, days)
    span = BACKFILL_DAYS + days
    segs = _split(np.r_[np.full(BACKFILL_DAYS, backfill / BACKFILL_DAYS), np.zeros(days)], -1)
    per_day, rewrites, most, sealed = np.zeros(days), np.zeros(span), len(segs), 0.0
    for d in range(days):
        seg = np.zeros(span)
        seg[BACKFILL_DAYS + d] = daily[d]
        segs.append(seg)
        sealed += daily[d]
        most = max(most, len(segs))
        if (d + 1) % every:
            continue
        first, stop = policy([s.sum() for s in segs], sealed)
        sealed = 0.0
        if stop - first > 1:
            merged = sum(segs[first:stop])
            per_day[d] = merged.sum()
            rewrites += merged > 0
            segs = [*segs[:first], *_split(merged, d), *segs[stop:]]
    per_day /= daily.mean()
    return {"max_units": float(per_day.max()), "p99_units": float(np.percentile(per_day, 99)),
            "mean_units": float(per_day.mean()), "days_over_bench_day3": int((per_day > BENCH_DAY3_UNITS).sum()),
            "most_rewrites": int(rewrites.max()), "most_segments": most, "segments_at_end": len(segs)}


SHAPES = {"bench, flat": (9.33, "flat"), "180-day backfill, flat": (180.0, "flat"),
          "180-day backfill, noise 30%": (180.0, "noise 30%")}


def bench_policies() -> list:
    return [{"years": years, "shape": shape, "policy": name, **simulate(policy, 365 * years, *SHAPES[shape])}
            for years in (1, 3) for shape in SHAPES for name, policy in POLICIES.items()]


def bench_robustness() -> list:
    """The store's policy against the previous one over 1, 3 and 5 years of each daily pattern."""
    return [{"years": years, "pattern": pattern, "every": every, "policy": name,
             **simulate(POLICIES[name], 365 * years, 180.0, pattern, every)}
            for years in (1, 3, 5) for pattern in ("flat", "noise 30%", "noise 60%", "weekly", "growth 50%/y")
            for every in (1, 2) for name in (PREVIOUS, CURRENT)]


# ---- what the bench's compaction day merges ---------------------------------------------------------
def trace_bench_days(users: int, tmp: Path) -> dict:
    """uih's replay (4 days, compact every 2) with each plan() decision and the segments it saw."""
    seen = []

    def traced(rows, *a, **k):
        got = plan(rows, *a, **k)
        seen.append({"rows": list(rows), "merge": list(got)})
        return got

    with mock.patch.object(_compaction, "plan", traced):
        res = build(tmp / "trace", WorkloadConfig(users=users, days=4), fat=False, progress=False)
    with UIHStore.open(tmp / "trace" / "store", read_only=True) as store:
        final = [{"rows": e["main"]["rows"], "bytes": _entry_bytes(e)} for e in store._manifest["segments"]]
    return {"plans": seen, "final_segments": final,
            "days": [{k: d[k] for k in ("day", "seal_bytes", "compact_bytes", "floor_bytes", "log_bytes",
                                        "thin_bytes", "sidecar_bytes", "segments")} for d in res["days"]]}


def _entry_bytes(entry: dict) -> int:
    return sum(entry[p]["bytes"] + entry[p]["index_bytes"] for p in _segments.PARTS if entry.get(p))


# ---- measured reader cost ----------------------------------------------------------------------------
def _compact(path: Path, how) -> None:
    """Compact the store at ``path``: None: not at all; "full": everything; an int K: the cheapest pair of
    neighbours at a time until K segments are left (the store's own bound would merge every daily segment
    at once, a balanced window being cheapest per segment removed, and leave 3)."""
    if how is None:
        return
    with UIHStore.open(path) as store:
        if how == "full":
            store.compact(full=True)
            return
        pairs = lambda rows: _compaction.cheapest_window(rows, 2) if len(rows) > how else (len(rows),) * 2  # noqa: E731
        with mock.patch.object(_compaction, "plan", pairs):
            while store.version != store.compact():
                pass


def bench_readers(users: int, days: int, repeats: int, tmp: Path) -> dict:
    cfg = WorkloadConfig(users=users, days=days)
    res = build(tmp / "run", cfg, fat=False, compact_every=0, progress=False)
    thin = file_list(tmp / "run" / "thin")
    floors = {t.name: read_floor(tmp / "run" / "store", thin, t.projection(), tmp)["bytes"] for t in cfg.tenants}
    seal = float(np.mean([d["seal_bytes"] for d in res["days"]]))
    rows = []
    for t in cfg.tenants:  # untimed: the first job of a process also loads libraries and compiles kernels
        late_job(tmp / "run" / "store", thin, t.projection(), via_dali=False, device="cpu")
    for label, how in (("no compaction", None), ("16 segments", 16), ("8 segments", 8), ("4 segments", 4),
                       ("full", "full")):
        path = tmp / label.replace(" ", "_")
        shutil.copytree(tmp / "run" / "store", path)
        with measure() as io:
            _compact(path, how)
        with UIHStore.open(path, read_only=True) as store:
            entries = store._manifest["segments"]
        row = {"config": label, "segments": len(entries), "compact_bytes": io["write_bytes"],
               "compact_units": io["write_bytes"] / seal, "tenants": {}}
        for t in cfg.tenants:
            p = t.projection()
            job, = median_jobs([lambda p=p, path=path: late_job(path, thin, p, via_dali=False, device="cpu")],
                               repeats)
            meta = sum(e[part]["footer_bytes"] + e[part]["index_bytes"]
                       for e in entries for part in [_segments.part_for(e, p.actions)])
            row["tenants"][t.name] = {"read_bytes": job["read_bytes"], "seconds": job["seconds"],
                                      "read_vs_floor": job["read_bytes"] / floors[t.name], "metadata_bytes": meta,
                                      "examples": job["examples"]}
        rows.append(row)
    return {"users": users, "days": days, "seal_bytes_per_day": seal, "floors": floors, "configs": rows}


# ---- report ----------------------------------------------------------------------------------------
def _print_trace(tr: dict) -> None:
    print("\n1. uih's replay (4 days, compact() every 2 days): every plan() decision")
    for p in tr["plans"]:
        a, b = p["merge"]
        print(f"   rows {p['rows']} -> merge {a}..{b - 1}" if b - a > 1 else f"   rows {p['rows']} -> nothing due")
    print(table([[d["day"], f"{d['seal_bytes'] / 1e6:.2f} MB", f"{d['compact_bytes'] / 1e6:.2f} MB",
                  f"{d['compact_bytes'] / d['seal_bytes']:.2f}x", f"{d['compact_bytes'] / d['floor_bytes']:.2f}x",
                  d["segments"]] for d in tr["days"]],
                ["day", "seal", "compaction", "compaction/seal", "compaction/floor", "segments"]))


def _day_shares(trace: dict) -> tuple:
    """(one day's seal, an ordinary day's writes) as multiples of the day's floor, in the bench-shaped replay."""
    days = trace["days"]
    seal = float(np.mean([d["seal_bytes"] / d["floor_bytes"] for d in days]))
    ordinary = float(np.mean([(d["log_bytes"] + d["seal_bytes"] + d["thin_bytes"]) / d["floor_bytes"] for d in days]))
    return seal, ordinary


def _print_policies(rows: list, trace: dict) -> None:
    unit, ordinary = _day_shares(trace)
    print(f"\n2. policies over daily seals, compact() every {EVERY} days; units = one day's seal ({unit:.2f}x of "
          f"the day's floor in 1; an ordinary day there writes {ordinary:.2f}x of its floor)")
    for years in (1, 3):
        for shape in SHAPES:
            n = 365 * years
            print(f"\n{years} year(s), {shape}; any policy leaving at most K segments: worst day >= {n}/K units "
                  f"(K=16: {n / 16:.0f}, K=32: {n / 32:.0f}, K=64: {n / 64:.0f})")
            print(table([[r["policy"], f"{r['max_units']:.0f}", f"{ordinary + r['max_units'] * unit:.1f}x",
                          f"{r['p99_units']:.0f}", f"{r['mean_units']:.2f}", r["most_rewrites"],
                          r["days_over_bench_day3"], r["most_segments"], r["segments_at_end"]]
                         for r in rows if r["years"] == years and r["shape"] == shape],
                        ["policy", "worst day (units)", "worst day total/floor", "p99 day",
                         "mean/day = rewrites/event", "most rewrites of a day's events",
                         f"days > {BENCH_DAY3_UNITS} units", "most segments", "at end"]))


def _print_robustness(rows: list) -> None:
    print("\n2b. the store's policy against the previous one (180-day backfill): rewrites per event "
          "(most of one day's), most segments a reader opens, worst day (units)")
    keys = list(dict.fromkeys((r["years"], r["pattern"], r["every"]) for r in rows))
    cell = {(r["years"], r["pattern"], r["every"], r["policy"]): r for r in rows}
    fmt = lambda r: f"{r['mean_units']:.2f} ({r['most_rewrites']}), {r['most_segments']}, {r['max_units']:.0f}"  # noqa: E731
    print(table([[y, p, e, fmt(cell[y, p, e, PREVIOUS]), fmt(cell[y, p, e, CURRENT])] for y, p, e in keys],
                ["years", "daily volume", "compact every", "before: cheapest bound", "store: balanced bound"]))


def _print_readers(r: dict) -> None:
    print(f"\n3. reader cost, measured: {r['users']} users, backfill + {r['days']} daily seals, one day's seal "
          f"= {r['seal_bytes_per_day'] / 1e6:.2f} MB; jobs read every thin row (page cache dropped)")
    names = list(r["configs"][0]["tenants"])
    print(table([[c["config"], c["segments"], f"{c['compact_bytes'] / 1e6:.1f} MB", f"{c['compact_units']:.1f}",
                  *(f"{c['tenants'][n]['read_bytes'] / 1e6:.2f} MB {c['tenants'][n]['read_vs_floor']:.2f}x "
                    f"{c['tenants'][n]['seconds']:.2f} s" for n in names)] for c in r["configs"]],
                ["store", "segments", "compaction wrote", "in days' seals",
                 *(f"{n}: read, /floor, time" for n in names)]))
    print(table([[c["config"], *(f"{c['tenants'][n]['metadata_bytes'] / 1e3:.0f} kB" for n in names)]
                 for c in r["configs"]], ["store: footers + indexes opened", *names]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--days", type=int, default=24, help="daily seals of the measured store")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None, help="folder for compaction.json (default bench/results)")
    a = ap.parse_args(argv)
    print(f"bench_compaction on {machine_line()}")
    policies, robustness = bench_policies(), bench_robustness()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as tmp:  # /tmp may be tmpfs: no OS reads
        trace = trace_bench_days(a.users, Path(tmp))
        readers = bench_readers(a.users, a.days, a.repeats, Path(tmp))
    _print_trace(trace)
    _print_policies(policies, trace)
    _print_robustness(robustness)
    _print_readers(readers)
    path = write_json(Path(a.out or RESULTS) / "compaction.json",
                      {"bench_days": trace, "policies": policies, "robustness": robustness, "readers": readers,
                       "params": vars(a)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
