"""What every report of the app shares: the machine it ran on, tables, byte counts, timing, JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

_UNITS = ("B", "kB", "MB", "GB", "TB")


def machine() -> dict:
    """CPU model, cores, memory, Python and OS of this machine (for every figure we print)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // (1024 * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem, "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}"}


def machine_line() -> str:
    m = machine()
    return f"{m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, Python {m['python']}"


def fmt_bytes(n: float, unit: str | None = None) -> str:
    """Decimal units (1 MB = 1e6 bytes); ``unit`` fixes one (e.g. "MB") so a column compares at a glance."""
    k = _UNITS.index(unit) if unit else 0
    if unit is None:
        while k < len(_UNITS) - 1 and abs(n) >= 1000 ** (k + 1):
            k += 1
    return f"{int(n)} B" if k == 0 else f"{n / 1000 ** k:,.1f} {_UNITS[k]}"


def table(rows, headers) -> str:
    """A Markdown table (reads as plain text too); the first column left-aligned, the rest right."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: " | ".join(c.rjust(w[i]) if i else c.ljust(w[i]) for i, c in enumerate(r))  # noqa: E731
    return "\n".join([fmt(cells[0]), "-|-".join("-" * x for x in w), *map(fmt, cells[1:])])


def median_time(fn, repeat=5, warmup=1, budget=None) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs after ``warmup`` untimed ones (``budget``: see
    ``median_times``)."""
    return median_times([fn], repeat, warmup, budget)[0]


def median_times(fns, repeat=5, warmup=1, budget=None, rounds=1, warm_s=0.0) -> list:
    """Median wall time of each of ``fns`` over at least ``repeat`` timed runs after ``warmup`` untimed ones.

    ``rounds`` > 1 splits the runs into that many rounds taken in turn (``fns[0]`` warm-up and runs,
    then ``fns[1]``'s, ..., then the next round): each function is timed warm, in a run of its own calls,
    while a slow spell of a shared machine still hits every one of them alike, so their ratios hold.
    ``budget`` (seconds): more runs (up to 100 per function) when they fit it, judged by the first round's
    untimed calls; a call of a few hundred microseconds swings by tens of percent, and a median of three
    of them says little. ``warm_s``: before its first round, each function is also run for that long
    untimed (a Python-heavy call takes tens of calls to reach its steady speed)."""
    rounds = max(1, rounds)
    times = [[] for _ in fns]
    per = [None] * len(fns)  # timed runs per function and round, fixed in the first round
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            calls, t0 = 0, time.perf_counter()
            for _ in range(warmup):
                fn()
                calls += 1
            if per[k] is None:
                end = time.perf_counter() + warm_s
                while time.perf_counter() < end:
                    fn()
                    calls += 1
                n = repeat
                if budget and calls:  # one call's time, from the untimed ones
                    n = max(repeat, min(100, int(budget * calls / max(time.perf_counter() - t0, 1e-9))))
                per[k] = max(-(-repeat // rounds), n // rounds)
            for _ in range(per[k]):
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times]


def write_json(path, payload: dict) -> Path:
    """``payload`` plus the machine description, as indented JSON at ``path`` (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=float))
    return path
