"""bench/bench_order.py and bench/train_order_ne.py run end to end on tiny sizes (their JSON complete, its
values sane; nothing timed is asserted), and the Fat Row loader's window shuffle they compare against."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import engine
from uih.fatrows import fat_batches

ROOT = Path(__file__).resolve().parent.parent
TENANTS = {"ranking", "retrieval", "purchase", "longseq"}


def _script(name: str, out: Path, *args) -> str:
    """Runs a script's quick mode into ``out``; it writes nothing into the checkout's bench/results."""
    results = ROOT / "bench" / "results"
    before = {f: f.stat().st_mtime_ns for f in results.iterdir()}
    proc = subprocess.run([sys.executable, f"bench/{name}.py", "--quick", "--out", str(out), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})  # the scripts import this checkout's code
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {f: f.stat().st_mtime_ns for f in results.iterdir()} == before
    return proc.stdout


def test_bench_order_quick(tmp_path):
    stdout = _script("bench_order", tmp_path, "--users", "24", "--days", "1", "--requests", "3",
                     "--median-history", "60")
    R = json.loads((tmp_path / "order_quick.json").read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["order_quick.json"]  # its data folder is gone
    assert R["machine"]["cpu"] and R["machine"]["cores"] >= 1 and "Fat Row" in R["baselines"]
    assert {r["tenant"] for r in R["tenants"]} == TENANTS and R["window"] == engine.training._order.DEFAULT_WINDOW
    for r in R["tenants"]:
        n = r["thin_rows"]
        assert n > 0 and r["thin_column_bytes"] > 0
        for k in ("stream", "shuffle", "permutation", "fat_shuffle"):
            run = r["runs"][k]
            # every order is one whole epoch: each example once (interleaved rounds: at least 3 runs each)
            assert run["examples"] == n and run["runs"] >= 3 and len(run["each"]) == run["runs"]
            assert run["seconds"] > 0 and run["examples_per_s"] > 0 and run["read_bytes"] >= 0
            if k != "fat_shuffle":
                assert 0 < run["groups_decoded"] <= run["groups_used"] and run["events_read"] > 0
                assert 0 < run["first_batch_s"] <= run["seconds"] and run["thin_s"] > 0
        assert r["runs"]["fat_shuffle"]["column_bytes"] > 0
        for s in r["ratios"].values():
            assert 0 < s["min"] <= s["median"] <= s["max"] and len(s["each"]) >= 3
        assert set(r["goals"]) == {"shuffle_vs_stream_0.8", "shuffle_vs_fat_2x"}
    assert "shuffle / stream" in stdout and "fat shuffle read" in stdout


def test_train_order_ne_quick(tmp_path):
    stdout = _script("train_order_ne", tmp_path, "--users", "40", "--history", "120", "--seeds", "2")
    R = json.loads((tmp_path / "order_ne_quick.json").read_text())
    assert R["machine"]["cores"] >= 1 and R["train_rows"] > 0 and R["test_rows"] > 0
    assert sorted((r["order"], r["seed"]) for r in R["runs"]) == sorted(
        (o, s) for o in ("stream", "permutation", "shuffle") for s in range(2))
    for r in R["runs"]:
        assert 0 < r["ne"] < 2 and r["steps"] == -(-R["train_rows"] // R["params"]["batch"])
    s = R["summary"]
    for o in ("stream", "permutation", "shuffle"):
        assert s[o]["min"] <= s[o]["median"] <= s[o]["max"] and len(s[o]["ne"]) == 2
    assert isinstance(s["goal_shuffle_within_permutation_spread"], bool) and "held-out NE" in stdout


# ---- the Fat Row loader's window shuffle -----------------------------------------------------------------
GROUP = 10


@pytest.fixture
def fat_file(tmp_path):
    """Fat rows in 6 row groups of 10: row ``i``'s item_id list is ``[i, i, i]``."""
    path = tmp_path / "fat.parquet"
    n = 6 * GROUP
    t = pa.table({"item_id": pa.array([[i] * 3 for i in range(n)], pa.list_(pa.int64())),
                  "request_ts": np.full(n, 10**6, np.int64)})
    pq.write_table(t, path, row_group_size=GROUP)
    return path


def _ids(batches) -> list:
    return [int(i) for b in batches for i in b["item_id"][:, 0]]


def test_fat_batches_window_shuffle(fat_file):
    p = engine.Projection(["item_id"], max_len=4)
    assert _ids(fat_batches([fat_file], p, 8)) == list(range(60))  # default: file order, as before
    got = _ids(fat_batches([fat_file], p, 8, shuffle_window=2 * GROUP, seed=1))
    assert sorted(got) == list(range(60)) and got != list(range(60))  # each row once, in another order
    assert got == _ids(fat_batches([fat_file], p, 8, shuffle_window=2 * GROUP, seed=1))
    assert got != _ids(fat_batches([fat_file], p, 8, shuffle_window=2 * GROUP, seed=2))
    for w in range(0, 60, 2 * GROUP):  # each window: two whole row groups, their rows permuted
        groups, counts = np.unique(np.array(got[w:w + 2 * GROUP]) // GROUP, return_counts=True)
        assert len(groups) == 2 and set(counts) == {GROUP}
    assert [len(b["lengths"]) for b in fat_batches([fat_file], p, 8, shuffle_window=25)] == [8] * 7 + [4]
    whole = _ids(fat_batches([fat_file], p, 7, shuffle_window=60, seed=3))  # a window of the epoch
    assert sorted(whole) == list(range(60)) and len({i // GROUP for i in whole[:GROUP]}) > 2
    with pytest.raises(ValueError, match="shuffle_window"):
        next(fat_batches([fat_file], p, 8, shuffle_window=0))
