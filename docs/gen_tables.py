"""The docs' benchmark tables, generated from ``bench/results/*.json``.

A generated table sits in a page between two markers::

    <!-- gen_tables: NAME -->
    ...the table, written by this script...
    <!-- /gen_tables -->

``python docs/gen_tables.py`` rewrites those spans from the JSON files (run it after a benchmark run
updates ``bench/results``); ``python docs/gen_tables.py --check`` writes nothing and exits 1, naming
each stale table, when a page differs from what the JSON files give (``tests/test_docs.py`` runs it).

The training-order and threading-layer tables are built by ``uih.report`` (``order_speed``, ...), which
renders the same rows into ``bench/REPORT.md``: one definition of each table for both.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # this checkout's uih, not an installed one
SPAN = re.compile(r"(<!-- gen_tables: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /gen_tables -->)", re.S)


def _load(results: Path, name: str) -> dict:
    return json.loads((results / name).read_text())


def _mb(b) -> str:
    return "-" if b is None else f"{b / 1e6:,.1f} MB"


def _s(x) -> str:
    return f"{x:.2f} s"


def _x(x) -> str:
    return f"{x:.2f}x"


def _table(header: list, rows: list) -> str:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _source(file: str, d: dict, date: str | None = None) -> str:
    m = d.get("machine", {})
    where = f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores"
    if "device" in d:
        where = f"{d['device']}, host {where}"
    return f"\n\n<sub>Source: `bench/results/{file}` ({where}{', ' + date if date else ''}).</sub>"


def _faster(slow: float, fast: float) -> str:
    """A speedup as "N.Nx faster" (or slower): never a negative percentage."""
    r = slow / fast
    return f"{r:.1f}x faster" if r >= 1 else f"{1 / r:.1f}x slower"


def headline(results: Path) -> str:
    d = _load(results, "bench.json")
    w = d["writes"]
    rows = [["bytes written, all days", _mb(w["late_total"]), _mb(w["fat_total"]["65536"]), _mb(w["floor_total"]),
             f"{w['fat_total']['65536'] / w['late_total']:.1f}x less", _x(w["late_vs_floor"])]]
    for t in d["reads"]["tenants"]:
        late, fat, floor = t["late"]["read_bytes"], t["fat"]["read_bytes"], t["floor"]["bytes"]
        rows.append([f"bytes read, `{t['tenant']}` (max_len {t['max_len']:,})", _mb(late), _mb(fat), _mb(floor),
                     f"{fat / late:.1f}x less", _x(late / floor)])
    return _table(["measure", "late materialization", "fat rows", "floor", "late vs fat", "late / floor"],
                  rows) + _source("bench.json", d, d["date"])


def tenants(results: Path) -> str:
    d = _load(results, "bench.json")
    rows = []
    for t in d["reads"]["tenants"]:
        late, dali, fat = t["late"]["seconds"], t["late_dali"]["seconds"], t["fat"]["seconds"]
        rows.append([t["tenant"], f"{t['max_len']:,}", f"{t['late']['examples']:,}", _s(late), _s(dali), _s(fat),
                     _faster(fat, late)])
    return _table(["tenant", "max_len", "examples", "late, direct", "late, via DALI", "Fat Row loader",
                   "late vs Fat Rows"], rows) + _source("bench.json", d, d["date"])


def scaling(results: Path) -> str:
    d = _load(results, "bench.json")
    rows = [[f"{r['max_len']:,}", _mb(r["bytes"]), f"{r['end_to_end_gbps']:.1f}", f"{r['copy_mem_gbps']:.1f}",
             _x(r["e2e_vs_copy_mem"]), f"{r['aten_gbps']:.1f}", _x(r["vs_aten"])] for r in d["scaling"]["rows"]]
    return _table(["max_len", "output", "reconstruct GB/s", "memory copy GB/s", "reconstruct / copy",
                   "aten pad-only GB/s", "kernels / aten"], rows) + _source("bench.json", d, d["date"])


def pushdown(results: Path) -> str:
    d = _load(results, "bench.json")
    keys = ["all on", "columns off", "rows off", "types off", "users off"]
    rows = [[t["tenant"]] + [f"{_mb(t[k]['read_bytes'])} / {_s(t[k]['seconds'])}" for k in keys]
            for t in d["pushdown"]["tenants"]]
    return _table(["tenant (bytes / time)"] + keys, rows) + _source("bench.json", d, d["date"])


def prefetch(results: Path) -> str:
    d = _load(results, "bench.json")
    rows = []
    for p in d["pipeline"]["prefetch"]:
        r = p["pair_ratios"]
        rows.append([p["tenant"], f"{p['max_len']:,}", _s(p["on_s"]), _s(p["off_s"]), _x(p["on_s"] / p["off_s"]),
                     f"{statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})"])
    return _table(["tenant", "max_len", "prefetch on", "prefetch off", "on / off", "pairs: median (range)"],
                  rows) + _source("bench.json", d, d["date"])


def affinity(results: Path) -> str:
    d = _load(results, "bench.json")
    rows = [[r["setting"], _s(r["seconds"]), f"{r['examples_per_s']:,.0f}", _mb(r["read_bytes"]), _mb(r["rchar"])]
            for r in d["pipeline"]["rows"]]
    return _table(["setting (tenant ranking)", "time", "examples/s", "read from disk", "read incl. page cache"],
                  rows) + _source("bench.json", d, d["date"])


def peers(results: Path) -> str:
    d = _load(results, "bench.json")
    rows = [[r["loader"], _s(r["seconds"]), f"{r['examples_per_s']:,.0f}", _mb(r["read_bytes"]),
             _x(r["ours_speedup"])] for r in d["peers"]["rows"]]
    return _table(["loader", "time", "examples/s", "bytes read", "time / ours"], rows) + _source(
        "bench.json", d, d["date"])


def store_rates(results: Path) -> str:
    d = _load(results, "bench_store.json")
    rows = [["append (durable log, fsync'd)", f"{d['append_events_per_s']:,.0f} events/s"],
            ["plain Parquet write of the same events", f"{d['parquet_write_events_per_s']:,.0f} events/s"],
            ["snapshot, thin rows", f"{d['thin_requests_per_s']:,.0f} requests/s"],
            [f"snapshot, fat rows (max_len {d['params']['fat_len']:,})", f"{d['fat_requests_per_s']:,.0f} requests/s"]]
    return _table(["operation", "rate"], rows) + _source("bench_store.json", d)


def dali(results: Path) -> str:
    d = _load(results, "bench.json")
    rows = []
    for t in d["reads"]["tenants"]:
        r = [a / b for a, b in zip(t["late_dali"]["each"], t["late"]["each"])]
        rows.append([t["tenant"], f"{t['max_len']:,}", _s(t["late"]["seconds"]), _s(t["late_dali"]["seconds"]),
                     _x(t["late_dali"]["seconds"] / t["late"]["seconds"]),
                     f"{statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})"])
    return _table(["tenant", "max_len", "direct `iter_batches`", "via DALI", "DALI / direct, medians",
                   "pairs: median (range)"], rows) + _source("bench.json", d, d["date"])


def dali_workers(results: Path) -> str:
    d = _load(results, "bench.json")
    w = d["pipeline"]["workers"]
    base = w[0]["epoch_s"]
    rows = [["in process" if r["workers"] == 0 else f"{r['workers']} worker process(es)", _s(r["epoch_s"]),
             f"{r['examples'] / r['epoch_s']:,.0f}", _x(base / r["epoch_s"]), f"{r['startup_s']:.1f} s"] for r in w]
    return _table(["reconstruction (DALI CPU pipeline, ranking)", "epoch", "examples/s", "speed vs in process",
                   "startup + first epoch"], rows) + _source("bench.json", d, d["date"])


def ray(results: Path) -> str:
    d = _load(results, "bench_ray.json")
    return _table(*_report().ray_epochs(d)) + _source("bench_ray.json", d)


def ray_train(results: Path) -> str:
    rows, d = [], None
    for mode in ("dataset", "local"):
        d = _load(results, f"ray_train_hstu_{mode}.json")
        r = d["row"]
        rows.append([f"`{mode}`", r["workers"], r["max_len"], f"{r['heldout_ne']:.3f}", f"{r['epoch_s']:.1f} s",
                     f"{r['fit_s']:.0f} s"])
    return _table(["--mode", "workers", "max_len", "held-out NE", "epoch", "fit (Ray start included)"],
                  rows) + _source("ray_train_hstu_{dataset,local}.json", d)


def gpu_check(results: Path) -> str:
    d = _load(results, "gpu_check.json")
    rows = [[name.replace("|", "/"), str(got).replace("|", "/"), verdict] for name, got, verdict in d["rows"]]
    return _table(["check", "result", "verdict"], rows) + _source("gpu_check.json", d)


def gpu_tenants(results: Path) -> str:
    d = _load(results, "gpu_tenants.json")
    rows = []
    for t in d["tenants"]:
        c, p, f = t["cuda"]["seconds"], t["cpu"]["seconds"], t["fat_to_cuda"]["seconds"]
        rows.append([t["tenant"], f"{t['max_len']:,}", f"{c:.3f} s", f"{p:.3f} s", f"{f:.3f} s", _faster(f, c),
                     f"{t['equal_examples']:,} / {t['examples']:,}"])
    return _table(["tenant", "max_len", "late, CUDA", f"late, CPU ({d['machine']['cores']} cores)",
                   "Fat Rows -> GPU", "CUDA vs Fat Rows", "CUDA == CPU"], rows) + _source("gpu_tenants.json", d)


def gpu_sweep(results: Path) -> str:
    d = _load(results, "gpu_profile.json")
    rows = [[f"{r['batch']:,}", f"{r['cuda'] * 1e3:.1f} ms", f"{r['cpu'] * 1e3:.1f} ms", _faster(r["cpu"], r["cuda"])]
            for r in d["batch_sweep"]]
    return _table(["batch", "CUDA epoch", f"CPU epoch ({d['machine']['cores']} cores)", "CUDA vs CPU"],
                  rows) + _source("gpu_profile.json", d)


def _report():
    from uih import report  # here, not at the top: it imports the engine, which the other tables never need
    return report


def order_speed(results: Path) -> str:
    d = _load(results, "order.json")
    return _table(*_report().order_speed(d)) + _source("order.json", d, d["date"])


def order_bytes(results: Path) -> str:
    d = _load(results, "order.json")
    return _table(*_report().order_bytes(d)) + _source("order.json", d, d["date"])


def order_ne(results: Path) -> str:
    d = _load(results, "order_ne.json")
    return _table(*_report().order_ne(d)) + _source("order_ne.json", d, d["date"])


def threading_layers(results: Path) -> str:
    d = _load(results, "threading.json")
    return _table(*_report().threading_layers(d)) + _source("threading.json", d)


TABLES = {f.__name__: f for f in (headline, tenants, scaling, pushdown, prefetch, affinity, peers, store_rates, dali,
                                  dali_workers, ray, ray_train, gpu_check, gpu_tenants, gpu_sweep, order_speed,
                                  order_bytes, order_ne, threading_layers)}


def render(text: str, results: Path = RESULTS) -> str:
    """``text`` with every generated span rewritten from ``results``."""
    def one(m):
        name = m.group("name")
        if name not in TABLES:
            raise KeyError(f"unknown generated table {name!r}; known: {sorted(TABLES)}")
        return m.group(1) + TABLES[name](results) + "\n" + m.group(4)
    return SPAN.sub(one, text)


def stale(docs: Path = DOCS, results: Path = RESULTS) -> dict:
    """{page: regenerated text} for each page whose generated tables differ from ``results``."""
    out = {}
    for page in sorted(docs.glob("*.md")):
        text = page.read_text()
        new = render(text, results)
        if new != text:
            out[page] = new
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a page's tables are stale")
    args = ap.parse_args(argv)
    changed = stale()
    if args.check:
        for page in changed:
            print(f"{page.relative_to(ROOT)}: generated tables differ from bench/results; "
                  "run python docs/gen_tables.py", file=sys.stderr)
        return 1 if changed else 0
    for page, text in changed.items():
        page.write_text(text)
        print(f"rewrote {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
