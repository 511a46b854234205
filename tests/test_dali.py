"""The DALI plugin in CPU-only mode: same batches as iter_batches, epochs, workers, failures."""

import os

import numpy as np
import pyarrow as pa
import pytest

import engine
from dali_plugin import PipelineOptions, UIHIterator, uih_pipeline
from uih.workload import COLUMNS
from uih.workload import random_events as make_events

PADDINGS = pytest.mark.parametrize("padding", ["assembled", "after_dali", "dali_slice"],
                                   ids=["engine-pads", "pads-after", "dali-pads"])
TENANTS = {
    "right": engine.Projection(["item_id", "action", "ts"], max_len=40, align="right", pad_value=-1),
    "rare-types": engine.Projection(["item_id", "dwell_ms"], max_len=12, actions=[3]),
}


def store_with_tails(path, rng, users: int, events: int, rare: float, cutoff: int):
    """A store of ``events`` events of ``users`` users, event type 3 at a ``rare`` share (a sidecar), sealed
    before ``cutoff``, then 200 more events still mutable (the thin rows' logged tails)."""
    store = engine.UIHStore.create(path, columns=COLUMNS)
    ev = make_events(rng, range(users), events)
    ev["action"] = np.where(rng.random(events) < rare, 3, ev["action"] % 3).astype(np.int32)
    store.append(ev)
    store.seal(cutoff)
    store.append(make_events(rng, range(users), 200, t0=2_000_000))
    return store


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    rng = np.random.default_rng(3)
    store = store_with_tails(tmp_path_factory.mktemp("dali") / "s", rng, 25, 4000, 0.05, 600_000)
    thin = store.snapshot({"user_id": rng.integers(0, 30, 101), "request_ts": np.full(101, 3_000_000)})
    yield store, thin
    store.close()


def as_numpy(batch):
    return {k: v.numpy() for k, v in batch.items()}


@PADDINGS
@pytest.mark.parametrize("tenant", TENANTS)
@pytest.mark.parametrize("batch_size", [1, 16, 101, 256])
def test_cpu_pipeline_equals_iter_batches_for_two_epochs(setup, tenant, batch_size, padding):
    store, thin = setup
    rec = engine.Reconstructor(store, TENANTS[tenant], device="cpu")
    want = list(rec.iter_batches(thin, batch_size))
    it = UIHIterator(uih_pipeline(rec, thin, batch_size=batch_size, device_id=None, padding=padding))
    for _ in range(2):
        got = [as_numpy(b) for b in it]
        assert len(got) == len(want) and got[-1]["lengths"].shape[0] == (101 % batch_size or batch_size)
        for g, w in zip(got, want):
            assert set(g) == set(w)
            for k in w:
                assert g[k].dtype == w[k].dtype
                np.testing.assert_array_equal(g[k], w[k])


@pytest.mark.parametrize("workers,padding", [(0, "assembled"), (0, "dali_slice"), (1, "assembled")],
                         ids=["in-process", "in-process-dali-pads", "one-worker"])
def test_reset_restarts_the_epoch(setup, workers, padding):
    store, thin = setup
    rec = engine.Reconstructor(store, TENANTS["right"], device="cpu")
    it = UIHIterator(uih_pipeline(rec, thin, batch_size=10, workers=workers, padding=padding))
    try:
        first = as_numpy(next(it))
        next(it)
        it.reset()
        again = [as_numpy(b) for b in it]
        assert sum(len(b["lengths"]) for b in again) == 101
        assert np.array_equal(again[0]["item_id"], first["item_id"])
    finally:
        it.close()


