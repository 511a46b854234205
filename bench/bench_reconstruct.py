"""Reconstruction throughput against the memory-copy limit and a peer padding kernel.

For B examples and 3 projected columns (item_id int64, action int32, ts int64 = 20 bytes per event):

* assembly: the two kernels (versioned slicing + fused padded assembly) on a prepared chunk: GB/s of
  output written;
* end to end: ``Reconstructor.reconstruct(thin)`` including the Parquet reads (warm page cache);
* copy: ``torch.Tensor.copy_`` of the same number of bytes with 2 threads (this machine's ceiling);
* aten: ``torch.ops.aten._jagged_to_padded_dense_forward`` padding the same, already gathered values,
  one call per column (a peer that does less work: no versioned cut, no tail merge).

Also the bytes each tenant reads (OS counters, page cache dropped) with every pushdown dimension on,
and with each one switched off in turn; where one chunk's time goes (read, decode, staging, kernels) as
the events per chunk grow; and a whole pass of ``iter_batches`` (prefetch off and on) against the Fat Row
loader on the same requests, with a check that every array is identical.

    python bench/bench_reconstruct.py [--lengths 1024,4096,16384,65536] [--batch 512]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import engine
from uih.fmt import machine_line, table, write_json
from uih.iostats import drop_cache, measure
from uih.speed import assembly_speed, loader_speed, requests, where_time_goes
from uih.workload import DAY_US, synthetic_store

PUSHDOWN = engine.Reconstructor.PUSHDOWN

RESULTS = Path(__file__).resolve().parent / "results"
DAY = DAY_US


TENANTS = {
    "ranking (item,action,ts; L=4K)": engine.Projection(["item_id", "action", "ts"], max_len=4096),
    "retrieval (item; clicks+; 14d; L=512)": engine.Projection(["item_id"], max_len=512, actions=[1, 2, 3, 4],
                                                                window_us=14 * DAY),
    "purchase (item,surface; rare types; L=1K)": engine.Projection(["item_id", "surface"], max_len=1024,
                                                                    actions=[3, 4]),
}


def bench_pushdown(store, batch, users):
    rng = np.random.default_rng(2)
    thin = store.snapshot(requests(rng, users // 4, batch))  # a quarter of users: users pushdown
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
    ap.add_argument("--stage-lengths", default="1024,10240", help="max_len values of the time table")
    ap.add_argument("--loader-lengths", default="1024,4096", help="max_len values of the loader race")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    lengths = [int(x) for x in a.lengths.split(",")]
    history = max(lengths) + max(lengths) // 8
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as d:
        store = synthetic_store(Path(d) / "store", a.users, history)
        speed = assembly_speed(store, lengths, a.batch, a.users)
        push = bench_pushdown(store, a.batch, a.users)
        stages = where_time_goes(store, [int(x) for x in a.stage_lengths.split(",")], a.batch, a.users)
        loaders = [loader_speed(store, d, int(L), a.batch, a.users) for L in a.loader_lengths.split(",")]
        store.close()
    print(f"bench_reconstruct on {machine_line()}; B={a.batch}, 3 columns (20 B/event), {a.users} users x "
          f"{history:,} sealed events; medians; ratios are time(peer)/time(ours)")
    print(table([[r["max_len"], f"{r['bytes'] / 1e6:.0f} MB", f"{r['assembly_gbps']:.2f}",
                  f"{r['end_to_end_gbps']:.2f}", f"{r['copy_gbps']:.2f} / {r['copy_mem_gbps']:.2f}",
                  f"{r['aten_gbps']:.2f}", f"{r['vs_copy']:.2f}x",
                  f"{r['e2e_vs_copy']:.2f}x / {r['e2e_vs_copy_mem']:.2f}x", f"{r['vs_aten']:.1f}x"]
                 for r in speed],
                ["max_len", "output", "assembly GB/s", "end-to-end GB/s", "2-thread copy GB/s (cache / memory)",
                 "aten GB/s", "assembly/copy", "end-to-end/copy (cache / memory)", "assembly/aten"]))
    labels = [k for k in push[0] if k != "tenant"]
    print("\nbytes read per tenant (OS read_bytes, page cache dropped), each pushdown dimension switched off:")
    print(table([[r["tenant"], *(f"{r[k] / 1e6:.1f} MB" for k in labels)] for r in push], ["tenant", *labels]))
    print("\nwhere one chunk's time goes (ms per chunk of B requests, medians; read = page cache dropped "
          "minus warm, decode = fresh decoded cache minus warm, staging = the rest of the preparation):")
    print(table([[r["max_len"], f"{r['events']:,}", f"{r['read_ms']:.1f}", f"{r['decode_ms']:.1f}",
                  f"{r['staging_ms']:.2f}", f"{r.get('slicing_ms', float('nan')):.2f}", f"{r['kernels_ms']:.1f}"]
                 for r in stages],
                ["max_len", "events/chunk", "read", "decode", "staging", "slicing", "slicing+assembly"]))
    print(f"\none pass over {loaders[0]['examples']} requests, examples/s (page cache warm; late path starts "
          "each pass with no decoded row group):")
    print(table([[r["max_len"], f"{r['fat_eps']:,.0f}", f"{r['late_prefetch_off_eps']:,.0f}",
                  f"{r['late_prefetch_on_eps']:,.0f}", f"{r['late_prefetch_on_eps'] / r['fat_eps']:.2f}x",
                  "yes" if r["identical"] else "NO"] for r in loaders],
                ["max_len", "fat-row loader", "iter_batches prefetch off", "prefetch on", "on/fat",
                 "identical arrays"]))
    path = write_json(Path(a.out or RESULTS) / "bench_reconstruct.json",
                      {"speed": speed, "pushdown_read_bytes": push, "where_time_goes": stages,
                       "loader": loaders, "params": vars(a)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
