"""What UIHIterator hands out stays the caller's: held batches never change, fed memory is released in
time, epochs start only when asked for, and the padding is placed where it is cheapest."""

import numpy as np
import pyarrow as pa
import pytest

import engine
from dali_plugin import UIHIterator, uih_pipeline
from dali_plugin._jagged import MIN_ROW_BYTES, dali_can_pad, long_rows
from uih.workload import COLUMNS
from uih.workload import random_events as make_events

MODES = pytest.mark.parametrize("padding", ["assembled", "after_dali", "dali_slice"],
                                ids=["engine-pads", "pads-after", "dali-pads"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    rng = np.random.default_rng(11)
    store = engine.UIHStore.create(tmp_path_factory.mktemp("handoff") / "s", columns=COLUMNS)
    store.append(make_events(rng, range(40), 6000))
    store.seal(700_000)
    store.append(make_events(rng, range(40), 300, t0=2_000_000))
    thin = store.snapshot({"user_id": rng.integers(0, 45, 203), "request_ts": np.full(203, 3_000_000)})
    yield store, thin
    store.close()


def reference(rec, thin, batch_size):
    return [{k: np.array(v) for k, v in b.items()} for b in rec.iter_batches(thin, batch_size)]


@MODES
def test_held_batches_never_change_while_iterating_on(setup, padding):
    """Keep every tensor of two epochs (and a reset in between) alive, then compare: DALI and the engine
    recycle buffers all along, so a batch handed out without a copy must not be among them."""
    store, thin = setup
    proj = engine.Projection(["item_id", "ts", "action"], max_len=64, align="right", pad_value=-1)
    rec = engine.Reconstructor(store, proj, device="cpu", chunk_batches=2)
    want = reference(rec, thin, 16)
    it = UIHIterator(uih_pipeline(rec, thin, batch_size=16, padding=padding))
    held = [next(it) for _ in range(5)]  # part of an epoch,
    it.reset()  # dropped early,
    held += [b for _ in range(2) for b in it]  # then two whole epochs
    assert len(held) == 5 + 2 * len(want)
    for got, exp in zip(held, want[:5] + want + want):
        assert set(got) == set(exp)
        for k, v in exp.items():
            np.testing.assert_array_equal(got[k].numpy(), v)


@MODES
def test_fed_batches_are_released_once_their_outputs_are_out(setup, padding):
    store, thin = setup
    rec = engine.Reconstructor(store, engine.Projection(["item_id"], max_len=32), device="cpu")
    pipe = uih_pipeline(rec, thin, batch_size=20, padding=padding, prefetch_queue_depth=2)
    src = pipe.source
    it = UIHIterator(pipe)
    for _ in range(4):
        next(it)
        assert len(src._fed) <= (2 if src.no_copy else 0)  # only what DALI has not run yet
    it.reset()
    assert len(src._fed) == len(src._layouts) == 0
    for _ in it:
        pass
    assert len(src._fed) == len(src._layouts) == 0


@pytest.mark.parametrize("workers", [0, 1])
def test_a_padded_batch_crosses_dali_as_one_packed_input(setup, workers):
    """One DALI input of one sample per batch (``Batch.packed``), whatever the columns and extras: DALI's
    costs are per input and per sample. The batch's layout reaches the iterator with that iteration."""
    store, thin = setup
    thin = thin.append_column("example_id", pa.array(np.arange(len(thin)) * 3))
    proj = engine.Projection(["item_id", "dwell_ms", "ts"], max_len=48, pad_value=-3)
    rec = engine.Reconstructor(store, proj, device="cpu")
    want = [{k: np.array(v) for k, v in b.items()} for b in rec.iter_batches(thin, 32, extra_columns=["example_id"])]
    pipe = uih_pipeline(rec, thin, batch_size=32, workers=workers, extra_columns=["example_id"], padding="assembled",
                        assembly="engine")
    assert pipe.source.num_inputs == 1 and pipe.dali.max_batch_size == 1 and pipe.batch_size == 32
    it = UIHIterator(pipe)
    try:
        got = list(it)
    finally:
        it.close()
    assert len(got) == len(want)  # in order in process, round-robin from workers: matched by first id
    by_first = {int(w["example_id"][0]): w for w in want}
    for g in got:
        exp = by_first[int(g["example_id"][0])]
        assert list(g) == list(exp)
        for k, v in exp.items():
            np.testing.assert_array_equal(g[k].numpy(), v)


def test_the_next_epoch_starts_only_when_asked_for(setup):
    store, thin = setup
    rec = engine.Reconstructor(store, engine.Projection(["item_id"], max_len=32), device="cpu")
    pipe = uih_pipeline(rec, thin, batch_size=50)
    it = UIHIterator(pipe)
    n = sum(len(b["lengths"]) for b in it)
    assert n == len(thin) and pipe.source._epoch == 1  # nothing of epoch 2 was read or assembled
    assert sum(len(b["lengths"]) for b in it) == n and pipe.source._epoch == 2
    it.reset()  # between epochs: nothing to drop
    assert pipe.source._epoch == 2


def test_long_rows_cross_dali_unpadded_and_dali_pads_only_exact_values(setup):
    store, thin = setup
    rec = lambda *a, **k: engine.Reconstructor(store, engine.Projection(*a, **k), device="cpu")  # noqa: E731
    long = MIN_ROW_BYTES // 8  # item_id is int64
    assert not long_rows(rec(["item_id"], max_len=long // 2)) and long_rows(rec(["item_id"], max_len=long))
    # "auto", where the engine writes the batches (assembled in DALI, rows are padded there, by the kernels)
    old = {"assembly": "engine"}
    assert uih_pipeline(rec(["item_id"], max_len=long), thin, batch_size=8, **old).options.padding == "after_dali"
    assert uih_pipeline(rec(["item_id"], max_len=long // 2), thin, batch_size=8, **old).options.padding == "assembled"
    assert uih_pipeline(rec(["item_id"], max_len=long), thin, batch_size=8).options.padding == "assembled"
    assert dali_can_pad(rec(["item_id"], max_len=8, pad_value=-(2**24)))
    # DALI's fill value is a float32: a pad it cannot carry exactly is refused, "after" carries it
    inexact = rec(["item_id"], max_len=8, pad_value=2**24 + 1)
    assert not dali_can_pad(inexact)
    with pytest.raises(engine.InvalidArgument, match="float32"):
        uih_pipeline(inexact, thin, batch_size=8, padding="dali_slice")
    got = next(iter(UIHIterator(uih_pipeline(inexact, thin, batch_size=8, padding="after_dali"))))
    assert np.array_equal(got["item_id"].numpy(), inexact.reconstruct(thin.slice(0, 8))["item_id"])
    with pytest.raises(engine.InvalidArgument, match="in-process CPU pipeline"):
        uih_pipeline(rec(["item_id"], max_len=8), thin, batch_size=8, workers=1, padding="after_dali")
    with pytest.raises(engine.InvalidArgument, match="'after_dali'"):
        uih_pipeline(rec(["item_id"], max_len=8), thin, batch_size=8, padding="later")


def test_long_rows_padded_after_dali_equal_iter_batches(setup):
    """The auto choice on rows long enough to cross DALI unpadded (mostly padding, like longseq)."""
    store, thin = setup
    proj = engine.Projection(["item_id", "action"], max_len=MIN_ROW_BYTES // 12 + 1, pad_value=7)
    rec = engine.Reconstructor(store, proj, device="cpu")
    pipe = uih_pipeline(rec, thin, batch_size=64, assembly="engine")
    assert pipe.options.padding == "after_dali" and pipe.rec is rec  # padded after DALI by rec,
    assert pipe.source.feeder.projection.layout == "jagged"  # fed unpadded
    got = [b for b in UIHIterator(pipe)]
    want = rec.reconstruct(thin)
    for k in ("item_id", "action", "lengths"):
        assert np.array_equal(np.concatenate([g[k].numpy() for g in got]), want[k])
    assert rec.stats["events_read"] > 0  # the job's reads count on the caller's reconstructor


def test_a_layout_out_of_step_with_dalis_iterations_is_an_error(setup, monkeypatch):
    """The layouts travel beside DALI, in feeding order; one that does not fit its output is refused
    rather than cutting the wrong bytes (jagged batches differ in size from batch to batch)."""
    from dali_plugin._source import EpochSource
    store, thin = setup
    rec = engine.Reconstructor(store, engine.Projection(["item_id", "ts"], max_len=64, layout="jagged"), device="cpu")
    real = EpochSource.consumed

    def skewed(self):
        layout = list(real(self))
        name, dt, shape, off = layout[-1]  # the last array: its end is the buffer's
        layout[-1] = (name, dt, (shape[0] + 100,), off)  # as if the batch were another's
        return layout

    monkeypatch.setattr(EpochSource, "consumed", skewed)
    with pytest.raises(engine.UIHError, match="out of step"):
        next(iter(UIHIterator(uih_pipeline(rec, thin, batch_size=16))))
