"""The low-duplication job (``uih.lowdup``): its store is built as the issue describes it, and its table in
REPORT.md is rebuilt from the JSON alone."""

import json
import shutil
from pathlib import Path

import pytest

from uih import lowdup, report

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def test_spread_reports_median_range_and_slowest_over_median():
    assert lowdup.spread([1.0, 3.0, 2.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "slowest_over_median": 1.5}


def test_build_appends_seals_and_compacts_with_every_user_requested(tmp_path):
    cfg = lowdup.LowDupConfig(users=12, examples=30, median_history=40, max_history=200, max_len=16, chunks=4,
                              compact_every=2)
    b = lowdup.build(tmp_path, cfg)
    import pyarrow.parquet as pq

    import engine
    thin = pq.read_table(b["thin"])
    assert thin.num_rows == b["examples"] == 30 and len(set(thin["user_id"].to_pylist())) == 12
    with engine.UIHStore.open(b["store"], read_only=True) as store:
        # 4 seals, compacted twice: fewer segments than seals, every event sealed
        assert 1 <= len(store.segments) < 4 and store.stats()["sealed_events"] == b["events"]
    assert pq.read_metadata(b["fat"]).num_rows == 30


def test_low_dup_table_is_rebuilt_from_results(tmp_path):
    shutil.copy(RESULTS / "bench.json", tmp_path / "bench.json")
    R = json.loads((tmp_path / "bench.json").read_text())
    cfg = lowdup.LowDupConfig()
    ours, fat = [0.30, 0.28, 0.29, 0.41, 0.27, 0.28, 0.30], [0.6, 0.58, 0.57, 0.59, 0.61, 0.6, 0.62]
    R["peers"]["low_dup"] = {
        "config": {**cfg.__dict__, "columns": list(cfg.columns)}, "segments": 9, "events": 6_000_000,
        "examples": 4096, "files": {"store": 2e8, "thin": 3e4, "fat": 9e7},
        "ours": {"each": ours, "read_bytes": 3.6e7, "examples": 4096, **lowdup.spread(ours)},
        "fat": {"each": fat, "read_bytes": 6.1e7, "examples": 4096, **lowdup.spread(fat)},
        "speedup_pairs": lowdup.spread([f / o for o, f in zip(ours, fat)])}
    (tmp_path / "bench.json").write_text(json.dumps(R))
    text = report.from_results(tmp_path)
    section = text.split("### The low-duplication job")[1].split("\n## ")[0]
    assert "4,096 examples over 1,500 users" in section and "7 interleaved rounds" in section
    assert "0.290 s" in section and "0.270-0.410 s" in section and "1.41" in section  # ours: median, range, 0.41/0.29
    assert f"median {R['peers']['low_dup']['speedup_pairs']['median']:.2f}x" in section


@pytest.mark.parametrize("mode", ["quick", "medium", "full"])
def test_every_bench_mode_runs_the_low_dup_job(mode):
    size = report.SIZES[mode]["low_dup"]
    assert size.rounds >= 7 and size.compact_every < size.chunks


def test_a_run_of_the_job_alone_takes_the_bench_runs_place(tmp_path):
    """``python -m uih.lowdup`` writes lowdup.json beside bench.json: REPORT.md shows its figures, not the
    bench run's older ones."""
    shutil.copy(RESULTS / "bench.json", tmp_path / "bench.json")
    cfg = lowdup.LowDupConfig()
    ours, fat = [0.25, 0.26, 0.27, 0.25, 0.26, 0.25, 0.26], [0.6, 0.61, 0.62, 0.6, 0.6, 0.61, 0.63]
    alone = {"config": {**cfg.__dict__, "columns": list(cfg.columns)}, "segments": 12, "events": 6_186_221,
             "examples": 4096, "files": {"store": 1.76e8, "thin": 3.2e4, "fat": 9.2e7},
             "ours": {"each": ours, "read_bytes": 3.67e7, "examples": 4096, **lowdup.spread(ours)},
             "fat": {"each": fat, "read_bytes": 6.16e7, "examples": 4096, **lowdup.spread(fat)},
             "speedup_pairs": lowdup.spread([f / o for o, f in zip(ours, fat)])}
    (tmp_path / report.LOW_DUP).write_text(json.dumps(alone))
    section = report.from_results(tmp_path).split("### The low-duplication job")[1].split("\n## ")[0]
    assert "6,186,221 events" in section and "0.250-0.270 s" in section
