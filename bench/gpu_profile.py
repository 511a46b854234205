"""Where a GPU reconstruction's time goes: host launch cost vs kernel time vs the rest (GPU only).

Run after ``bench/gpu_check.sh`` when its kernel timing is far below the copy: it separates

* the GPU time of the slicing + assembly kernels alone (launches queued behind ``torch.cuda._sleep``, so
  the host's launch cost is hidden and the events time only the kernels),
* the host time to launch them, per path: the production launcher, arguments imported once, and the
  compiled kernel's own ``launch``,
* the cost of the pieces of one launch (importing one CuPy array, typing it),
* a cProfile of a warm ``iter_batches`` epoch (top functions by own time).

Prints tables, writes bench/results/gpu_profile.json. Needs CuPy, numba-cuda and torch on a GPU.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import engine
import kernels
from bench.gpu_check import FULL, assembly_case, build_store, projections
from engine import _deps
from kernels import _common, _launch
from uih.fmt import table, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def _host_us(fn, n=30) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def gpu_only_seconds(xp, fn, n=20) -> tuple:
    """(GPU seconds per call of ``fn``'s kernels, host seconds per call): the launches are queued behind
    a long sleep kernel, so the device runs them back to back whatever the host's launch cost."""
    import torch
    fn()
    xp.cuda.Device().synchronize()
    start, end = xp.cuda.Event(), xp.cuda.Event()
    torch.cuda._sleep(int(2e9))  # ~1 s at the H200's clocks: longer than queuing n launches
    start.record()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    host = (time.perf_counter() - t) / n
    end.record()
    end.synchronize()
    return xp.cuda.get_elapsed_time(start, end) / 1e3 / n, host


def main() -> int:
    if not hasattr(np, "row_stack"):  # numba-cuda <= 0.30 overloads it; numpy 2.5 removed it (as gpu_check.sh)
        np.row_stack = np.vstack
    xp = _deps.cupy()
    _deps.numba_cuda()
    from numba import cuda
    rows, out = [], {}
    sl, asm, nbytes = assembly_case(xp, FULL)
    kernels.slice_cuda(*sl)
    kernels.assemble_cuda(*asm)
    xp.cuda.Device().synchronize()
    B = sl[4].r_lo.shape[0]

    def pair():
        kernels.slice_cuda(*sl)
        kernels.assemble_cuda(*asm)
    gpu, host = gpu_only_seconds(xp, pair)
    out["kernels_gpu_s"], out["launch_host_s"] = gpu, host
    rows.append(["slice + assembly, GPU time only", f"{gpu * 1e6:.0f} us = {nbytes / gpu / 1e9:.0f} GB/s"])
    rows.append(["slice + assembly, host launch (production)", f"{host * 1e6:.0f} us"])

    from kernels import assembly, slicing
    k_sl, k_as = slicing._kernel._compiled[_common.CUDA_THREADS], assembly._kernel._compiled[_common.CUDA_THREADS]
    pre_sl = tuple(_common.unsynced(a) for a in sl)
    pre_as = tuple(_common.unsynced(a) for a in asm)
    thr = _common.CUDA_THREADS

    def dispatcher():  # the path before kernels._launch: every argument imported and typed per launch
        k_sl[B, thr, 0](*(_common.unsynced(a) for a in sl))
        k_as[B, thr, 0](*(_common.unsynced(a) for a in asm))
    out["launch_dispatcher_us"] = _host_us(dispatcher)
    rows.append(["host launch, Numba dispatcher (arguments imported per launch)",
                 f"{out['launch_dispatcher_us']:.0f} us"])

    def pre():
        k_sl[B, thr, 0](*pre_sl)
        k_as[B, thr, 0](*pre_as)
    out["launch_preimported_us"] = _host_us(pre)
    rows.append(["host launch, Numba dispatcher, arguments imported once", f"{out['launch_preimported_us']:.0f} us"])
    fast = [slicing._kernel.fast[thr].launches, assembly._kernel.fast[thr].launches]
    out["fast_launches"] = fast
    rows.append(["fast launches made (slicing, assembly)", str(fast)])
    a = sl[4].r_lo
    out["unsynced_us"] = _host_us(lambda: cuda.as_cuda_array(a, sync=False), 200)
    out["as_cuda_array_sync_us"] = _host_us(lambda: cuda.as_cuda_array(a), 200)
    d = cuda.as_cuda_array(a, sync=False)
    out["typeof_cupy_us"] = _host_us(lambda: k_sl.typeof_pyval(a), 200)
    out["typeof_numba_us"] = _host_us(lambda: k_sl.typeof_pyval(d), 200)
    n_arrays = sum(hasattr(v, "__cuda_array_interface__") for v in _launch._leaves(sl + asm, []))
    rows.append([f"one array: import (no sync) / import (sync) / typeof CuPy / typeof Numba; {n_arrays} "
                 "arrays per pair", f"{out['unsynced_us']:.1f} / {out['as_cuda_array_sync_us']:.1f} / "
                 f"{out['typeof_cupy_us']:.1f} / {out['typeof_numba_us']:.1f} us"])
    print(table(rows, ["what", "measured"]), flush=True)

    with tempfile.TemporaryDirectory() as dd:
        store, thin = build_store(Path(dd) / "s", FULL)
        p = next(iter(projections(FULL).values()))
        rec = engine.Reconstructor(store, p, device="cuda")
        for _ in range(2):
            n = sum(1 for _ in rec.iter_batches(thin, batch_size=FULL["batch"]))
        rec.synchronize()
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        for _ in rec.iter_batches(thin, batch_size=FULL["batch"]):
            pass
        rec.synchronize()
        prof.disable()
        out["epoch_s"], out["batches"] = time.perf_counter() - t, n
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(22)
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(30)
        text = s.getvalue()
        out["profile"] = text
        print(f"\nwarm iter_batches epoch: {n} batches in {out['epoch_s'] * 1e3:.1f} ms")
        print(text)
        store.close()
    out["batch_sweep"] = batch_sweep()
    write_json(RESULTS / "gpu_profile.json", out)
    return 0


def batch_sweep(users=256, history=8192, requests=16384, max_len=4096, devices=("cuda", "cpu")) -> list:
    """Warm ``iter_batches`` epochs, CUDA vs CPU (all this host's cores) on the same store and requests,
    by batch size: where the per-batch host work stops mattering. Bytes are the padded output's."""
    from uih.speed import COLUMNS
    from uih.workload import DAY_US, synthetic_store
    rows = []
    with tempfile.TemporaryDirectory() as dd:
        store = synthetic_store(Path(dd) / "s", users, history)
        rng = np.random.default_rng(2)
        thin = store.snapshot({"user_id": rng.integers(0, users, requests),
                               "request_ts": np.full(requests, 31 * DAY_US)})
        p = engine.Projection(COLUMNS, max_len=max_len)
        nbytes = requests * max_len * 20
        for batch in (512, 2048, 8192):
            row = {"batch": batch}
            for device in devices:
                rec = engine.Reconstructor(store, p, device=device)

                def epoch():
                    for _ in rec.iter_batches(thin, batch_size=batch):  # noqa: B023
                        pass
                    rec.synchronize()  # noqa: B023
                epoch()
                times = []
                for _ in range(3):
                    t = time.perf_counter()
                    epoch()
                    times.append(time.perf_counter() - t)
                row[device] = float(np.median(times))
            rows.append(row)
        store.close()
    print(f"\nwarm iter_batches epochs, {requests} requests over {users} users x {history} events, L={max_len}, "
          "3 columns (median of 3):")
    print(table([[r["batch"], *(f"{r[d] * 1e3:.0f} ms = {nbytes / r[d] / 1e9:.1f} GB/s" for d in devices),
                  *([f"{r['cpu'] / r['cuda']:.1f}x"] if len(devices) == 2 else [])]
                 for r in rows], ["batch", *devices, *(["cuda speed-up"] if len(devices) == 2 else [])]), flush=True)
    return rows


if __name__ == "__main__":
    sys.exit(main())
