"""``bench/gpu_tenants.py``'s plumbing on CPU, so the GPU script cannot rot: the "cuda" reconstructor is
a CPU one and NumPy stands in for CuPy. What runs on the device is the same code with the real ones."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import engine
import uih.jobs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def script(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_tenants", ROOT / "bench" / "gpu_tenants.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setitem(sys.modules, "cupy", np)
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    fat = uih.jobs.fat_job
    monkeypatch.setattr(mod, "fat_job", lambda *a, device=None, **k: fat(*a, **k))
    return mod


def on_cpu(monkeypatch, plant=None):
    """``Reconstructor(device="cuda")`` built on CPU; ``plant`` alters the batches the "cuda" one yields."""
    real = engine.Reconstructor

    class Fake(real):
        def __init__(self, *a, device="auto", **k):
            super().__init__(*a, device="cpu", **k)
            self.planted = device == "cuda" and plant is not None

        def iter_batches(self, *a, **k):
            for b in super().iter_batches(*a, **k):
                yield plant(b) if self.planted else b

    monkeypatch.setattr(engine, "Reconstructor", Fake)
    monkeypatch.setattr(uih.jobs, "Reconstructor", Fake)


def test_every_tenant_is_timed_and_compared(script, monkeypatch, tmp_path, capsys):
    on_cpu(monkeypatch)
    assert script.main(["--users", "30", "--repeats", "1"]) == 0
    out = json.loads((tmp_path / "gpu_tenants.json").read_text())
    assert out["failed"] == [] and len(out["tenants"]) == 4
    for r in out["tenants"]:
        assert r["equal_examples"] == r["examples"] == r["cuda"]["examples"] == r["fat_to_cuda"]["examples"] > 0
        assert r["cuda"]["seconds"] > 0 and r["fat_to_cuda"]["read_bytes"] >= 0
    assert "CUDA == CPU" in capsys.readouterr().out


def test_a_differing_batch_fails_the_run(script, monkeypatch, tmp_path, capsys):
    def plus_one(b):
        arrays = dict(b)
        arrays["lengths"] = arrays["lengths"] + 1
        return engine.Batch(arrays, b.device)

    on_cpu(monkeypatch, plus_one)
    assert script.main(["--users", "30", "--repeats", "1"]) == 1
    out = json.loads((tmp_path / "gpu_tenants.json").read_text())
    assert len(out["failed"]) == 4 and all("lengths" in f for f in out["failed"])
    assert "FAIL" in capsys.readouterr().out
