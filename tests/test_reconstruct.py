"""Reconstruction (docs/semantics.md): O2O consistency with fat rows, pushdown invariance, errors, batching."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_reconstruct_model import project

import engine
from engine import Batch
from uih.workload import COLUMNS
from uih.workload import random_events as make_events

DAY = 86_400_000_000
DEVICES = ["cpu", "cuda-sim"]
PROJECTIONS = {
    "all-left": engine.Projection(["item_id", "action", "ts"], max_len=64),
    "right-pad": engine.Projection(["item_id", "seq", "dwell_ms"], max_len=200, align="right", pad_value=-7),
    "rare-types": engine.Projection(["item_id", "surface"], max_len=16, actions=[3]),
    "types-window": engine.Projection(["item_id", "action"], max_len=32, actions=[0, 2], window_us=DAY // 2),
    "window-right": engine.Projection(["ts", "item_id"], max_len=10, window_us=DAY // 3, align="right"),
    "len-1": engine.Projection(["item_id"], max_len=1),
    "huge": engine.Projection(["item_id", "surface"], max_len=5000),
}


def project_fat(fat: pa.Table, p: engine.Projection, dtypes: dict) -> dict:
    """The simplest proof: apply the projection to fat rows (whole visible histories), row by row."""
    d = fat.to_pydict()
    rows = [project({c: np.array(d[c][b]) for c in ["seq", "ts", *COLUMNS]}, d["request_ts"][b], p, dtypes)
            for b in range(len(d["user_id"]))]
    out = {c: np.stack([r[c] for r in rows]).reshape(len(rows), p.max_len) for c in p.columns}
    out["lengths"] = np.array([r["lengths"] for r in rows], np.int32)
    return out


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Thin and (whole-history) fat rows logged at many instants, then the store moved on a lot."""
    rng = np.random.default_rng(99)
    path = tmp_path_factory.mktemp("o2o") / "store"
    store = engine.UIHStore.create(path, columns=COLUMNS, event_type_column="action")
    users = np.arange(12)
    thins, fats = [], []
    for d in range(4):
        for s in range(3):
            ev = make_events(rng, users, 300, t0=d * DAY + s * DAY // 3, span=DAY // 3)
            ev["action"] = np.where(rng.random(300) < 0.06, 3, ev["action"] % 3).astype(np.int32)
            seqs = store.append(ev)
            pick = rng.choice(len(seqs), 15, replace=False)
            store.update({"user_id": ev["user_id"][pick], "seq": seqs[pick],
                          "item_id": rng.integers(0, 100, 15), "action": np.full(15, 3, np.int32)})
            req = {"user_id": np.r_[users, [1000]], "request_ts": np.full(13, d * DAY + (s + 1) * DAY // 3),
                   "example_id": np.arange(13) + 100 * (3 * d + s)}
            thins.append(store.snapshot(req))
            fats.append(store.snapshot(req, materialize=True, max_len=10**6))
        store.seal((d + 1) * DAY - DAY // 4)
        if d == 2:
            store.compact()
    # after the last snapshots: rewrite every tail value still mutable, seal, compact, reopen
    t = store.to_table()
    mut = t.filter(pa.compute.invert(t["sealed"]))
    store.update({"user_id": mut["user_id"], "seq": mut["seq"], "item_id": np.full(len(mut), -1)})
    store.append(make_events(rng, users, 500, t0=5 * DAY, span=DAY))
    store.seal(10 * DAY)
    store.compact(full=True)
    store.close()
    store = engine.UIHStore.open(path)
    yield store, pa.concat_tables(thins), pa.concat_tables(fats)
    store.close()


CASES = [(n, "cpu") for n in PROJECTIONS] + [(n, "cuda-sim") for n in ("all-left", "types-window", "len-1")]


@pytest.mark.parametrize("name, device", CASES)
def test_o2o_reconstruction_equals_fat_rows(history, name, device):
    store, thin, fat = history
    p = PROJECTIONS[name]
    if device == "cuda-sim":  # the simulator runs every CUDA thread in Python: keep it to a few rows
        thin, fat = thin.slice(13 * 4, 6), fat.slice(13 * 4, 6)
    rec = engine.Reconstructor(store, p, device=device)
    got = rec.reconstruct(thin)
    want = project_fat(fat, p, {c: store.schema.dtype(c) for c in p.columns})
    assert set(got) == set(want)
    for c in want:
        assert got[c].dtype == want[c].dtype
        np.testing.assert_array_equal(got[c], want[c], err_msg=f"column {c}")


@pytest.mark.parametrize("name", ["all-left", "types-window", "rare-types"])
def test_pushdown_never_changes_the_result(history, name):
    store, thin, _ = history
    p = PROJECTIONS[name]
    full = engine.Reconstructor(store, p, device="cpu").reconstruct(thin)
    for off in ["columns", "users", "rows", "types"]:
        rec = engine.Reconstructor(store, p, device="cpu", pushdown=engine.Reconstructor.PUSHDOWN - {off})
        got = rec.reconstruct(thin)
        for c in full:
            np.testing.assert_array_equal(got[c], full[c])


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_iter_batches_matches_reconstruct_in_order(history, tmp_path, batch_size):
    store, thin, _ = history
    p = PROJECTIONS["types-window"]
    rec = engine.Reconstructor(store, p, device="cpu", chunk_batches=3)
    whole = rec.reconstruct(thin)
    pq.write_table(thin.slice(0, 60), tmp_path / "a.parquet")
    pq.write_table(thin.slice(60), tmp_path / "b.parquet")
    for source in (thin, tmp_path, [tmp_path / "a.parquet", tmp_path / "b.parquet"]):
        batches = list(rec.iter_batches(source, batch_size=batch_size))
        assert [b.size for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
        for c in whole:
            np.testing.assert_array_equal(np.concatenate([b[c] for b in batches]), whole[c])
    no_affinity = list(rec.iter_batches(thin, batch_size=batch_size, affinity=False, prefetch=0))
    np.testing.assert_array_equal(np.concatenate([b["item_id"] for b in no_affinity]), whole["item_id"])


def test_affinity_reads_each_user_once_per_chunk(history):
    store, thin, _ = history
    rec = engine.Reconstructor(store, PROJECTIONS["all-left"], device="cpu", chunk_batches=1000)
    list(rec.iter_batches(thin, batch_size=13))
    once = rec.stats["users_read"]
    rec2 = engine.Reconstructor(store, PROJECTIONS["all-left"], device="cpu")
    list(rec2.iter_batches(thin, batch_size=13, affinity=False))
    assert once == len(np.unique(thin["user_id"].to_numpy())) - 1 + 1 and rec2.stats["users_read"] > 5 * once


def test_shard_splits_users_disjointly(history):
    _, thin, _ = history
    parts = [engine.shard(thin, 3, i) for i in range(3)]
    assert sum(len(p) for p in parts) == len(thin)
    users = [set(p["user_id"].to_pylist()) for p in parts]
    assert not (users[0] & users[1]) and not (users[1] & users[2]) and not (users[0] & users[2])
    ids = parts[1]["example_id"].to_numpy()
    assert (np.diff(ids) > 0).all()  # order kept
    with pytest.raises(engine.InvalidArgument, match="num_shards"):
        engine.shard(thin, 0, 0)


def test_to_torch_is_zero_copy(history):
    store, thin, _ = history
    b = engine.Reconstructor(store, PROJECTIONS["all-left"], device="cpu").reconstruct(thin)
    t = b.to_torch()
    for k in b:
        assert t[k].data_ptr() == b[k].ctypes.data and tuple(t[k].shape) == b[k].shape


def test_version_errors(history, tmp_path):
    store, thin, _ = history
    rec = engine.Reconstructor(store, PROJECTIONS["all-left"], device="cpu")
    newer = thin.set_column(thin.column_names.index("version"), "version",
                            pa.array(np.full(len(thin), store.version + 1)))
    with pytest.raises(engine.VersionError, match="reopen"):
        rec.reconstruct(newer)
    beyond = thin.set_column(thin.column_names.index("imm_hw"), "imm_hw", pa.array(np.full(len(thin), 10**7)))
    with pytest.raises(engine.VersionError, match="sealed"):
        rec.reconstruct(beyond)
    negative = thin.set_column(thin.column_names.index("imm_hw"), "imm_hw",
                               pa.array(np.r_[np.zeros(len(thin) - 1, np.int64), -1]))
    with pytest.raises(engine.SchemaError, match="negative imm_hw"):
        rec.reconstruct(negative)
    for c in ("version", "user_id", "imm_hw", "request_ts"):
        holed = thin.set_column(thin.column_names.index(c), c,
                                pa.array([None, *thin.column(c).to_pylist()[1:]], pa.int64()))
        with pytest.raises(engine.SchemaError, match=f"thin column {c} has 1 null"):
            rec.reconstruct(holed)
    # a thin row against an older pinned view that has fewer sealed events
    old = engine.UIHStore.open(store.root, version=1)
    with pytest.raises(engine.VersionError):
        engine.Reconstructor(old, PROJECTIONS["all-left"], device="cpu").reconstruct(thin)


@pytest.mark.parametrize("kwargs, match", [
    (dict(columns=["colour"]), "unknown column"),
    (dict(columns=["item_id"], max_len=0), "max_len"),
    (dict(columns=["item_id"], align="center"), "align"),
    (dict(columns=["item_id"], window_us=-1), "window_us"),
    (dict(columns=[]), "non-empty"),
    (dict(columns=["item_id"], actions=["click"]), "actions"),
    (dict(columns=["item_id"], pad_value=0.5), "pad_value"),
], ids=["unknown-column", "max_len-0", "bad-align", "negative-window", "no-columns", "bad-actions", "pad"])
def test_bad_projections_raise_schema_error(history, kwargs, match):
    store, _, _ = history
    with pytest.raises(engine.SchemaError, match=match):
        engine.Reconstructor(store, engine.Projection(**kwargs), device="cpu")


def test_thin_rows_missing_columns(history):
    store, thin, _ = history
    rec = engine.Reconstructor(store, PROJECTIONS["all-left"], device="cpu")
    with pytest.raises(engine.SchemaError, match="tail_item_id"):
        rec.reconstruct(thin.drop(["tail_item_id"]))


def test_background_error_surfaces_with_traceback(history, monkeypatch):
    store, thin, _ = history
    rec = engine.Reconstructor(store, PROJECTIONS["all-left"], device="cpu", chunk_batches=1)
    real = rec._prepare
    calls = []

    def flaky(t, extra=()):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real(t, extra)

    monkeypatch.setattr(rec, "_prepare", flaky)
    got = []
    with pytest.raises(RuntimeError, match="disk on fire") as ei:
        for b in rec.iter_batches(thin, batch_size=10):
            got.append(b)
    assert len(got) == 2 and any("flaky" in str(f.name) for f in ei.traceback)


def test_float_columns_and_pads_are_bit_exact(tmp_path):
    s = engine.UIHStore.create(tmp_path / "f", columns={"score": "float32", "w": "float64", "action": "int32"})
    vals = np.array([1.5, -0.0, np.nan, 3.25], np.float32)
    s.append({"user_id": [1] * 4, "ts": [1, 2, 3, 4], "score": vals, "w": vals.astype(np.float64) * 2,
              "action": [0] * 4})
    s.seal(3)
    thin = s.snapshot({"user_id": [1], "request_ts": [10]})
    b = engine.Reconstructor(s, engine.Projection(["score", "w"], max_len=6, pad_value=-1.5), device="cpu")\
        .reconstruct(thin)
    assert b["score"].dtype == np.float32 and b["w"].dtype == np.float64
    np.testing.assert_array_equal(b["score"][0].view(np.int32)[:4], vals.view(np.int32))
    assert (b["score"][0, 4:] == -1.5).all() and (b["w"][0, 4:] == -1.5).all()
    s.close()


def test_recycled_buffers_never_overwrite_held_batches(history):
    store, thin, _ = history
    rec = engine.Reconstructor(store, PROJECTIONS["all-left"], device="cpu")
    first = rec.reconstruct(thin)
    keep = first["item_id"].copy()
    tensor = first.to_torch()["ts"]
    keep_ts = tensor.clone()
    del first
    for _ in range(3):
        again = rec.reconstruct(thin.slice(5))  # same shape class or not: must not touch held memory
        del again
    assert (tensor == keep_ts).all()
    b1 = rec.reconstruct(thin)
    b2 = rec.reconstruct(thin)
    assert b1["item_id"].ctypes.data != b2["item_id"].ctypes.data  # b1 still held: b2 got other memory
    np.testing.assert_array_equal(b1["item_id"], keep)
    ptr = b1["item_id"].ctypes.data
    del b1
    b3 = rec.reconstruct(thin)
    assert b3["item_id"].ctypes.data == ptr  # idle buffer reused


def test_window_checkpoints_skip_old_rows_exactly(tmp_path):
    """Late arrivals put old ts anywhere; the checkpoint skip must still never drop a kept event."""
    rng = np.random.default_rng(5)
    s = engine.UIHStore.create(tmp_path / "w", columns=COLUMNS)
    n = 20_000
    ev = make_events(rng, [1, 2], n, t0=0, span=100 * DAY)
    s.append(ev)
    s.seal(200 * DAY)
    thin = s.snapshot({"user_id": [1, 2, 1], "request_ts": [100 * DAY, 100 * DAY, 60 * DAY]})
    p = engine.Projection(["item_id", "ts"], max_len=50_000, window_us=5 * DAY)
    on = engine.Reconstructor(s, p, device="cpu")
    off = engine.Reconstructor(s, p, device="cpu", pushdown=engine.Reconstructor.PUSHDOWN - {"rows"})
    a, b = on.reconstruct(thin), off.reconstruct(thin)
    for c in a:
        np.testing.assert_array_equal(a[c], b[c])
    assert on.stats["events_read"] < off.stats["events_read"] / 2
    s.close()


def test_thin_row_forms_give_the_same_batches(history):
    """Slices, one chunk or many, plain-string store ids, tail columns laid out unlike each other: the same
    rows reconstruct alike; tails whose list lengths disagree, or null tails, are refused."""
    store, thin, _ = history
    rec = engine.Reconstructor(store, PROJECTIONS["all-left"], device="cpu")
    part = thin.slice(7, 40)  # list chunks whose offsets do not start at 0
    want = rec.reconstruct(part.combine_chunks())
    sid = part.column("store_id").cast(pa.string())
    j = part.schema.get_field_index("tail_item_id")
    items = part.column("tail_item_id").combine_chunks()
    rebased = pa.concat_arrays([pa.array([[1, 2, 3]], items.type), items]).slice(1)  # raw offsets from 3
    forms = [part, pa.concat_tables([part.slice(0, 11), part.slice(11)]),
             part.set_column(part.schema.get_field_index("store_id"), "store_id", sid),
             # one tail column chunked unlike tail_seq, offset elsewhere, or with 64-bit offsets
             part.set_column(j, "tail_item_id", pa.chunked_array([items.slice(0, 11), items.slice(11)])),
             part.set_column(j, "tail_item_id", pa.chunked_array([rebased])),
             part.set_column(j, "tail_item_id", pa.chunked_array([items.cast(pa.large_list(pa.int64()))]))]
    for form in forms:
        got = rec.reconstruct(form)
        for c in want.keys():
            np.testing.assert_array_equal(got[c], want[c])
    i = part.schema.get_field_index("tail_item_id")
    bad = part.column("tail_item_id").combine_chunks()
    lens = pa.compute.list_value_length(bad).to_numpy().copy()
    k = int(np.flatnonzero(lens)[0])
    lens[k] -= 1  # one row's list one shorter: same total minus one, so offsets disagree
    short = pa.ListArray.from_arrays(pa.array(np.r_[0, np.cumsum(lens)].astype(np.int32)),
                                     bad.values.slice(0, int(lens.sum())))
    with pytest.raises(engine.SchemaError, match="disagree"):
        rec.reconstruct(part.set_column(i, "tail_item_id", short))
    nulls = pa.array([None] * len(part), bad.type)
    with pytest.raises(engine.SchemaError, match="null lists"):
        rec.reconstruct(part.set_column(i, "tail_item_id", nulls))


def test_each_thin_schema_is_read_by_its_own_columns(history):
    """One reconstructor fed thin rows of one schema, then of others (columns in another order, a tail column
    that is no list): each table is read by its own column positions and checked by its own types, whatever
    schema came before."""
    store, thin, _ = history
    rec = engine.Reconstructor(store, PROJECTIONS["all-left"], device="cpu")
    part = thin.slice(3, 40).combine_chunks()
    want = rec.reconstruct(part)
    moved = part.select(list(reversed(part.column_names)))
    for form in (moved, part):
        got = rec.reconstruct(form)
        for c in want.keys():
            np.testing.assert_array_equal(got[c], want[c])
    j = part.schema.get_field_index("tail_item_id")
    with pytest.raises(engine.SchemaError, match="expected a list column"):
        rec.reconstruct(part.set_column(j, "tail_item_id", pa.array(np.zeros(len(part), np.int64))))


def test_segments_the_seq_cut_excludes_are_never_opened(tmp_path):
    """Users present in old segments whose events lie below the max_len cut: those segments' files (not
    even their footers) are not read; the newest segment is."""
    rng = np.random.default_rng(7)
    store = engine.UIHStore.create(tmp_path / "s", columns=COLUMNS)
    for d in range(3):
        store.append(make_events(rng, range(6), 300, t0=d * DAY, span=DAY))
        store.seal((d + 1) * DAY)
    thin = store.snapshot({"user_id": np.arange(6), "request_ts": np.full(6, 4 * DAY)})
    rec = engine.Reconstructor(store, engine.Projection(["item_id"], max_len=2), device="cpu")
    got = rec.reconstruct(thin)
    assert got["lengths"].tolist() == [2] * 6
    newest = len(store.view.segments) - 1
    assert {s for s, _ in store.view._pf} == {newest}  # footers opened: the newest segment's only
    store.close()


@pytest.mark.parametrize("name, device, rows", [("all-left", "cpu", None), ("right-pad", "cpu", None),
                                                ("huge", "cpu", None), ("len-1", "cuda-sim", 5)])
def test_padded_batches_are_packed_in_one_buffer(history, name, device, rows):
    """``Batch.packed()``: every array of a padded batch is a view of one buffer, laid out as it says."""
    store, thin, _ = history
    thin = thin.slice(0, rows).append_column("w", pa.array(np.arange(rows or len(thin)) * 0.5))
    rec = engine.Reconstructor(store, PROJECTIONS[name], device=device)
    for b in rec.iter_batches(thin, 16, extra_columns=["example_id", "w"]):
        buffer, layout = b.packed()
        assert buffer.dtype == np.uint8 and buffer.ndim == 1
        assert [name for name, *_ in layout] == list(b)
        for (k, dtype, shape, off), (k2, v) in zip(layout, Batch.unpack(buffer, layout).items()):
            assert k == k2 and v.dtype == dtype == b[k].dtype and v.shape == shape == b[k].shape
            assert off % 64 == 0 and np.shares_memory(v, buffer)
            assert v.ctypes.data == b[k].ctypes.data  # the batch's arrays are these views
            np.testing.assert_array_equal(v, b[k])
        ends = sorted((off, off + dtype.itemsize * int(np.prod(shape))) for _, dtype, shape, off in layout)
        assert all(e <= s for (_, e), (s, _) in zip(ends, ends[1:])) and ends[-1][1] <= buffer.nbytes
        assert buffer.nbytes == Batch.packed_nbytes(layout) == max(-(-ends[-1][1] // 64) * 64, 1)


def test_packed_batches_unpack_as_torch_views(history):
    import torch
    store, thin, _ = history
    b = engine.Reconstructor(store, PROJECTIONS["right-pad"], device="cpu").reconstruct(thin)
    buffer, layout = b.packed()
    t = Batch.unpack(torch.from_numpy(buffer), layout, lambda d: torch.from_numpy(np.empty(0, d)).dtype)
    for k in b:
        assert t[k].data_ptr() == b[k].ctypes.data
        np.testing.assert_array_equal(t[k].numpy(), b[k])


@pytest.mark.parametrize("name", ["all-left", "right-pad", "types-window"])
def test_jagged_batches_are_packed_too(history, name):
    store, thin, _ = history
    p = PROJECTIONS[name]
    jagged = engine.Projection(p.columns, max_len=p.max_len, actions=p.actions, window_us=p.window_us,
                               align=p.align, layout="jagged")
    b = engine.Reconstructor(store, jagged, device="cpu").reconstruct(thin, extra_columns=["example_id"])
    buffer, layout = b.packed()
    assert [k for k, *_ in layout] == list(b) == [*p.columns, "lengths", "offsets", "example_id"]
    assert buffer.nbytes == Batch.packed_nbytes(layout)
    for k, v in Batch.unpack(buffer, layout).items():
        assert v.ctypes.data == b[k].ctypes.data and v.shape == b[k].shape
    assert b["offsets"][-1] == b["lengths"].sum() == len(b[p.columns[0]])


def _jagged_of(p: engine.Projection) -> engine.Projection:
    return engine.Projection(p.columns, max_len=p.max_len, actions=p.actions, window_us=p.window_us,
                             align=p.align, pad_value=p.pad_value, layout="jagged")


@pytest.mark.parametrize("name, device", [(n, "cpu") for n in PROJECTIONS] + [("right-pad", "cuda-sim")])
def test_pad_turns_a_jagged_batch_into_the_padded_one(history, name, device):
    """``Reconstructor.pad``: the jagged batch of the same rows, padded, equals the padded projection's
    batch array for array (dtypes, alignment, pad values, extra columns), packed like it."""
    store, thin, _ = history
    thin = thin.slice(0, 9) if device == "cuda-sim" else thin
    p = PROJECTIONS[name]
    padded = engine.Reconstructor(store, p, device=device)
    want = padded.reconstruct(thin, extra_columns=["example_id"])
    jagged = engine.Reconstructor(store, _jagged_of(p), device=device).reconstruct(thin, extra_columns=["example_id"])
    got = padded.pad(jagged)
    assert list(got) == list(want) and got.packed() is not None
    for k in want:
        assert got[k].dtype == want[k].dtype, k
        np.testing.assert_array_equal(np.asarray(got[k]).view(np.uint8), np.asarray(want[k]).view(np.uint8))


def test_pad_refuses_what_it_cannot_pad(history):
    store, thin, _ = history
    p = PROJECTIONS["all-left"]
    jagged = engine.Reconstructor(store, _jagged_of(p), device="cpu")
    batch = jagged.reconstruct(thin)
    with pytest.raises(engine.SchemaError, match="jagged already"):
        jagged.pad(batch)
    shorter = engine.Reconstructor(store, engine.Projection(p.columns, max_len=3), device="cpu")
    with pytest.raises(engine.SchemaError, match="max_len is 3"):
        shorter.pad(batch)
    padded = engine.Reconstructor(store, p, device="cpu")
    with pytest.raises(engine.SchemaError, match="offsets"):
        padded.pad({c: batch[c] for c in p.columns})
    # rows that do not tile the values: the kernel would read past them (unchecked on a GPU)
    bad_step = dict(batch)
    bad_step["lengths"] = batch["lengths"].copy()
    bad_step["lengths"][0] += 1
    short = dict(batch)
    short["item_id"] = batch["item_id"][:-1]
    shifted = dict(batch)
    shifted["offsets"] = batch["offsets"] + 1
    for bad in (bad_step, short, shifted):
        with pytest.raises(engine.SchemaError, match="steps are the lengths"):
            padded.pad(bad)


def test_chunk_rows_changes_the_chunks_not_the_batches(history):
    """``iter_batches(chunk_rows=)``: how many thin rows share a chunk (their users read once); the batches
    are the same whatever it is, and a chunk never splits a batch."""
    store, thin, _ = history
    rec = engine.Reconstructor(store, PROJECTIONS["types-window"], device="cpu")
    want = list(rec.iter_batches(thin, 7))
    for rows in (7, 21, 700):
        before = rec.stats["chunks"]
        got = list(rec.iter_batches(thin, 7, chunk_rows=rows))
        assert rec.stats["chunks"] - before == -(-len(thin) // rows)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            for k in w:
                np.testing.assert_array_equal(g[k], w[k])
    for bad in (0, 6, 10, -7):
        with pytest.raises(engine.InvalidArgument, match="chunk_rows"):
            list(rec.iter_batches(thin, 7, chunk_rows=bad))
