"""Builds the serving-side logs of a workload: the store, thin rows and (for comparison) Fat Rows.

This is the write half of ``uih demo`` and ``uih bench`` (the workload replayed against a store):
every byte written is counted from the kernel's I/O counters, attributed to the store's log, its seals,
its compactions, the thin rows and the fat rows, day by day.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from engine import InvalidArgument, UIHError, UIHStore, write_parquet

from .iostats import measure, tree_bytes
from .workload import COLUMNS, DAY_US, T0, Workload, WorkloadConfig


def _requests_table(reqs: dict) -> pa.Table:
    dense = reqs["dense"]
    flat = pa.array(dense.reshape(-1))
    return pa.table({"example_id": reqs["example_id"], "user_id": reqs["user_id"],
                     "request_ts": reqs["request_ts"], "label": reqs["label"],
                     "dense": pa.FixedSizeListArray.from_arrays(flat, dense.shape[1])})


class _DayWriter:
    """One Parquet file per day, opened lazily on the first batch."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.w = None

    def write(self, day: int, table: pa.Table):
        if self.w is None:
            self.w = pq.ParquetWriter(self.folder / f"day={day:03d}.parquet", table.schema, compression="zstd")
        self.w.write_table(table)

    def close(self):
        if self.w is not None:
            self.w.close()
            self.w = None


def _floor_bytes(tmp: Path, events: list, seqs: list) -> int:
    """Bytes of the day's new events written once, compressed like a segment: the write floor."""
    cols = {k: np.concatenate([e[k] for e in events]) for k in events[0]}
    cols["seq"] = np.concatenate(seqs)
    order = np.lexsort((cols["seq"], cols["user_id"]))
    table = pa.table({c: cols[c][order] for c in ["user_id", "seq", "ts", *COLUMNS]})
    write_parquet(tmp, table)
    size = tmp.stat().st_size
    tmp.unlink()
    return size


def _sidecar_bytes(segments) -> int:
    """Bytes of the event-type sidecars (files and indexes) of the given segments: the seal's
    duplicated share, what type pushdown costs the writer."""
    return sum(p.bytes + p.index_bytes for s in segments for p in s.parts.values() if p.name != "main")


MARKER = ".uih-demo"  # lists what ``build`` writes in its folder: the only paths a rerun deletes there
# the names ``build`` may write: a marker listing anything else was not written by it, and deletes nothing
# (and the demo's plot beside them)
_PRODUCT = re.compile(r"store|thin|fat|fat_[0-9]+|\.floor\.parquet|demo\.png")


def _products(fat_lengths) -> list:
    """The names of what ``build`` (and ``uih demo`` around it) writes under its folder."""
    return ["store", "thin", "fat", ".floor.parquet", "demo.png", *(f"fat_{int(L)}" for L in fat_lengths)]


def _listed(out: Path) -> list:
    """The names the marker of an earlier run lists; a marker that is not such a list is an error."""
    try:
        names = json.loads((out / MARKER).read_text())
    except (OSError, ValueError) as e:
        names = e
    if not isinstance(names, list) or not all(isinstance(n, str) and _PRODUCT.fullmatch(n) for n in names):
        raise UIHError(f"{out / MARKER} does not list what an earlier uih run wrote ({names!r:.80}); nothing was "
                       "deleted: remove that run's outputs and the marker yourself, or pass a new or empty folder")
    return names