@pytest.mark.parametrize("group", [1, 3, 8])
@pytest.mark.parametrize("batch_size", [1, 16, 101])
def test_several_batches_per_dali_iteration_are_the_same_batches(setup, group, batch_size):
    """A DALI iteration carrying ``group`` batches hands them out one by one: the batches of iter_batches,
    in order, the last one short, for every epoch; a reset in the middle of an iteration starts afresh."""
    store, thin = setup
    thin = thin.append_column("label", pa.array(np.arange(len(thin)) * 0.25))
    rec = engine.Reconstructor(store, TENANTS["right"], device="cpu")
    want = [{k: np.asarray(v) for k, v in b.items()} for b in rec.iter_batches(thin, batch_size,
                                                                                 extra_columns=["label"])]
    pipe = uih_pipeline(rec, thin, batch_size=batch_size, batches_per_iteration=group, padding="assembled",
                        extra_columns=["label"])
    assert pipe.options.batches_per_iteration == group
    it = UIHIterator(pipe)
    for epoch in range(3):
        if epoch == 1:  # stop inside the first iteration's batches
            next(it)
            it.reset()
        got = [as_numpy(b) for b in it]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert list(g) == list(w)
            for k in w:
                assert g[k].dtype == w[k].dtype
                np.testing.assert_array_equal(g[k], w[k])


def test_batches_per_iteration_auto_and_its_errors(setup):
    store, thin = setup
    small = engine.Reconstructor(store, TENANTS["right"], device="cpu")  # 40 events x 20 B per row
    assert uih_pipeline(small, thin, batch_size=16).options.batches_per_iteration == 8
    assert uih_pipeline(small, thin, batch_size=16,
                        batches_per_iteration=np.int64(3)).options.batches_per_iteration == 3
    fewer = engine.Reconstructor(store, TENANTS["right"], device="cpu", chunk_batches=2)
    assert uih_pipeline(fewer, thin, batch_size=16).options.batches_per_iteration == 2  # a chunk's at most
    assert uih_pipeline(small, thin, batch_size=16, padding="after_dali").options.batches_per_iteration == 1
    big = engine.Reconstructor(store, engine.Projection(["item_id", "ts"], max_len=1 << 15), device="cpu")
    big_pipe = uih_pipeline(big, thin, batch_size=64, padding="assembled")
    assert big_pipe.options.batches_per_iteration == 1  # 64 x 512 KB per batch
    for bad in (0, -1, 1.5, "4", True):
        with pytest.raises(engine.InvalidArgument, match="batches_per_iteration"):
            uih_pipeline(small, thin, batch_size=16, batches_per_iteration=bad)
    for kwargs in ({"padding": "dali_slice"}, {"padding": "after_dali"}, {"workers": 1}):
        with pytest.raises(engine.InvalidArgument, match="in-process CPU pipeline"):
            uih_pipeline(small, thin, batch_size=16, batches_per_iteration=2, **kwargs)


def test_worker_processes_yield_the_same_rows(setup):
    store, thin = setup
    rec = engine.Reconstructor(store, TENANTS["right"], device="cpu")
    want = rec.reconstruct(thin)
    it = UIHIterator(uih_pipeline(rec, thin, batch_size=16, workers=2))
    try:
        for _ in range(2):
            got = [as_numpy(b) for b in it]
            rows = np.concatenate([np.c_[g["item_id"], g["ts"], g["lengths"]] for g in got])
            ref = np.c_[want["item_id"], want["ts"], want["lengths"]]
            assert sorted(map(tuple, rows)) == sorted(map(tuple, ref))
    finally:
        it.close()


@PADDINGS
def test_failure_surfaces_in_the_training_loop(setup, monkeypatch, padding):
    store, thin = setup
    rec = engine.Reconstructor(store, TENANTS["right"], device="cpu", chunk_batches=1)
    pipe = uih_pipeline(rec, thin, batch_size=8, padding=padding)
    src = pipe.source  # the reconstructor that feeds the pipeline:
    feeder = src.twin if padding == "dali_slice" else getattr(src, "feeder", src.rec)  # rec: assembled in DALI
    real, calls = feeder._prepare, []

    def broken(t, extra=()):
        calls.append(1)
        if len(calls) >= 3:
            raise RuntimeError("segment unreadable")
        return real(t, extra)

    monkeypatch.setattr(feeder, "_prepare", broken)
    with pytest.raises(Exception, match="segment unreadable"):
        for _ in UIHIterator(pipe):
            pass


