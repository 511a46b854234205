"""First run: kernels compile once, announced, with a progress bar and its time, before anything is
measured; with Numba's disk cache warm nothing is said."""

import uuid

import pytest

from uih import warmup
from uih.workload import WorkloadConfig


def test_cold_until_a_warm_up_for_that_workload_marks_it(monkeypatch):
    """A fresh clone has no marker (cold); a completed warm-up marks its workload warm; another workload
    shape, another Numba or an edited source is cold again."""
    from kernels import _warmup
    key = f"test-{uuid.uuid4().hex}"
    try:
        assert _warmup.cache_is_cold(key)
        _warmup.mark_warm(key)
        assert not _warmup.cache_is_cold(key)
        assert _warmup.cache_is_cold(key + "-other tenants")
        monkeypatch.setenv("NUMBA_CACHE_DIR", "/elsewhere")  # another cache folder
        assert _warmup.cache_is_cold(key)
        monkeypatch.delenv("NUMBA_CACHE_DIR")
        monkeypatch.setattr(_warmup, "project_stamp", lambda: (("kernels/slicing.py", 1, 2),))  # an edit
        assert _warmup.cache_is_cold(key)
    finally:
        monkeypatch.undo()
        _warmup.marker(key).unlink(missing_ok=True)


def test_cached_functions_finds_the_projects_numba_functions():
    import engine  # noqa: F401  imports every module with cached Numba functions
    from kernels import _warmup
    names = {f.__name__ for f in _warmup.cached_functions()}
    assert {"slice_jit", "_slice_assemble_cpu"} <= names and len(names) >= 15


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(warmup, "build", lambda out, cfg, **k: seen.append(("build", cfg.users, cfg.tenants)))
    monkeypatch.setattr(warmup, "file_list", lambda folder: [folder])
    monkeypatch.setattr(warmup, "warm_up_dali", lambda: seen.append(("dali",)))
    monkeypatch.setattr(warmup, "mark_warm", lambda key: seen.append(("marked", key)))
    monkeypatch.setattr(warmup, "late_job", lambda store, thin, p, via_dali, **k:
                        seen.append(("late", p.max_len, via_dali)))
    monkeypatch.setattr(warmup, "fat_job", lambda fat, p, **k: seen.append(("fat", p.max_len)))
    monkeypatch.setattr(warmup, "warm_up_jobs", lambda store, thin, fat, projections, **k:
                        seen.append(("jobs", [p.max_len for p in projections])))
    return seen


def test_warm_cache_says_nothing_and_compiles_nothing(monkeypatch, calls, capsys):
    monkeypatch.setattr(warmup, "cache_is_cold", lambda key: False)
    assert warmup.warm_up(WorkloadConfig()) is None
    assert calls == [] and capsys.readouterr() == ("", "")


def test_cold_cache_compiles_every_tenant_once_visibly(monkeypatch, calls, capsys):
    monkeypatch.setattr(warmup, "cache_is_cold", lambda key: True)
    cfg = WorkloadConfig()
    took = warmup.warm_up(cfg)
    assert took is not None and took >= 0
    assert calls[0] == ("build", warmup.tiny(cfg).users, cfg.tenants)  # the same tenants, a few users
    assert calls[1] == ("dali",)
    assert calls[2:-1] == [c for t in cfg.tenants for c in (("jobs", [t.max_len]), ("late", t.max_len, True),
                                                              ("late", t.max_len, False), ("fat", t.max_len))]
    assert calls[-1] == ("marked", repr(cfg.tenants))  # after everything compiled, not before
    out, err = capsys.readouterr()
    assert out.startswith("compiling kernels, first run only") and "kernels compiled in" in out
    assert "compiling kernels:" in err and "6/6" in err  # the progress bar, to its end
