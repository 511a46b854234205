"""Batches assembled inside DALI (``dali_plugin._assemble_op``): the engine's kernels as a DALI operator
writing DALI's own outputs. Every batch equals ``iter_batches``' and the old path's (engine writes, DALI
copies), whatever the projection, batch size, grouping and extra columns."""

import numpy as np
import pytest

import engine
from dali_plugin import UIHIterator, uih_pipeline
from uih.workload import COLUMNS
from uih.workload import random_events as make_events

DAY = 1_000_000

TENANTS = {
    "plain": engine.Projection(["item_id", "action", "ts"], max_len=64),
    "right-pad": engine.Projection(["item_id", "dwell_ms"], max_len=40, align="right", pad_value=-7),
    "types": engine.Projection(["item_id", "surface", "dwell_ms"], max_len=12, actions=[3, 4]),
    "window": engine.Projection(["item_id"], max_len=30, actions=[1, 2, 3], window_us=900_000),
    "one-column": engine.Projection(["ts"], max_len=5),
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    rng = np.random.default_rng(11)
    store = engine.UIHStore.create(tmp_path_factory.mktemp("asm") / "s", columns=COLUMNS)
    ev = make_events(rng, range(30), 6000)
    ev["action"] = np.where(rng.random(6000) < 0.06, 3 + (rng.random(6000) < 0.3), ev["action"] % 3).astype(np.int32)
    store.append(ev)
    store.seal(700_000)
    store.append(make_events(rng, range(30), 2000, t0=800_000))
    store.seal(1_900_000)
    store.append(make_events(rng, range(30), 300, t0=2_000_000))  # logged tails
    n = 97
    thin = store.snapshot({"user_id": rng.integers(0, 34, n), "request_ts": np.full(n, 3_000_000)})
    import pyarrow as pa
    thin = (thin.append_column("label", pa.array(rng.random(n) < 0.5))
            .append_column("weight", pa.array(rng.random(n).astype(np.float32)))
            .append_column("rank", pa.array(np.arange(n, dtype=np.int64) * -3))
            .append_column("bucket", pa.array(rng.integers(0, 9, n).astype(np.int32))))
    yield store, thin
    store.close()


def batches(rec, thin, batch_size, extra=(), **options):
    pipe = uih_pipeline(rec, thin, batch_size=batch_size, device_id=None, extra_columns=extra, **options)
    it = UIHIterator(pipe)
    try:
        return pipe, [{k: v.numpy() for k, v in b.items()} for b in it]
    finally:
        it.close()


def check_equal(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert list(g) == list(w)
        for k in w:
            assert g[k].dtype == w[k].dtype, k
            np.testing.assert_array_equal(g[k], w[k], err_msg=k)


@pytest.mark.parametrize("tenant", TENANTS)
@pytest.mark.parametrize("batch_size", [1, 7, 32, 97, 200])
def test_assembled_in_dali_equals_iter_batches(setup, tenant, batch_size):
    store, thin = setup
    rec = engine.Reconstructor(store, TENANTS[tenant], device="cpu", chunk_batches=3)
    want = [dict(b) for b in rec.iter_batches(thin, batch_size)]
    pipe, got = batches(rec, thin, batch_size, assembly="dali_operator")
    assert pipe.options.assembly == "dali_operator"
    check_equal(got, want)


@pytest.mark.parametrize("group", ["auto", 1, 3])
@pytest.mark.parametrize("num_threads", [1, 2, 3])
def test_extras_groups_and_shares(setup, group, num_threads):
    store, thin = setup
    extra = ["label", "rank", "weight", "bucket"]
    rec = engine.Reconstructor(store, TENANTS["types"], device="cpu", chunk_batches=2)
    want = [dict(b) for b in rec.iter_batches(thin, 10, extra_columns=extra)]
    pipe, got = batches(rec, thin, 10, extra, batches_per_iteration=group, num_threads=num_threads)
    assert pipe.options.assembly == "dali_operator"
    check_equal(got, want)
    _, old = batches(rec, thin, 10, extra, batches_per_iteration=group, assembly="engine")
    check_equal(old, want)


@pytest.mark.parametrize("group", ["auto", 1, 4])
def test_one_row_iterations_with_extras_of_mixed_widths(setup, group):
    # a one-row iteration (batch_size 1: every iteration with group 1, the first with a ramp) carries
    # extras of 8 + 4 + 1 bytes a row; each column must still be read as its own dtype
    store, thin = setup
    extra = ["rank", "weight", "label"]
    rec = engine.Reconstructor(store, TENANTS["plain"], device="cpu", chunk_batches=3)
    want = [dict(b) for b in rec.iter_batches(thin, 1, extra_columns=extra)]
    pipe, got = batches(rec, thin, 1, extra, batches_per_iteration=group)
    assert pipe.options.assembly == "dali_operator"
    check_equal(got, want)


def test_two_epochs_and_reset(setup):
    store, thin = setup
    rec = engine.Reconstructor(store, TENANTS["plain"], device="cpu")
    want = [dict(b) for b in rec.iter_batches(thin, 16)]
    it = UIHIterator(uih_pipeline(rec, thin, batch_size=16, device_id=None))
    next(it)
    it.reset()
    for _ in range(2):
        check_equal([{k: v.numpy() for k, v in b.items()} for b in it], want)
    it.close()


def test_auto_choice_and_errors(setup, tmp_path):
    store, thin = setup
    rec = engine.Reconstructor(store, TENANTS["plain"], device="cpu")
    def assembly(**options):
        return uih_pipeline(rec, thin, batch_size=8, device_id=None, **options).options.assembly

    assert assembly() == "dali_operator"
    assert assembly(assembly="engine") == "engine"
    assert assembly(padding="after_dali") == "engine"
    with pytest.raises(engine.InvalidArgument, match="assembly must be"):
        uih_pipeline(rec, thin, batch_size=8, device_id=None, assembly="yes")
    with pytest.raises(engine.InvalidArgument, match="in-process CPU pipeline"):
        uih_pipeline(rec, thin, batch_size=8, device_id=None, workers=1, assembly="dali_operator")
    with pytest.raises(engine.InvalidArgument, match="padding"):
        uih_pipeline(rec, thin, batch_size=8, device_id=None, padding="dali_slice", assembly="dali_operator")
    jag = engine.Reconstructor(store, engine.Projection(["item_id"], max_len=8, layout="jagged"), device="cpu")
    with pytest.raises(engine.InvalidArgument, match="in-process CPU pipeline"):
        uih_pipeline(jag, thin, batch_size=8, device_id=None, assembly="dali_operator")
    with pytest.raises(engine.InvalidArgument, match="padded projection"):
        next(jag.iter_unassembled(thin, 8))
    wide = engine.Reconstructor(store, engine.Projection(["item_id", "action", "ts", "surface", "dwell_ms"],
                                                         max_len=8), device="cpu")
    with pytest.raises(engine.InvalidArgument, match="at most 6 outputs"):
        uih_pipeline(wide, thin, batch_size=8, device_id=None, extra_columns=["label"], assembly="dali_operator")
    # too many outputs for the operator: auto falls back to the engine writing and DALI copying
    pipe, got = batches(wide, thin, 8, ["label"])
    assert pipe.options.assembly == "engine"
    check_equal(got, [dict(b) for b in wide.iter_batches(thin, 8, extra_columns=["label"])])


@pytest.mark.parametrize("tenant", ["plain", "window"])
def test_unassembled_assemble_equals_iter_batches(setup, tenant):
    store, thin = setup
    rec = engine.Reconstructor(store, TENANTS[tenant], device="cpu", chunk_batches=2)
    want = [dict(b) for b in rec.iter_batches(thin, 13, extra_columns=["label"])]
    got = [u.assemble() for u in rec.iter_unassembled(thin, 13, extra_columns=["label"])]
    check_equal(got, want)


def test_tiny_arena_with_dali_running_ahead(setup):
    # a tiny arena: every chunk evicts the previous one's row groups as soon as they are released, while
    # DALI runs iterations ahead of the consumer (the source holds each batch's chunk until consumed)
    store, thin = setup
    rec = engine.Reconstructor(store, TENANTS["plain"], device="cpu", chunk_batches=1, cache_bytes=1)
    want = [dict(b) for b in rec.iter_batches(thin, 5)]
    _, got = batches(rec, thin, 5, prefetch_queue_depth=3)
    check_equal(got, want)


def test_choosing_the_path_knows_every_dtype_the_operator_writes():
    # ``_pipeline`` keeps its own copy so that choosing the path never compiles the operator
    from dali_plugin import _assemble_op, _pipeline
    assert _pipeline._ASSEMBLED_DTYPES == set(_assemble_op.DALI_TYPES)


def test_the_operator_can_be_cached_on_disk():
    # a "dynamic global" (e.g. Numba's jitted set_num_threads, a ctypes pointer) keeps a function out of
    # Numba's disk cache: every process would compile the operator again (~20 s)
    from dali_plugin import _assemble_op
    for f in (_assemble_op._run, _assemble_op._setup):
        assert not f._library.has_dynamic_globals, f


def test_first_sizes_cut_the_first_batches_and_keep_every_row(setup):
    store, thin = setup
    rec = engine.Reconstructor(store, TENANTS["types"], device="cpu", chunk_batches=2)
    want = [dict(b) for b in rec.iter_batches(thin, 40, extra_columns=["label"])]  # chunks of 80 rows
    us = list(rec.iter_unassembled(thin, 40, extra_columns=["label"], first_sizes=[10, 20, 60]))
    assert [u.rows for u in us] == [10, 20, 50, 17]  # 60 cut at its chunk's end, then batch_size
    joined = {k: np.concatenate([u.assemble()[k] for u in us]) for k in want[0]}
    check_equal([joined], [{k: np.concatenate([b[k] for b in want]) for k in want[0]}])
    for bad in ([0], [3, -1], [2.5], [True]):
        with pytest.raises(engine.InvalidArgument, match="first_sizes"):
            next(rec.iter_unassembled(thin, 40, first_sizes=bad))
    gen = (n for n in (10, 20, 60))  # a generator is read once, for the check and the cuts alike
    assert [u.rows for u in rec.iter_unassembled(thin, 40, first_sizes=gen)] == [10, 20, 50, 17]


def test_a_pipeline_opens_with_small_iterations(setup):
    # DALI runs prefetch_queue_depth iterations before handing out the first: they carry 1, 2, ... batches
    store, thin = setup
    rec = engine.Reconstructor(store, TENANTS["plain"], device="cpu")
    pipe = uih_pipeline(rec, thin, batch_size=8, device_id=None, batches_per_iteration=5)
    assert pipe.options.assembly == "dali_operator"
    rows = [int(np.prod(item[4][0].shape[:1])) * len(item[4]) for item in pipe.source.batches()]
    # chunks of 80 rows (two groups of 5 batches): 8 + 16 + 32, the rest of that chunk, then the last 17 rows
    assert rows == [8, 16, 32, 24, 17]