def test_worker_failure_surfaces(setup, tmp_path):
    store, thin = setup
    rec = engine.Reconstructor(store, TENANTS["right"], device="cpu")
    bad = thin.set_column(thin.column_names.index("imm_hw"), "imm_hw",
                          pa.array(np.full(len(thin), 10**6)))
    it = UIHIterator(uih_pipeline(rec, bad, batch_size=8, workers=1))
    with pytest.raises(Exception, match="VersionError"):
        list(it)
    it.close()


def test_options_as_an_object_or_keywords(setup):
    """``uih_pipeline`` takes a ``PipelineOptions`` and keywords that replace its fields; the pipeline it
    returns holds the options in force (every "auto" resolved) and says so in its repr."""
    store, thin = setup
    rec = engine.Reconstructor(store, TENANTS["right"], device="cpu")
    opts = PipelineOptions(extra_columns=["example_id"], padding="dali_slice", num_threads=1)
    thin = thin.append_column("example_id", pa.array(np.arange(len(thin))))
    pipe = uih_pipeline(rec, thin, batch_size=16, device_id=None, options=opts, padding="after_dali")
    assert pipe.options == PipelineOptions(extra_columns=("example_id",), padding="after_dali", num_threads=1,
                                           batches_per_iteration=1, assembly="engine")
    assert opts.padding == "dali_slice"  # the caller's options are left as they were
    assert pipe.names == ["item_id", "action", "ts", "lengths", "example_id"]
    assert repr(pipe) == ("UIHPipeline(cpu, batch_size=16, outputs=['item_id', 'action', 'ts', 'lengths', "
                          "'example_id'], batches_per_iteration=1, padding='after_dali', assembly='engine', "
                          "workers=0, num_threads=1, prefetch_queue_depth=2)")
    it = UIHIterator(pipe)
    assert repr(it) == f"UIHIterator({pipe!r}, epoch=0, running=False, pending_batches=0)"
    got = [as_numpy(b) for b in it]
    assert np.array_equal(np.concatenate([g["example_id"] for g in got]), np.arange(len(thin)))
    assert repr(it).endswith("epoch=1, running=False, pending_batches=0)")
    with pytest.raises(TypeError, match="unknown option.*pad_in_dali.*padding"):
        uih_pipeline(rec, thin, batch_size=16, pad_in_dali=True)
    with pytest.raises(engine.InvalidArgument, match="UIHPipeline"):
        UIHIterator(pipe.dali)  # DALI's own pipeline, without the source and options


def test_gpu_pipeline_needs_a_cuda_reconstructor(setup):
    store, thin = setup
    rec = engine.Reconstructor(store, TENANTS["right"], device="cpu")
    with pytest.raises(engine.InvalidArgument, match="device='cuda'"):
        uih_pipeline(rec, thin, batch_size=8, device_id=0)


@PADDINGS
def test_extra_columns_travel_with_their_rows(setup, padding):
    store, thin = setup
    thin = thin.append_column("label", pa.array(np.arange(len(thin)) % 2 == 0))
    thin = thin.append_column("example_id", pa.array(np.arange(len(thin)) * 10))
    rec = engine.Reconstructor(store, TENANTS["right"], device="cpu")
    got = [as_numpy(b) for b in UIHIterator(uih_pipeline(rec, thin, batch_size=30, padding=padding,
                                                         extra_columns=["label", "example_id"]))]
    assert list(got[0]) == ["item_id", "action", "ts", "lengths", "label", "example_id"]
    assert np.array_equal(np.concatenate([g["example_id"] for g in got]), np.arange(len(thin)) * 10)
    assert np.concatenate([g["label"] for g in got]).sum() == 51
    want = rec.reconstruct(thin)
    assert np.array_equal(np.concatenate([g["item_id"] for g in got]), want["item_id"])
    with pytest.raises(engine.SchemaError, match="extra column"):
        rec.reconstruct(thin.append_column("name", pa.array(["x"] * len(thin))),
                        extra_columns=["name"])


