"""The body of ``bench/gpu_check.sh`` (see there). Writes bench/results/gpu_check.json."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from uih.fmt import table, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def _device_time(fn, cp, repeat=10):
    fn()
    cp.cuda.Device().synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(repeat):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) / 1e3)
    return float(np.median(times))


def check_kernels(cp, rows):
    import kernels
    from kernels.reference import random_case, reference, run

    worst = 0
    for seed in range(40):
        case = random_case(seed, n_users=16, n_ex=64, max_hist=3000, max_tail=40, sparse=seed % 2 == 1)
        for max_len, right, actions, window in [(1, False, None, None), (64, True, (1, 3), None),
                                                (512, False, None, 300), (5000, True, (0, 2), 500)]:
            want = reference(case, max_len, right, actions, window, (0, -1), (5,))
            got = run(kernels.slice_cuda, kernels.assemble_cuda, case, max_len, right, actions, window, (0, -1),
                      (5,), xp=cp)
            for g, w in zip(got, want):
                worst = max(worst, int((cp.asnumpy(g) != w).sum()))
    rows.append(["CUDA kernels vs NumPy reference (160 random cases)", "0 mismatches" if worst == 0
                 else f"{worst} MISMATCHES", "pass" if worst == 0 else "FAIL"])
    return worst == 0


def check_reconstructor(cp, torch, rows):
    from conftest import COLUMNS, make_events

    import engine

    with tempfile.TemporaryDirectory() as d:
        store = engine.UIHStore.create(Path(d) / "s", columns=COLUMNS)
        rng = np.random.default_rng(0)
        for day in range(3):
            store.append(make_events(rng, range(200), 200_000, t0=day * 10**9, span=10**9))
            store.seal((day + 1) * 10**9 - 10**8)
        thin = store.snapshot({"user_id": rng.integers(0, 200, 2048), "request_ts": np.full(2048, 4 * 10**9)})
        ok = True
        for p in [engine.Projection(["item_id", "action", "ts"], max_len=4096),
                  engine.Projection(["item_id", "surface"], max_len=512, actions=[1, 3], window_us=5 * 10**8,
                                    align="right", pad_value=-1)]:
            cpu = engine.Reconstructor(store, p, device="cpu").reconstruct(thin)
            rec = engine.Reconstructor(store, p, device="cuda")
            gpu = rec.reconstruct(thin)
            ok &= all(np.array_equal(cp.asnumpy(gpu[c]), cpu[c]) for c in cpu)
            t = gpu.to_torch()
            ok &= all(t[c].is_cuda and t[c].data_ptr() == gpu[c].data.ptr for c in gpu)
            batches = list(rec.iter_batches(thin, batch_size=300))
            ok &= np.array_equal(np.concatenate([cp.asnumpy(b["item_id"]) for b in batches]), cpu["item_id"])
            if p.actions is None:
                ok &= check_dali_gpu(cp, rec, thin, cpu["item_id"], rows)
        reader = "cuDF" if rec.backend.cudf is not None else "PyArrow + pinned copy (no cuDF)"
        rows.append([f"Reconstructor cuda == cpu, to_torch zero-copy, iter_batches ({reader})",
                     "equal" if ok else "DIFFERENT", "pass" if ok else "FAIL"])
        store.close()
    return ok


def time_assembly(cp, rows, result):
    import kernels
    B, L, users, hist = 512, 4096, 64, 8192
    rng = np.random.default_rng(1)
    n = users * hist
    src8 = cp.asarray(rng.integers(0, 1 << 40, (2, n)))
    src4 = cp.asarray(rng.integers(0, 100, (1, n)).astype(np.int32))
    u = rng.integers(0, users, B)
    r_lo, r_hi = cp.asarray(u), cp.asarray(u + 1)  # one run per user
    runs = kernels.Runs(cp.asarray(np.arange(users + 1) * hist), cp.asarray(np.arange(users) * hist),
                        cp.zeros(users, np.int64))
    imm_hw = cp.asarray(np.full(B, hist, np.int64))
    t = cp.zeros(B, np.int64)
    ts_min = cp.asarray(np.full(B, kernels.NO_WINDOW, np.int64))
    flt = kernels.make_filter(None, False)
    flt = flt._replace(type_ok=cp.asarray(flt.type_ok))
    none8, none4 = cp.zeros(0, np.int64), cp.zeros(0, np.int32)
    src = kernels.Source(src8, src4, none8, none8, none4)
    tail = kernels.Source(cp.zeros((2, 0), np.int64), cp.zeros((1, 0), np.int32), none8, none8, none4)
    ex = kernels.Examples(r_lo, r_hi, imm_hw, t, t, ts_min)
    sel = cp.empty((B, 5), np.int64)
    out = kernels.Output(cp.empty((2, B * L), np.int64), cp.empty((1, B * L), np.int32), cp.empty(B, np.int32),
                         cp.arange(B, dtype=np.int64) * L, L)
    pad = kernels.Words(cp.zeros(2, np.int64), cp.zeros(1, np.int32))

    def run():
        kernels.slice_cuda(src, runs, tail, flt, ex, L, sel)
        kernels.assemble_cuda(src, runs, tail, flt, ex, sel, L, False, pad, out)
    nbytes = out.w8.nbytes + out.w4.nbytes
    t_k = _device_time(run, cp)
    a = cp.empty(nbytes, np.uint8)
    b = cp.empty_like(a)
    t_c = _device_time(lambda: b.__setitem__(slice(None), a), cp)
    ratio = t_c / t_k
    result.update(assembly_gbps=nbytes / t_k / 1e9, d2d_copy_gbps=nbytes / t_c / 1e9, ratio=ratio)
    rows.append([f"assembly B={B} L={L} 3 cols vs device-to-device copy",
                 f"{nbytes / t_k / 1e9:.0f} vs {nbytes / t_c / 1e9:.0f} GB/s = {ratio:.2f}x",
                 "pass" if ratio >= 0.7 else "below 0.7x goal"])


def check_handoff(cp, torch, rows):
    x = cp.arange(1 << 20, dtype=cp.int64)
    t = torch.from_dlpack(x)
    ok = t.is_cuda and t.data_ptr() == x.data.ptr and int(t[-1]) == (1 << 20) - 1
    rows.append(["CuPy -> DLPack -> torch zero-copy (what the DALI GPU pipeline relies on)",
                 "same pointer" if ok else "COPIED", "pass" if ok else "FAIL"])
    return ok


def check_dali_gpu(cp, rec, thin, want, rows):
    """The GPU DALI pipeline: fed CuPy arrays (device memory, no host hop), CUDA torch outputs."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        rows.append(["DALI GPU pipeline", "DALI not installed here: not run", "skipped"])
        return True
    from dali_plugin import UIHIterator, uih_pipeline
    pipe = uih_pipeline(rec, thin, batch_size=300, device_id=0)
    fed = next(pipe.uih_source.batches())
    on_device = all(isinstance(a, cp.ndarray) for a in fed)
    got = list(UIHIterator(pipe))
    cuda_out = all(v.is_cuda for b in got for v in b.values())
    equal = np.array_equal(np.concatenate([b["item_id"].cpu().numpy() for b in got]), want)
    ok = on_device and cuda_out and equal
    rows.append(["DALI GPU pipeline: CuPy in, CUDA tensors out, equal to CPU",
                 f"device input {on_device}, CUDA output {cuda_out}, equal {equal}", "pass" if ok else "FAIL"])
    return ok


def main():
    t0 = time.time()
    import cupy as cp
    import torch
    rows, result = [], {}
    dev = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    ok = check_kernels(cp, rows)
    ok &= check_reconstructor(cp, torch, rows)
    time_assembly(cp, rows, result)
    ok &= check_handoff(cp, torch, rows)
    write_json(RESULTS / "gpu_check.json", {"device": dev, "rows": rows, **result})
    print(f"\ngpu_check on {dev} ({time.time() - t0:.0f} s)")
    print(table(rows, ["check", "result", "verdict"]))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
