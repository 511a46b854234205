"""The low-duplication job: a workload where late materialization has little byte advantage over Fat Rows.

Each user appears in only a few examples (4,096 examples over 1,500 users at full size), histories are
log-normal (median about 3K events, clipped at 30K), ``max_len`` is 2,048 and the job projects 3 columns:
the fat rows hold about what the store holds, so the comparison is one of decoding and assembly speed, not
of bytes. The store is built as a serving system would build it: ``chunks`` appends, each followed by a
seal, and a compaction every ``compact_every`` seals. Requests come after the last seal.

``run`` times the direct ``iter_batches`` job and the Fat Row loader (``uih.fatrows``) in interleaved
rounds (cold page cache each, the order alternating from round to round) and keeps every round, so the
report shows medians, ranges and the slowest round over the median.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import engine

from .jobs import fat_job, late_job
from .workload import COLUMNS, DAY_US


@dataclass(frozen=True)
class LowDupConfig:
    users: int = 1_500
    examples: int = 4_096
    median_history: int = 3_000
    sigma: float = 0.8
    max_history: int = 30_000
    max_len: int = 2_048
    columns: tuple = ("item_id", "action", "ts")
    chunks: int = 32  # appends, each followed by a seal
    compact_every: int = 8  # seals between compactions
    rounds: int = 7
    batch_size: int = 256
    seed: int = 11


QUICK = LowDupConfig(users=60, examples=160, median_history=300, max_history=3_000, max_len=256, chunks=8,
                     compact_every=4)


def build(folder: Path, cfg: LowDupConfig) -> dict:
    """The store, thin rows and fat rows of the job under ``folder``; returns their paths and sizes."""
    folder = Path(folder)
    rng = np.random.default_rng(cfg.seed)
    lengths = np.clip(rng.lognormal(np.log(cfg.median_history), cfg.sigma, cfg.users), 1, cfg.max_history)
    lengths = lengths.astype(np.int64)
    users = rng.choice(1 << 40, cfg.users, replace=False).astype(np.int64)
    store = engine.UIHStore.create(folder / "store", columns=COLUMNS, event_type_column="action")
    # each user's events spread evenly over the chunks: chunk k holds events k, k + chunks, ... of every user
    uid = np.repeat(users, lengths)
    pos = np.arange(len(uid)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    chunk = pos % cfg.chunks
    span = DAY_US  # one chunk's events lie within one simulated day
    for k in range(cfg.chunks):
        m = chunk == k
        n = int(m.sum())
        ts = k * span + np.sort(rng.integers(0, span, n))
        order = np.argsort(ts, kind="stable")
        pop = np.minimum(rng.zipf(1.3, n), 10_000_000)
        store.append({"user_id": uid[m][order], "ts": ts[order], "item_id": pop * 7919 % 50_000_000,
                      "action": rng.choice(5, n, p=[0.8, 0.12, 0.05, 0.02, 0.01]).astype(np.int32),
                      "surface": rng.integers(0, 8, n).astype(np.int32),
                      "dwell_ms": np.minimum(rng.exponential(8_000, n), 2**31 - 1).astype(np.int32)})
        store.seal((k + 1) * span)
        if (k + 1) % cfg.compact_every == 0:
            store.compact()
    # every user at least once, the rest drawn at random: about examples / users examples per user
    req_users = np.r_[users, rng.choice(users, max(cfg.examples - cfg.users, 0))][:cfg.examples]
    req_users = rng.permutation(req_users)
    req = pa.table({"user_id": req_users, "request_ts": np.full(len(req_users), cfg.chunks * span, np.int64)})
    thin, fat = folder / "thin.parquet", folder / "fat.parquet"
    pq.write_table(store.snapshot(req), thin)
    pq.write_table(store.snapshot(req, materialize=True, max_len=cfg.max_len), fat)
    segments = len(store.segments)
    events = int(lengths.sum())
    store.close()
    return {"store": folder / "store", "thin": thin, "fat": fat, "segments": segments, "events": events,
            "examples": len(req_users)}


def run(folder: Path, cfg: LowDupConfig) -> dict:
    """Build the job and time it in ``cfg.rounds`` interleaved rounds: ours (direct ``iter_batches``) and
    the Fat Row loader, each from a cold page cache, who goes first alternating from round to round."""
    b = build(folder, cfg)
    proj = engine.Projection(list(cfg.columns), max_len=cfg.max_len)
    jobs = {"ours": lambda: late_job(b["store"], [str(b["thin"])], proj, batch_size=cfg.batch_size, via_dali=False),
            "fat": lambda: fat_job([str(b["fat"])], proj, batch_size=cfg.batch_size)}
    for fn in jobs.values():  # untimed: the first job of a process loads compiled kernels and libraries
        fn()
    runs = {k: [] for k in jobs}
    for r in range(max(cfg.rounds, 1)):
        for k in (list(jobs) if r % 2 == 0 else list(jobs)[::-1]):
            runs[k].append(jobs[k]())
    out = {"config": asdict(cfg), "segments": b["segments"], "events": b["events"], "examples": b["examples"],
           "files": {"store": _tree(b["store"]), "thin": b["thin"].stat().st_size, "fat": b["fat"].stat().st_size}}
    for k, rs in runs.items():
        out[k] = {"each": [x["seconds"] for x in rs], "read_bytes": int(np.median([x["read_bytes"] for x in rs])),
                  "examples": rs[0]["examples"], **spread([x["seconds"] for x in rs])}
    ratios = [f / o for o, f in zip(out["ours"]["each"], out["fat"]["each"], strict=True)]
    out["speedup_pairs"] = spread(ratios)  # the fat loader's time over ours, round by round
    return out


def spread(xs: list) -> dict:
    """Median, min, max and the slowest over the median of ``xs``."""
    med = float(np.median(xs))
    return {"median": med, "min": float(min(xs)), "max": float(max(xs)), "slowest_over_median": float(max(xs)) / med}


def _tree(p: Path) -> int:
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file())


def main(argv=None) -> None:
    """``python -m uih.lowdup``: the full-size job alone, its table printed and its JSON written to
    ``bench/results/lowdup.json`` (REPORT.md takes it in place of an older ``uih bench`` run's)."""
    import argparse
    import tempfile

    from .fmt import machine_line, write_json

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--rounds", type=int, default=LowDupConfig.rounds)
    ap.add_argument("--quick", action="store_true", help="the tiny job uih bench's quick mode runs")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "bench" / "results"))
    a = ap.parse_args(argv)
    cfg = QUICK if a.quick else LowDupConfig()
    if a.rounds != cfg.rounds:
        from dataclasses import replace
        cfg = replace(cfg, rounds=a.rounds)
    with tempfile.TemporaryDirectory() as d:
        res = run(Path(d), cfg)
    from .report import low_dup_lines

    print(f"on {machine_line()}")
    print("\n".join(low_dup_lines(res)))
    print(f"wrote {write_json(Path(a.out) / 'lowdup.json', res)}")


if __name__ == "__main__":
    main()
