"""``bench/gpu_check.py``'s logic in Numba's CUDA simulator on tiny sizes, so the GPU check cannot rot:
the same ``run_checks`` the GPU runs, with NumPy for CuPy and the simulated CUDA kernels."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kernels

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# the rows that compare nothing in the simulator: which reader ran, timings, and DALI when it is absent
INFO = {"segment reader", "slice+assembly kernels", "iter_batches end to end"}


def test_every_check_passes_in_the_simulator(gpu_check):
    rows, result = gpu_check.run_checks(np, "cuda-sim", gpu_check.TINY)
    assert gpu_check.failed(rows) == [], rows
    names = " | ".join(r[0] for r in rows)
    for part in ("CUDA kernels == CPU twins", "edge cases", "Reconstructor cuda-sim == cpu", "to_torch",
                 "CorruptionError", "DALI", "assembly", "iter_batches", "DLPack", "second thread"):
        assert part in names
    dali = importlib.util.find_spec("nvidia.dali") is not None if importlib.util.find_spec("nvidia") else False
    for name, _, verdict in rows:  # "pass" only where something was compared
        reports = any(name.startswith(p) for p in INFO) or (name.startswith("DALI") and not dali)
        assert verdict == ("info" if reports else "pass"), (name, verdict)
    assert "kernel launches" not in names  # the simulator launches through Numba's dispatcher: nothing to check
    assert result["fast_launches"] == [0, 0]
    assert result["assembly"]["bytes"] > 0 and result["iter_batches"]["bytes"] > 0


def test_a_wrong_kernel_is_a_failure(gpu_check, monkeypatch):
    real = kernels.assemble_cuda

    def off_by_one(src, runs, tail, flt, ex, sel, max_len, right, pad, out, stream=0):
        real(src, runs, tail, flt, ex, sel, max_len, right, pad, out, stream=stream)
        if out.lengths.shape[0]:
            out.lengths[0] += 1
    monkeypatch.setattr(kernels, "assemble_cuda", off_by_one)
    rows = []
    gpu_check.check_kernels(np, gpu_check.TINY, rows)
    assert [r[2] for r in rows] == ["FAIL", "FAIL"]


def test_a_slot_read_before_its_fill_landed_is_a_failure(gpu_check, monkeypatch, tmp_path):
    """The second-thread row compares: cached slots that read as garbage (a copy not yet landed) FAIL it."""
    from engine.training._arena import GroupArena
    real = GroupArena.acquire

    def unfinished(self, keys):
        slots, missing = real(self, keys)
        if not missing:  # every block cached: its words read as if their copies had not landed
            for s in slots.tolist():
                self.w8[:, s * self.slot_rows:(s + 1) * self.slot_rows] = -1
        return slots, missing
    store, _ = gpu_check.build_store(tmp_path / "s", gpu_check.TINY)
    monkeypatch.setattr(GroupArena, "acquire", unfinished)
    rows = []
    gpu_check.check_reuse(np, "cuda-sim", store, gpu_check.TINY, rows)
    store.close()
    assert rows[0][2] == "FAIL" and "DIFFERENT" in rows[0][1]


def test_a_copying_hand_off_is_a_failure(gpu_check, monkeypatch):
    import torch
    monkeypatch.setattr(torch, "from_dlpack", lambda x: torch.tensor(np.array(x)))
    rows = []
    gpu_check.check_handoff(np, rows)
    assert rows[0][2] == "FAIL"


def test_script_refuses_to_run_without_a_gpu_stack():
    """Without CuPy the script says what is missing and exits non-zero (never a silent pass)."""
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here: the script would run the real check")
    proc = subprocess.run([sys.executable, "bench/gpu_check.py"], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert proc.returncode == 2 and "CuPy" in proc.stderr  # and nothing imported the tests: PYTHONPATH is the root
