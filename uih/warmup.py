"""Compile every Numba function ``uih demo`` and ``uih bench`` use, once and visibly, before anything is
measured: a tiny run of the same workload shape (same columns, same tenants' projections) through the
store, the thin and fat rows, and each loader. Numba keeps the compiled code on disk, so later runs load
it in a second or two and this says nothing."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

from kernels._warmup import cache_is_cold, mark_warm

from .jobs import fat_job, file_list, late_job, warm_up_dali, warm_up_jobs
from .replay import build
from .workload import WorkloadConfig


def tiny(cfg: WorkloadConfig) -> WorkloadConfig:
    """``cfg``'s shape at a few users and events: two days, so a compaction runs too."""
    return dataclasses.replace(cfg, users=12, days=2, median_history=40, max_history=400, slices_per_day=2)


def warm_up(cfg: WorkloadConfig, progress: bool = True, force: bool = False) -> float | None:
    """Compile what ``cfg``'s runs need where Numba's disk cache lacks it; returns the seconds it took,
    or None where the cache was warm (nothing printed then). ``force``: run it even so."""
    key = repr(cfg.tenants)  # the columns and projections decide which signatures are compiled
    if not (force or cache_is_cold(key)):
        return None
    t = time.perf_counter()
    small = tiny(cfg)
    print("compiling kernels, first run only (Numba caches them on disk for later runs)", flush=True)
    steps = ["store, thin and fat rows", "DALI and torch"] + [f"reconstruct {x.name}" for x in small.tenants]
    with tempfile.TemporaryDirectory(prefix="uih-warmup-") as d, \
            tqdm(total=len(steps), desc="compiling kernels", unit="step", disable=not progress) as bar:
        bar.set_postfix_str(steps[0])
        build(Path(d) / "w", small, progress=False)
        bar.update()
        bar.set_postfix_str(steps[1])
        warm_up_dali()
        bar.update()
        for step, tenant in zip(steps[2:], small.tenants):
            bar.set_postfix_str(step)
            out = Path(d) / "w"
            p, thin = tenant.projection(), file_list(out / "thin")
            warm_up_jobs(out / "store", thin, file_list(out / "fat"), [p], batch_size=8, rows=16)
            # and the measured jobs themselves, on the tiny data: their thin rows come from whole files
            # (read-only arrays where the warm-up's slices are writable: another signature per function)
            for via_dali in (True, False):
                late_job(out / "store", thin, p, batch_size=8, via_dali=via_dali)
            fat_job(file_list(out / "fat"), p, batch_size=8)
            bar.update()
    mark_warm(key)
    took = time.perf_counter() - t
    print(f"kernels compiled in {took:.0f} s", flush=True)
    return took


def main() -> int:
    """``python -m uih.warmup``: compile the demo's and the bench's kernels now (``make install`` runs it, so
    that the first ``uih demo`` measures what it prints, not the compiler)."""
    took = warm_up(WorkloadConfig())
    print("kernels ready" if took is None else f"kernels ready ({took:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