@pytest.mark.parametrize("preset", [None, "4M"])
def test_pipelines_route_large_outputs_to_dalis_pool_unless_the_user_chose(setup, monkeypatch, preset):
    """DALI's output batches come from its host pool (threshold ``DALI_POOL_THRESHOLD``), not fresh mmaps;
    a threshold the user set is kept."""
    from dali_plugin._pipeline import DALI_POOL_THRESHOLD
    if preset is None:
        monkeypatch.delenv("DALI_MALLOC_POOL_THRESHOLD", raising=False)
    else:
        monkeypatch.setenv("DALI_MALLOC_POOL_THRESHOLD", preset)
    store, thin = setup
    pipe = uih_pipeline(engine.Reconstructor(store, TENANTS["right"], device="cpu"), thin, batch_size=16)
    assert next(iter(UIHIterator(pipe)))["lengths"].shape[0] == 16
    assert os.environ["DALI_MALLOC_POOL_THRESHOLD"] == (preset or DALI_POOL_THRESHOLD)


def _jagged(p: engine.Projection) -> engine.Projection:
    return engine.Projection(p.columns, max_len=p.max_len, actions=p.actions, window_us=p.window_us,
                             align=p.align, pad_value=p.pad_value, layout="jagged")


@pytest.mark.parametrize("tenant", TENANTS)
@pytest.mark.parametrize("batch_size", [1, 16, 101])
def test_jagged_projection_through_dali_equals_iter_batches(setup, tenant, batch_size):
    """Jagged batches through DALI: each column's values of all rows, lengths and offsets, as iter_batches
    gives them, key for key and in order, with extra columns, over two epochs."""
    store, thin = setup
    thin = thin.append_column("example_id", pa.array(np.arange(len(thin)) * 10))
    rec = engine.Reconstructor(store, _jagged(TENANTS[tenant]), device="cpu")
    want = [b.to_numpy() for b in rec.iter_batches(thin, batch_size, extra_columns=["example_id"])]
    lengths = np.concatenate([w["lengths"] for w in want])
    assert lengths.min() == 0 and lengths.max() > 1  # empty rows (users without events) and long ones
    it = UIHIterator(uih_pipeline(rec, thin, batch_size=batch_size, extra_columns=["example_id"]))
    for _ in range(2):
        got = [as_numpy(b) for b in it]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert list(g) == list(w)
            for k in w:
                assert g[k].dtype == w[k].dtype, k
                np.testing.assert_array_equal(g[k], w[k])


def test_jagged_projection_needs_an_in_process_cpu_pipeline(setup):
    store, thin = setup
    rec = engine.Reconstructor(store, _jagged(TENANTS["right"]), device="cpu")
    for kwargs in (dict(workers=1), dict(padding="dali_slice")):
        with pytest.raises(engine.InvalidArgument, match="in-process CPU pipeline"):
            uih_pipeline(rec, thin, batch_size=8, **kwargs)


def test_worker_shared_memory_ends_without_tracker_noise(setup, tmp_path):
    """A process that ran worker pipelines exits quietly: no shared-memory block reported leaked and no
    traceback from the resource tracker the workers share with it."""
    import subprocess
    import sys
    store, thin = setup
    pq_path = tmp_path / "thin.parquet"
    import pyarrow.parquet as pq
    pq.write_table(thin, pq_path)
    code = f"""
import engine
from dali_plugin import UIHIterator, uih_pipeline
store = engine.UIHStore.open({str(store.root)!r}, read_only=True)
rec = engine.Reconstructor(store, engine.Projection(["item_id"], max_len=8), device="cpu")
for _ in range(2):
    it = UIHIterator(uih_pipeline(rec, {str(pq_path)!r}, batch_size=16, workers=2))
    assert sum(len(b["lengths"]) for b in it) == 101
    it.close()
"""
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    assert "Traceback" not in got.stderr and "leaked" not in got.stderr, got.stderr
