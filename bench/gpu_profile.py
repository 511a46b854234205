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
from kernels import _common
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
    n_arrays = sum(1 for x in (sl + asm) for _ in _leaves(x))
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
        rec.backend.synchronize()
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        for _ in rec.iter_batches(thin, batch_size=FULL["batch"]):
            pass
        rec.backend.synchronize()
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
    write_json(RESULTS / "gpu_profile.json", out)
    return 0


def _leaves(x):
    if isinstance(x, tuple):
        for v in x:
            yield from _leaves(v)
    elif hasattr(x, "__cuda_array_interface__") or isinstance(x, np.ndarray):
        yield x


if __name__ == "__main__":
    sys.exit(main())
