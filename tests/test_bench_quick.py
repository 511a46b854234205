"""`uih bench --quick` runs end to end in CI: complete JSON, positive measured reductions, a report, and
amplification under a threshold per tenant and per day."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, "-m", "uih", "bench", "--quick", "--out", str(out),
                           "--no-progress"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "bench_quick.json").read_text())


def test_json_is_complete(quick):
    out, R = quick
    for section in ("writes", "reads", "stages", "pushdown", "peers", "pipeline", "scaling"):
        assert section in R and (out / f"{section}_quick.json").exists()
    assert R["machine"]["cores"] >= 1 and R["config"]["users"] > 0
    tenants = {t["name"] for t in R["tenants"]}
    assert {r["tenant"] for r in R["reads"]["tenants"]} == tenants and len(tenants) >= 3
    for r in R["reads"]["tenants"]:
        for k in ("late", "late_dali", "fat"):
            assert r[k]["examples"] > 0 and r[k]["seconds"] > 0
        assert r["floor"]["bytes"] > 0
    assert len(R["scaling"]["rows"]) >= 2 and all(r["assembly_gbps"] > 0 for r in R["scaling"]["rows"])
    assert [r["batch"] for r in R["scaling"]["batch_rows"]] == [32, 128]  # the batch sweep at the shortest rows
    assert {r["tenant"] for r in R["stages"]["tenants"]} == tenants
    for r in R["stages"]["tenants"]:  # every stage measured, and the passes saw the same rows as the jobs
        assert r["examples"] == R["reads"]["tenants"][0]["late"]["examples"] and r["events"] > 0
        assert r["staging_s"] > 0 and r["assembly_s"] >= 0 and r["slicing_s"] > 0 and r["thin_s"] > 0
    assert "## Where the time goes, per tenant" in (out / "REPORT.md").read_text()
    pf = R["pipeline"]["prefetch"]  # prefetch on and off measured on every tenant, in pairs
    assert {r["tenant"] for r in pf} == tenants
    assert all(r["on_s"] > 0 and r["off_s"] > 0 and len(r["pair_ratios"]) >= 5 for r in pf)
    assert R["peers"]["duckdb_equal"] is True
    low = R["peers"]["low_dup"]  # the low-duplication job: ours and the Fat Row loader, round by round
    assert len(low["ours"]["each"]) == len(low["fat"]["each"]) >= 7
    assert low["ours"]["examples"] == low["fat"]["examples"] == low["examples"] > low["config"]["users"]
    assert low["ours"]["slowest_over_median"] >= 1 and low["speedup_pairs"]["min"] > 0
    assert "### The low-duplication job" in (out / "REPORT.md").read_text()
    assert (out / "REPORT.md").read_text().startswith("# UIH late materialization")
    # labels are measured: here (no GPU, or the simulator switch) both the reconstructor and DALI ran on CPU
    ran = {(r["late_dali"]["device"], r["late_dali"]["dali_device"]) for r in R["reads"]["tenants"]}
    assert ran == {("cpu", "cpu")}
    assert "reconstructor on cpu, DALI pipeline on cpu" in (out / "REPORT.md").read_text()
    assert all((out / f).exists() for f in ("write_per_day.png", "read_per_tenant.png", "scaling.png", "peers.png"))


def test_measured_reductions_are_positive(quick):
    _, R = quick
    w = R["writes"]
    assert all(v > 0 for v in w["reduction_vs_fat"].values())
    for r in R["reads"]["tenants"]:
        assert r["reduction_vs_fat"] > 0, r["tenant"]
        assert r["late"]["read_bytes"] > 0 and r["fat"]["read_bytes"] > r["late"]["read_bytes"]


def test_pushdown_never_reads_more_than_without_it(quick):
    _, R = quick
    for r in R["pushdown"]["tenants"]:
        on = r["all on"]["read_bytes"]
        assert all(r[k]["read_bytes"] >= on * 0.95 for k in r if k.endswith(" off")), r


# Regression guards on the small workload (not timed): amplification against the floor, OS-counted.
# The quick run's files are small, so OS readahead of the thin-row files weighs more than at full size.
READ_AMP_MAX = 2.0
WRITE_AMP_MAX = 1.25


def test_amplification_stays_under_its_threshold(quick):
    _, R = quick
    for r in R["reads"]["tenants"]:
        assert r["late_vs_floor"] <= READ_AMP_MAX, (r["tenant"], r["late_vs_floor"])
        causes = r["causes"]
        assert sum(causes.values()) == r["late"]["read_bytes"]  # the causes account for every byte
        assert causes["needed"] > 0 and causes["thin"] >= 0.9 * r["floor"]["thin_bytes"]
    for d in R["writes"]["per_day"]:
        assert d["late"] <= WRITE_AMP_MAX * d["floor"], d
        assert d["log"] <= 0.2 * d["floor"] and d["segments"] >= 1 and 0 < d["sidecars"] < d["seal"]


def test_median_times_runs_as_many_calls_as_the_budget_allows():
    """``uih.fmt.median_times``: at least ``repeat`` timed calls, more (up to 100) where they fit the budget,
    judged by the untimed calls, warm-up time included or not."""
    import time

    from uih.fmt import median_times
    calls = []

    def f():
        calls.append(1)
        time.sleep(0.001)

    for kwargs in ({}, {"warm_s": 0.05}, {"warmup": 0, "warm_s": 0.05}):
        calls.clear()
        (t,) = median_times([f], repeat=5, budget=1.0, rounds=5, **kwargs)
        untimed = len(calls) - 100
        assert untimed >= 0 and t >= 0.001  # 100 timed calls fit 1 s of 1 ms calls
    calls.clear()
    median_times([f, f], repeat=5, rounds=3)  # no budget: at least 5 timed calls each
    assert len(calls) >= 2 * (5 + 3)


def test_median_jobs_lets_each_compared_job_follow_the_disturbing_one_equally_often():
    from uih.report import median_jobs
    order = []

    def job(name):
        return lambda: order.append(name) or {"seconds": float(len(order)), "read_bytes": 1}

    median_jobs([job("dali"), job("direct"), job("fat")], 3, first=2)
    after_fat = [order[i + 1] for i in range(len(order) - 1) if order[i] == "fat"]
    assert order.count("fat") == 4 and sorted(after_fat) == ["dali", "dali", "direct", "direct"]
    order.clear()
    median_jobs([job("a"), job("b"), job("c")], 3)  # plain rotation: each job first once
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    for first, n in ((-1, 3), (3, 3), (0, 1)):
        with pytest.raises(ValueError, match="first"):
            median_jobs([job("a")] * n, 3, first=first)


def test_pair_ratio_divides_within_each_repetition():
    """Each run's time is kept in repetition order, and a pair's ratio is taken within its repetition:
    here the ratio of the medians (2.5 / 3 = 0.83) says a is faster, the pairs (0.5, 2, 0.1, 10) do not."""
    from uih.report import median_jobs, pair_ratio
    order = []

    def job(name):
        return lambda: order.append(name) or {"seconds": float(len(order)), "read_bytes": 1}

    a, b = median_jobs([job("a"), job("b")], 4)  # a, b | b, a | a, b | b, a
    assert a["each"] == [1.0, 4.0, 5.0, 8.0] and b["each"] == [2.0, 3.0, 6.0, 7.0]
    m, lo, hi = pair_ratio({"each": [1, 2, 3, 40]}, {"each": [2, 1, 30, 4]})
    assert (m, lo, hi) == (pytest.approx(1.25), pytest.approx(0.1), pytest.approx(10))
    with pytest.raises(ValueError):  # runs of two calls never pair up silently
        pair_ratio({"each": [1, 2]}, {"each": [1]})