def prepare_out(out: Path, fat_lengths=()) -> None:
    """Make ``out`` ready for a fresh run: create it, or delete what the marker of an earlier run lists.

    A non-empty folder without the marker was not made by us: refuse it rather than delete anything.
    The new marker is written before any output, so a run that dies midway is cleared by the next one.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InvalidArgument(f"--out {out} is a file; pass a new or empty folder")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UIHError(f"--out {out} is not empty and was not created by uih (no {MARKER} marker); pass a new "
                       "or empty folder, nothing was deleted")
    for p in [out / name for name in _listed(out)] if (out / MARKER).exists() else []:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(_products(fat_lengths)))
    os.replace(tmp, out / MARKER)  # whole or absent: a torn marker would make the next run refuse


def build(out: Path, cfg: WorkloadConfig, fat: bool = True, compact_every: int = 2, progress=True,
          fat_lengths=()) -> dict:
    """Run ``cfg`` through a fresh store under ``out``; returns paths and per-day byte counts.

    Fat rows keep the union max length in ``out/fat``; each of ``fat_lengths`` gets ``out/fat_<L>`` too.
    """
    out = Path(out)
    prepare_out(out, fat_lengths)
    wl = Workload(cfg)
    store = UIHStore.create(out / "store", columns=COLUMNS, event_type_column="action")
    rng = np.random.default_rng(cfg.seed + 7)
    days = []
    with measure() as io:
        store.append(wl.backfill_events())
        store.seal(T0)
    backfill = {"events": int(wl.backfill.sum()), "store_bytes": io["write_bytes"]}
    bar = tqdm(total=cfg.days * cfg.slices_per_day, desc="serving days", unit="slice", disable=not progress)
    for d in range(cfg.days):
        row = {"day": d, "events": 0, "requests": 0, "log_bytes": 0, "seal_bytes": 0, "compact_bytes": 0,
               "thin_bytes": 0, "fat_bytes": 0, "fat_events": 0, "fat_bytes_by_len": dict.fromkeys(fat_lengths, 0)}
        thin_w, fat_w = _DayWriter(out / "thin"), _DayWriter(out / "fat")
        extra_w = {L: _DayWriter(out / f"fat_{L}") for L in fat_lengths}
        day_events, day_seqs = [], []
        for events, reqs, _ in wl.day(d):
            with measure() as io:
                seqs = store.append(events)
                k = int(len(seqs) * cfg.update_share)
                if k:
                    pick = rng.choice(len(seqs), k, replace=False)
                    store.update({"user_id": events["user_id"][pick], "seq": seqs[pick],
                                  "dwell_ms": rng.integers(0, 60_000, k).astype(np.int32)})
            row["log_bytes"] += io["write_bytes"]
            row["events"] += len(seqs)
            day_events.append(events)
            day_seqs.append(seqs)
            req = _requests_table(reqs)
            row["requests"] += req.num_rows
            thin = store.snapshot(req)
            with measure() as io:
                thin_w.write(d, thin)
            row["thin_bytes"] += io["write_bytes"]
            if fat:
                f = store.snapshot(req, materialize=True, max_len=cfg.union_max_len)
                row["fat_events"] += int(pa.compute.list_value_length(f["seq"]).to_numpy().sum())
                with measure() as io:
                    fat_w.write(d, f)
                row["fat_bytes"] += io["write_bytes"]
            for L, w in extra_w.items():
                f = store.snapshot(req, materialize=True, max_len=L)
                with measure() as io:
                    w.write(d, f)
                row["fat_bytes_by_len"][L] += io["write_bytes"]
            bar.update()
        for L, w in extra_w.items():
            with measure() as io:
                w.close()
            row["fat_bytes_by_len"][L] += io["write_bytes"]
        with measure() as io:
            thin_w.close()
        row["thin_bytes"] += io["write_bytes"]
        with measure() as io:
            fat_w.close()
        row["fat_bytes"] += io["write_bytes"]
        before = {s.id for s in store.segments}
        with measure() as io:
            store.seal(T0 + (d + 1) * DAY_US)
        row["seal_bytes"] = io["write_bytes"]
        row["sidecar_bytes"] = _sidecar_bytes(s for s in store.segments if s.id not in before)
        if compact_every and (d + 1) % compact_every == 0:
            with measure() as io:
                store.compact()
            row["compact_bytes"] = io["write_bytes"]
        row["store_bytes"] = row["log_bytes"] + row["seal_bytes"] + row["compact_bytes"]
        row["segments"] = len(store.segments)  # what a reader opens after the day
        row["floor_bytes"] = _floor_bytes(out / ".floor.parquet", day_events, day_seqs) + row["thin_bytes"]
        days.append(row)
    bar.close()
    stats = store.stats()
    store.close()
    return {"config": {k: v for k, v in asdict(cfg).items() if k != "tenants"},
            "tenants": [asdict(t) for t in cfg.tenants], "out": str(out), "backfill": backfill, "days": days,
            "store": stats, "files": {"store": tree_bytes(out / "store"), "thin": tree_bytes(out / "thin"),
                                      "fat": tree_bytes(out / "fat") if fat else 0}}
