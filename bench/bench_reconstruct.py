"""Reconstruction throughput against the memory-copy limit and a peer padding kernel.

For B examples and 3 projected columns (item_id int64, action int32, ts int64 = 20 bytes per event):

* assembly: the two kernels (versioned slicing + fused padded assembly) on a prepared chunk: GB/s of
  output written;
* end to end: ``Reconstructor.reconstruct(thin)`` including the Parquet reads (warm page cache);
* copy: ``torch.Tensor.copy_`` of the same number of bytes with 2 threads (this machine's ceiling);
* aten: ``torch.ops.aten._jagged_to_padded_dense_forward`` padding the same, already gathered values,
  one call per column (a peer that does less work: no versioned cut, no tail merge).

Also the bytes each tenant reads (OS counters, page cache dropped) with every pushdown dimension on,
and with each one switched off in turn.

    python bench/bench_reconstruct.py [--lengths 1024,4096,16384,65536] [--batch 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, median_time, table, write_json  # noqa: E402

import engine  # noqa: E402
from engine._iostats import drop_cache, measure  # noqa: E402
from engine._reconstruct import PUSHDOWN  # noqa: E402

COLS = {"item_id": "int64", "action": "int32", "surface": "int32", "dwell_ms": "int32"}
DAY = 86_400_000_000


def build_store(root: Path, users: int, history: int, seed=0):
    rng = np.random.default_rng(seed)
    store = engine.UIHStore.create(root, columns=COLS)
    n = users * history
    step = 2_000_000
    uid = np.tile(np.arange(users), history)
    ts = np.repeat(np.arange(history, dtype=np.int64) * (30 * DAY // history), users)
    for i in range(0, n, step):
        k = min(step, n - i)
        store.append({"user_id": uid[i:i + k], "ts": ts[i:i + k], "item_id": rng.integers(0, 1 << 40, k),
                      "action": rng.choice(5, k, p=[0.8, 0.12, 0.05, 0.02, 0.01]).astype(np.int32),
                      "surface": rng.integers(0, 8, k).astype(np.int32),
                      "dwell_ms": rng.integers(0, 60000, k).astype(np.int32)})
    store.seal(31 * DAY)
    return store


def requests(rng, users, batch, history):
    return {"user_id": rng.integers(0, users, batch), "request_ts": np.full(batch, 31 * DAY)}


def bench_lengths(store, lengths, batch, users, history):
    rng = np.random.default_rng(1)
    torch.set_num_threads(2)
    thin = store.snapshot(requests(rng, users, batch, history))
    rows = []
    for L in lengths:
        p = engine.Projection(["item_id", "action", "ts"], max_len=L)
        rec = engine.Reconstructor(store, p, device="cpu")
        chunk = rec._prepare(rec._as_thin(thin))
        out = rec._assemble(chunk, 0, chunk.n)
        nbytes = sum(out[c].nbytes for c in p.columns)
        t_asm = median_time(lambda: rec._assemble(chunk, 0, chunk.n), repeat=7)
        t_e2e = median_time(lambda: rec.reconstruct(thin), repeat=3)
        src = torch.empty(nbytes, dtype=torch.uint8)
        src.fill_(1)
        dst = torch.empty_like(src)
        t_copy = median_time(lambda: dst.copy_(src), repeat=7)
        lens = torch.from_numpy(out["lengths"].astype(np.int64))
        offsets = torch.zeros(batch + 1, dtype=torch.int64)
        torch.cumsum(lens, 0, out=offsets[1:])
        vals = [torch.from_numpy(np.concatenate([out[c][b, :out["lengths"][b]] for b in range(batch)]))
                .reshape(-1, 1) for c in p.columns]
        aten = torch.ops.aten._jagged_to_padded_dense_forward
        t_aten = median_time(lambda: [aten(v, [offsets], [L], 0.0) for v in vals], repeat=5)
        gb = nbytes / 1e9
        rows.append({"max_len": L, "batch": batch, "bytes": nbytes, "assembly_gbps": gb / t_asm,
                     "end_to_end_gbps": gb / t_e2e, "copy_gbps": gb / t_copy, "aten_gbps": gb / t_aten,
                     "vs_copy": t_copy / t_asm, "vs_aten": t_aten / t_asm})
    return rows


TENANTS = {
    "ranking (item,action,ts; L=4K)": engine.Projection(["item_id", "action", "ts"], max_len=4096),
    "retrieval (item; clicks+; 14d; L=512)": engine.Projection(["item_id"], max_len=512, actions=[1, 2, 3, 4],
                                                                window_us=14 * DAY),
    "purchase (item,surface; rare types; L=1K)": engine.Projection(["item_id", "surface"], max_len=1024,
                                                                    actions=[3, 4]),
}


def bench_pushdown(store, batch, users, history):
    rng = np.random.default_rng(2)
    thin = store.snapshot(requests(rng, users // 4, batch, history))  # a quarter of users: users pushdown
    out = []
    for name, p in TENANTS.items():
        row = {"tenant": name}
        for label, dims in [("all on", PUSHDOWN)] + [(f"{d} off", PUSHDOWN - {d}) for d in sorted(PUSHDOWN)]:
            rec = engine.Reconstructor(store, p, device="cpu", prefetch=0, pushdown=dims)
            drop_cache(store.root)
            store.view.clear_cache()
            with measure() as io:
                rec.reconstruct(thin)
            row[label] = io["read_bytes"]
        out.append(row)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="1024,4096,16384,65536")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    lengths = [int(x) for x in a.lengths.split(",")]
    history = max(lengths) + max(lengths) // 8
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as d:
        store = build_store(Path(d) / "store", a.users, history)
        speed = bench_lengths(store, lengths, a.batch, a.users, history)
        push = bench_pushdown(store, a.batch, a.users, history)
        store.close()
    print(f"bench_reconstruct on {machine_line()}; B={a.batch}, 3 columns (20 B/event), {a.users} users x "
          f"{history:,} sealed events; medians; ratios are time(peer)/time(ours)")
    print(table([[r["max_len"], f"{r['bytes'] / 1e6:.0f} MB", f"{r['assembly_gbps']:.2f}", f"{r['end_to_end_gbps']:.2f}",
                  f"{r['copy_gbps']:.2f}", f"{r['aten_gbps']:.2f}", f"{r['vs_copy']:.2f}x", f"{r['vs_aten']:.1f}x"]
                 for r in speed],
                ["max_len", "output", "assembly GB/s", "end-to-end GB/s", "2-thread copy GB/s", "aten GB/s",
                 "assembly/copy", "assembly/aten"]))
    labels = [k for k in push[0] if k != "tenant"]
    print("\nbytes read per tenant (OS read_bytes, page cache dropped), each pushdown dimension switched off:")
    print(table([[r["tenant"], *(f"{r[k] / 1e6:.1f} MB" for k in labels)] for r in push], ["tenant", *labels]))
    path = write_json("bench_reconstruct", {"speed": speed, "pushdown_read_bytes": push, "params": vars(a)},
                      a.out and Path(a.out))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
