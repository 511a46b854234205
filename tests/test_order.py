"""Training order (docs/training-order.md): shuffle, determinism, shares, exact and elastic resume."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import engine
from engine.training import _order

DAY = 86_400_000_000
PROJ = engine.Projection(["item_id", "action", "ts"], max_len=24)


@pytest.fixture
def rec(logged):
    with engine.UIHStore.open(logged / "store", read_only=True) as store:
        yield engine.Reconstructor(store, PROJ, device="cpu")


def _rows(batches) -> dict:
    """example_id -> (item_id row, action row, ts row, length) over batches."""
    out = {}
    for b in batches:
        for i, e in enumerate(b["example_id"]):
            assert int(e) not in out, f"example {e} yielded twice"
            out[int(e)] = (b["item_id"][i].tobytes(), b["action"][i].tobytes(), b["ts"][i].tobytes(),
                           int(b["lengths"][i]))
    return out


def _ids(batches) -> list:
    return [b["example_id"].copy() for b in batches]


def test_permutation_is_a_fixed_function_of_seed_and_epoch():
    n = 10 * _order.BLOCK_ROWS
    p = _order.Order("shuffle", seed=3, epoch=0, shuffle_window=2048).permutation(n)
    assert np.array_equal(np.sort(p), np.arange(n))
    assert np.array_equal(p, _order.Order("shuffle", seed=3, epoch=0, shuffle_window=2048).permutation(n))
    assert not np.array_equal(p, _order.Order("shuffle", seed=3, epoch=1, shuffle_window=2048).permutation(n))
    assert not np.array_equal(p, _order.Order("shuffle", seed=4, epoch=0, shuffle_window=2048).permutation(n))
    assert _order.Order("stream").permutation(n) is None
    # blocks of consecutive rows stay within one window (2 blocks a window here)
    for w in range(0, n, 2048):
        blocks = np.unique(p[w:w + 2048] // _order.BLOCK_ROWS)
        assert len(blocks) <= 2


def test_shuffle_has_no_trend_and_mixes_users():
    n, w = 200_000, 16_384
    p = _order.Order("shuffle", seed=0, epoch=2, shuffle_window=w).permutation(n)
    # no drift from the first batch to the last: input position is uncorrelated with epoch position
    assert abs(np.corrcoef(np.arange(n), p)[0, 1]) < 0.1
    first, last = p[: n // 10].mean(), p[-n // 10:].mean()
    assert abs(first - last) < 0.15 * n
    # users clustered in time (each 4 consecutive requests): adjacent examples share a user about as
    # often as in a random permutation of a window, far less than in the stream order
    user = np.arange(n) // 4
    same = float(np.mean(user[p][1:] == user[p][:-1]))
    random_rate = 3 / (w - 1)  # a window's random permutation: 3 of the other w - 1 rows are the same user's
    assert same < 2 * random_rate
    assert float(np.mean(user[1:] == user[:-1])) > 0.7


@pytest.mark.parametrize("window", [None, 500])
def test_shuffle_yields_each_example_once_bit_exact(rec, logged, window):
    src = logged / "thin.parquet"
    stream = _rows(rec.iter_batches(src, 128, extra_columns=["example_id"]))
    kw = dict(order="shuffle", seed=11, epoch=0, shuffle_window=window, extra_columns=["example_id"])
    a = list(rec.iter_batches(src, 128, **kw))
    assert all(b.size == 128 for b in a[:-1])
    got = _rows(a)
    assert got == stream  # every example once, each exactly as stream order reconstructs it
    order = np.concatenate(_ids(a))
    assert not np.array_equal(order, np.sort(order))
    again = np.concatenate(_ids(rec.iter_batches(src, 128, **kw)))
    assert np.array_equal(order, again)
    other = np.concatenate(_ids(rec.iter_batches(src, 128, **{**kw, "epoch": 1})))
    assert not np.array_equal(order, other) and np.array_equal(np.sort(other), np.sort(order))


def test_resume_yields_exactly_the_batches_left(rec, logged):
    src = logged / "thin.parquet"
    kw = dict(order="shuffle", seed=5, epoch=3, shuffle_window=700, extra_columns=["example_id"])
    full = list(rec.iter_batches(src, 100, **kw))
    it = rec.iter_batches(src, 100, **kw)
    head = [next(it) for _ in range(7)]
    state = json.loads(json.dumps(it.state_dict()))
    it.close()
    with engine.UIHStore.open(logged / "store", read_only=True) as store:
        rec2 = engine.Reconstructor(store, PROJ, device="cpu")
        rest = list(rec2.iter_batches(src, 100, resume=state, **kw))
    assert len(head) + len(rest) == len(full)
    for x, y in zip(head + rest, full):
        assert all(np.array_equal(x[k], y[k]) for k in y)


def test_stream_order_resumes_too(rec, logged):
    src = logged / "thin.parquet"
    full = _ids(rec.iter_batches(src, 256, extra_columns=["example_id"]))
    it = rec.iter_batches(src, 256, extra_columns=["example_id"])
    head = [next(it)["example_id"].copy() for _ in range(3)]
    rest = _ids(rec.iter_batches(src, 256, extra_columns=["example_id"], resume=it.state_dict()))
    assert [x.tolist() for x in head + rest] == [x.tolist() for x in full]


@pytest.mark.parametrize("before, after", [(1, 2), (2, 1), (2, 3)])
def test_elastic_resume_covers_the_rest_once(rec, logged, before, after):
    src = logged / "thin.parquet"
    kw = dict(order="shuffle", seed=1, epoch=0, shuffle_window=1000, extra_columns=["example_id"])
    everything = np.concatenate(_ids(rec.iter_batches(src, 64, **kw)))
    # `before` shares read in lockstep, 5 batches each, then stop; one's state is the checkpoint
    its = [rec.iter_batches(src, 64, share=(i, before), **kw) for i in range(before)]
    seen = [next(it)["example_id"].copy() for _ in range(5) for it in its]
    state = its[0].state_dict()
    for it in its:
        it.close()
    assert state["next_batch"] == 5 * before
    rest = [b["example_id"].copy() for i in range(after)
            for b in rec.iter_batches(src, 64, share=(i, after), resume=state, **kw)]
    got = np.concatenate(seen + rest)
    assert np.array_equal(np.sort(got), np.sort(everything))
    assert np.array_equal(np.sort(np.concatenate(seen)), np.sort(everything[: 5 * before * 64]))


def test_shares_are_disjoint_and_follow_the_global_order(rec, logged):
    src = logged / "thin.parquet"
    kw = dict(order="shuffle", seed=2, shuffle_window=None, extra_columns=["example_id"])
    glob = _ids(rec.iter_batches(src, 50, **kw))
    parts = [_ids(rec.iter_batches(src, 50, share=(i, 3), **kw)) for i in range(3)]
    for i in range(3):
        assert [x.tolist() for x in parts[i]] == [x.tolist() for x in glob[i::3]]


# bad order keywords and what their InvalidArgument names (the DALI tests feed the same ones to uih_pipeline)
BAD_ORDER = [
    (dict(order="random"), "order must be"),
    (dict(order="shuffle", seed=-1), "seed"),
    (dict(order="shuffle", seed=1.5), "seed"),
    (dict(order="shuffle", shuffle_window=0), "shuffle_window"),
    (dict(order="shuffle", epoch="1"), "epoch"),
]


@pytest.mark.parametrize("kwargs, match", [
    *BAD_ORDER,
    (dict(share=(2, 2)), "share index"),
    (dict(share=5), "share must be"),
    (dict(resume={"format": "x"}), "state_dict"),
])
def test_bad_order_arguments_are_invalid_argument(rec, logged, kwargs, match):
    with pytest.raises(engine.InvalidArgument, match=match):
        rec.iter_batches(logged / "thin.parquet", 64, **kwargs)


def test_resume_with_other_keywords_is_refused(rec, logged):
    src = logged / "thin.parquet"
    it = rec.iter_batches(src, 64, order="shuffle", seed=1)
    next(it)
    state = it.state_dict()
    it.close()
    with pytest.raises(engine.InvalidArgument, match="seed 1 there, 2 here"):
        rec.iter_batches(src, 64, order="shuffle", seed=2, resume=state)


_LOOP = textwrap.dedent("""
    import json, sys
    import engine
    store = engine.UIHStore.open(sys.argv[1], read_only=True)
    rec = engine.Reconstructor(store, engine.Projection(["item_id", "action", "ts"], max_len=24), device="cpu")
    it = rec.iter_batches(sys.argv[2], 100, order="shuffle", seed=9, epoch=1, extra_columns=["example_id"])
    for k, b in enumerate(it):
        with open(sys.argv[3], "a") as f:  # the training step: record what was trained on, then checkpoint
            f.write(json.dumps({"ids": b["example_id"].tolist(), "state": it.state_dict()}) + "\\n")
        if k == 9:
            print("ready", flush=True)
            input()  # killed here, mid-epoch
""")


def test_killed_training_loop_resumes_bit_exact(rec, logged, tmp_path):
    src, log = logged / "thin.parquet", tmp_path / "steps.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", _LOOP, str(logged / "store"), str(src), str(log)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    steps = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(steps) == 10
    kw = dict(order="shuffle", seed=9, epoch=1, extra_columns=["example_id"])
    full = list(rec.iter_batches(src, 100, **kw))
    rest = list(rec.iter_batches(src, 100, resume=steps[-1]["state"], **kw))
    assert [s["ids"] for s in steps] == [b["example_id"].tolist() for b in full[:10]]
    assert len(rest) == len(full) - 10
    for x, y in zip(rest, full[10:]):
        assert all(np.array_equal(x[k], y[k]) for k in y)
