"""First run: kernels compile once, announced, with a progress bar and its time, before anything is
measured; with Numba's disk cache warm nothing is said."""

import subprocess
import sys
from pathlib import Path

import pytest

from uih import warmup
from uih.workload import WorkloadConfig

ROOT = Path(__file__).resolve().parent.parent


def test_an_empty_disk_cache_is_cold(tmp_path):
    """A cache folder with nothing in it (a fresh clone): every cached function of the project is found and
    the cache reads as cold."""
    code = ("import engine, dali_plugin; from kernels._warmup import cache_is_cold, cached_functions; "
            "print(len(cached_functions()), cache_is_cold())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path)})
    n, cold = proc.stdout.split()[-2:]
    assert int(n) >= 15 and cold == "True", proc.stdout + proc.stderr[-2000:]


def test_a_cache_with_every_function_is_warm(monkeypatch):
    import engine  # noqa: F401  loads every cached function of the engine and kernels
    from kernels import _warmup
    fns = _warmup.cached_functions()
    assert fns
    for fn in fns:
        monkeypatch.setattr(fn._cache._cache_file, "_load_index", lambda: {"sig": "entry"})
    assert not _warmup.cache_is_cold()
    monkeypatch.setattr(fns[0]._cache._cache_file, "_load_index", lambda: {})  # one function missing
    assert _warmup.cache_is_cold()


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(warmup, "build", lambda out, cfg, **k: seen.append(("build", cfg.users, cfg.tenants)))
    monkeypatch.setattr(warmup, "file_list", lambda folder: [folder])
    monkeypatch.setattr(warmup, "warm_up_jobs", lambda store, thin, fat, projections, **k:
                        seen.append(("jobs", [p.max_len for p in projections])))
    return seen


def test_warm_cache_says_nothing_and_compiles_nothing(monkeypatch, calls, capsys):
    monkeypatch.setattr(warmup, "cache_is_cold", lambda: False)
    assert warmup.warm_up(WorkloadConfig()) is None
    assert calls == [] and capsys.readouterr() == ("", "")


def test_cold_cache_compiles_every_tenant_once_visibly(monkeypatch, calls, capsys):
    monkeypatch.setattr(warmup, "cache_is_cold", lambda: True)
    cfg = WorkloadConfig()
    took = warmup.warm_up(cfg)
    assert took is not None and took >= 0
    assert calls[0] == ("build", warmup.tiny(cfg).users, cfg.tenants)  # the same tenants, a few users
    assert calls[1:] == [("jobs", [t.max_len]) for t in cfg.tenants]
    out, err = capsys.readouterr()
    assert out.startswith("compiling kernels, first run only") and "kernels compiled in" in out
    assert "compiling kernels:" in err and "5/5" in err  # the progress bar, to its end
