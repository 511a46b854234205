"""Bad input of every kind (SPEC §4): a typed UIHError with a message, and the store's files untouched.

Each case an adversary or a careless user tried is pinned first (float pointers, lossy tails, arguments
of the wrong type); then Hypothesis feeds random bad values of each argument and each column to append,
update, snapshot, Projection, reconstruct and iter_batches.
"""

import hashlib
import math
import os

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine

COLS = {"item_id": "int64", "action": "int32", "score": "float32", "weight": "float64"}
PROJECTED = ["item_id", "action", "score", "weight", "seq", "ts"]
USERS = 6
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def events(n, users=USERS, t0=0, seed=0):
    rng = np.random.default_rng(seed)
    return {"user_id": rng.integers(0, users, n), "ts": t0 + np.arange(n, dtype=np.int64),
            "item_id": rng.integers(0, 1 << 40, n), "action": rng.integers(0, 4, n).astype(np.int32),
            "score": rng.random(n).astype(np.float32), "weight": rng.random(n)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A store with sealed and mutable events (so thin rows carry tails), its thin rows and a reconstructor."""
    store = engine.UIHStore.create(tmp_path_factory.mktemp("bad") / "store", columns=COLS, event_type_column="action")
    store.append(events(60))
    store.seal(30)
    store.append(events(30, t0=100, seed=1))
    thin = store.snapshot({"user_id": np.arange(USERS), "request_ts": np.full(USERS, 1000),
                           "label": np.arange(USERS, dtype=np.float32)})
    assert pa.compute.sum(pa.compute.list_value_length(thin["tail_seq"])).as_py() > 0
    rec = engine.Reconstructor(store, engine.Projection(PROJECTED, max_len=16), device="cpu", prefetch=0)
    yield store, thin, rec
    store.close()


def files(store) -> dict:
    """Every file under the store and the hash of its bytes."""
    out = {}
    for folder, _, names in os.walk(store.root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, store.root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def rejects(store, call, error=engine.UIHError, match=None):
    """``call()`` raises ``error`` (a UIHError) and leaves every file of ``store`` as it was."""
    before, version = files(store), store.version
    with pytest.raises(error, match=match) as info:
        call()
    assert isinstance(info.value, engine.UIHError)
    assert files(store) == before and store.version == version
    return info.value


def replaced(table: pa.Table, name: str, column) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, column)


def with_tail_values(thin: pa.Table, name: str, values) -> pa.Table:
    """``thin`` with tail column ``name``'s values replaced, its lists' offsets kept."""
    col = thin.column(name).combine_chunks()
    return replaced(thin, name, pa.ListArray.from_arrays(col.offsets, values))


def first(batches):
    return next(iter(batches))


# ---- each case reproduced ---------------------------------------------------------------------------


@pytest.mark.parametrize("column, values", [
    ("user_id", pa.array([0.9] + [1.0] * (USERS - 1))),  # read as user 0 before
    ("imm_hw", pa.array(np.arange(USERS) + 0.5)),  # 491.5 became 491: one event missing
    ("imm_hw", pa.array(np.full(USERS, 1e6 + 0.5))),  # beyond the sealed count: still a SchemaError, not VersionError
    ("request_ts", pa.array(np.full(USERS, 1000.0))),  # a whole float is no integer either (only safe casts)
    ("version", pa.array(np.full(USERS, 2**63), pa.uint64())),  # does not fit int64
    ("store_id", pa.array([[1]] * USERS)),  # no store id at all (a cast error before)
], ids=["float-user", "fractional-imm_hw", "fractional-imm_hw-beyond-sealed", "float-request_ts", "uint64-version",
        "list-store_id"])
def test_thin_pointer_columns_take_only_safe_casts(world, column, values):
    store, thin, rec = world
    rejects(store, lambda: rec.reconstruct(replaced(thin, column, values)), engine.SchemaError, f"thin column {column}")


def test_thin_tails_take_only_safe_casts(world):
    store, thin, rec = world
    n = len(thin.column("tail_action").combine_chunks().values)
    wide = pa.array(np.r_[np.zeros(n - 1), 2**40].astype(np.int64))  # wrapped into int32 before
    rejects(store, lambda: rec.reconstruct(with_tail_values(thin, "tail_action", wide)), engine.SchemaError,
            "tail_action.*without loss")
    doubles = pa.array(np.full(n, 7.5))  # truncated to 7 before
    rejects(store, lambda: rec.reconstruct(with_tail_values(thin, "tail_item_id", doubles)), engine.SchemaError,
            "tail_item_id.*double")
    huge = pa.array(np.full(n, 1e300))  # float64 that float32 cannot hold: inf before
    rejects(store, lambda: rec.reconstruct(with_tail_values(thin, "tail_score", huge)), engine.SchemaError,
            "tail_score.*range of float")
    holed = pa.array([None] + [0] * (n - 1), pa.int32())  # a null inside a list
    rejects(store, lambda: rec.reconstruct(with_tail_values(thin, "tail_action", holed)), engine.SchemaError, "null")
    rejects(store, lambda: rec.reconstruct(replaced(thin, "tail_action", pa.array(np.zeros(USERS, np.int32)))),
            engine.SchemaError, "list column")


def test_safe_casts_of_thin_rows_still_reconstruct_identically(world):
    """An int64 tail of values that fit int32, uint32 pointers: safe, so the same batch as snapshot()'s form."""
    _, thin, rec = world
    want = rec.reconstruct(thin)
    acts = thin.column("tail_action").combine_chunks()
    cast = with_tail_values(thin, "tail_action", acts.values.cast(pa.int64()))
    cast = replaced(cast, "imm_hw", thin.column("imm_hw").cast(pa.uint32()))
    got = rec.reconstruct(cast)
    for c in [*PROJECTED, "lengths"]:
        np.testing.assert_array_equal(got[c], want[c])


def test_append_of_a_value_beyond_64_bits_is_a_schema_error(world):
    store, _, _ = world
    ev = events(3)
    rejects(store, lambda: store.append({**ev, "item_id": [2**64, 1, 2]}), engine.SchemaError, "item_id|64")
    rejects(store, lambda: store.append({**ev, "score": np.array([1e300, 0, 0])}), engine.SchemaError,
            "score.*range of float")


@pytest.mark.parametrize("actions, match", [
    ([0, 2**40], "span"),  # a 1 TiB filter table before (MemoryError)
    ([1.5], "actions"),  # silently code 1 before
    ([True], "actions"),
    (5, "actions"),
    ("12", "actions"),
    ([2**63], "actions"),
], ids=["wide-span", "fractional", "bool", "not-iterable", "string", "beyond-int64"])
def test_bad_actions_are_schema_errors(actions, match):
    with pytest.raises(engine.SchemaError, match=match):
        engine.Projection(["item_id"], actions=actions)


def test_actions_must_fit_the_event_type_column(world):
    store, _, _ = world
    proj = engine.Projection(["item_id"], actions=[2**31])  # action is int32
    rejects(store, lambda: engine.Reconstructor(store, proj, device="cpu"), engine.SchemaError, "int32")


@pytest.mark.parametrize("path", [None, 123, "", b"/tmp", "a\0b"], ids=["none", "int", "empty", "bytes", "nul"])
def test_open_and_create_need_a_path(tmp_path, path):
    with pytest.raises(engine.InvalidArgument, match="path"):
        engine.UIHStore.open(path)
    with pytest.raises(engine.InvalidArgument, match="path"):
        engine.UIHStore.create(path, columns=COLS)
    assert list(tmp_path.iterdir()) == []


def test_bool_arguments_must_be_bools(world, tmp_path):
    store, thin, rec = world
    rejects(store, lambda: store.compact(full="no"), engine.InvalidArgument, "full")  # a full compaction before
    rejects(store, lambda: engine.UIHStore.open(store.root, read_only="no"), engine.InvalidArgument, "read_only")
    rejects(store, lambda: store.snapshot({"user_id": [0], "request_ts": [1]}, materialize="yes"),
            engine.InvalidArgument, "materialize")
    rejects(store, lambda: first(rec.iter_batches(thin, 2, affinity="no")), engine.InvalidArgument, "affinity")


@pytest.mark.parametrize("max_len", [float("nan"), "5", 1.5, None, 0, True, 2**63],
                         ids=["nan", "str", "fractional", "none", "zero", "bool", "beyond-int64"])
def test_fat_snapshot_max_len_is_checked(world, max_len):
    store, _, _ = world
    rejects(store, lambda: store.snapshot({"user_id": [0], "request_ts": [1]}, materialize=True, max_len=max_len),
            engine.SchemaError, "max_len")


def test_reconstruct_needs_thin_rows(world):
    store, thin, rec = world
    rejects(store, lambda: rec.reconstruct(5), engine.InvalidArgument, "thin rows")
    rejects(store, lambda: rec.reconstruct(None), engine.InvalidArgument, "thin rows")
    rejects(store, lambda: rec.reconstruct({"user_id": [1, 2], "imm_hw": [1]}), engine.SchemaError)
    rejects(store, lambda: rec.reconstruct(thin, extra_columns=5), engine.InvalidArgument, "extra_columns")
    rejects(store, lambda: engine.Reconstructor(5, rec.projection), engine.InvalidArgument, "UIHStore")
    rejects(store, lambda: engine.Reconstructor(store, ["item_id"]), engine.InvalidArgument, "Projection")


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=None), "batch_size"),
    (dict(batch_size=1.5), "batch_size"),  # one row per batch before
    (dict(batch_size="2"), "batch_size"),
    (dict(batch_size=2, prefetch=-1), "prefetch"),
    (dict(batch_size=2, prefetch="x"), "prefetch"),
    (dict(batch_size=2, chunk_rows=3), "chunk_rows"),
    (dict(batch_size=2, extra_columns=5), "extra_columns"),
    (dict(thin_source=5, batch_size=2), "thin_source"),
    (dict(thin_source=[5], batch_size=2), "thin_source"),
    (dict(thin_source=None, batch_size=2), "thin_source"),
], ids=lambda v: repr(v) if isinstance(v, str) else None)
def test_iter_batches_arguments_are_checked(world, kwargs, match):
    store, thin, rec = world
    kwargs = {"thin_source": thin, **kwargs}
    rejects(store, lambda: first(rec.iter_batches(**kwargs)), engine.InvalidArgument, match)


def test_a_file_that_is_not_parquet_is_a_schema_error(world, tmp_path):
    store, _, rec = world
    (tmp_path / "thin.parquet").write_bytes(b"not parquet")
    rejects(store, lambda: first(rec.iter_batches(tmp_path, 2)), engine.SchemaError, "not a Parquet file")


def test_shard_takes_only_integers(world):
    _, thin, _ = world
    with pytest.raises(engine.InvalidArgument, match="index"):
        engine.shard(thin, 2, 0.5)  # an empty shard before
    with pytest.raises(engine.SchemaError, match="user_id"):
        engine.shard(replaced(thin, "user_id", pa.array(np.arange(USERS) + 0.5)), 2, 0)


# ---- random bad values ------------------------------------------------------------------------------

INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
FLOAT32_MAX = float(np.finfo(np.float32).max)


@st.composite
def bad_column(draw, dtype: str, n: int, python=True):
    """A column of ``n`` values for a ``dtype`` column that no safe cast accepts: one bad value among good
    ones, or a column of a wrong type (``python``: also a list of Python ints beyond 64 bits)."""
    i = draw(st.integers(0, n - 1))
    good = np.zeros(n, dtype)
    kinds = ["null", "string", "bool", "nested", *(["beyond-64-bits"] if python else [])]
    kinds += ["float", "too-wide"] if dtype.startswith("int") else ["inexact-int", "too-large-float"] * (
        dtype == "float32") or ["inexact-int"]
    kind = draw(st.sampled_from(kinds))
    if kind == "null":
        return pa.array([None if k == i else v for k, v in enumerate(good.tolist())], pa.from_numpy_dtype(good.dtype))
    if kind == "string":
        return pa.array([draw(st.text(max_size=3))] * n)
    if kind == "bool":
        return pa.array(np.full(n, draw(st.booleans())))
    if kind == "nested":
        return pa.array([[v] for v in good.tolist()])
    if kind == "beyond-64-bits":  # Python ints pyarrow cannot hold (a list, as a user would pass)
        return [draw(st.one_of(st.integers(min_value=2**64), st.integers(max_value=-(2**63) - 1))) if k == i else 0
                for k in range(n)]
    if kind == "float":  # any float, whole or not: only safe casts
        v = draw(st.floats(allow_nan=True, allow_infinity=True))
        return pa.array(np.where(np.arange(n) == i, v, 0.0))
    if kind == "too-wide":
        lo, hi = INT_RANGE[dtype]
        if dtype == "int32":
            v = draw(st.one_of(st.integers(INT_RANGE["int64"][0], lo - 1), st.integers(hi + 1, INT_RANGE["int64"][1])))
            return pa.array(np.where(np.arange(n) == i, v, 0).astype(np.int64))
        v = draw(st.integers(2**63, 2**64 - 1))
        return pa.array(np.where(np.arange(n) == i, np.uint64(v), np.uint64(0)).astype(np.uint64))
    if kind == "inexact-int":  # beyond the float's exact integers
        v = draw(st.integers(2**53 + 1 if dtype == "float64" else 2**24 + 1, 2**62)) * draw(st.sampled_from([1, -1]))
        return pa.array(np.where(np.arange(n) == i, v, 0).astype(np.int64))
    v = draw(st.floats(min_value=FLOAT32_MAX * 2, allow_infinity=False)) * draw(st.sampled_from([1, -1]))
    return pa.array(np.where(np.arange(n) == i, v, 0.0))


@given(data=st.data())
@PROPERTY
def test_append_rejects_any_bad_column(world, data):
    store, _, _ = world
    ev = events(5, seed=data.draw(st.integers(0, 9)))
    name = data.draw(st.sampled_from(["user_id", "ts", *COLS]))
    dtype = "int64" if name in ("user_id", "ts") else COLS[name]
    ev[name] = data.draw(bad_column(dtype, 5))
    rejects(store, lambda: store.append(ev), engine.SchemaError)


@given(data=st.data())
@PROPERTY
def test_update_rejects_any_bad_column(world, data):
    store, thin, _ = world
    tails = thin.column("tail_seq").to_pylist()
    u = next(k for k, t in enumerate(tails) if t)
    rows = {"user_id": np.array([u]), "seq": np.array([tails[u][0]]), "weight": np.array([0.5])}
    name = data.draw(st.sampled_from(["user_id", "seq", *COLS]))
    dtype = "int64" if name in ("user_id", "seq") else COLS[name]
    rows[name] = data.draw(bad_column(dtype, 1))
    rejects(store, lambda: store.update(rows), engine.SchemaError)


# bad for any count argument (a size, a depth, a length): not an int, or an int below 1
ARGUMENTS = st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=3), st.lists(st.integers(), max_size=2),
                      st.integers(max_value=0), st.just(object()))


@given(data=st.data())
@PROPERTY
def test_snapshot_rejects_any_bad_request_or_argument(world, data):
    store, _, _ = world
    req = {"user_id": np.arange(3), "request_ts": np.full(3, 10)}
    what = data.draw(st.sampled_from(["user_id", "request_ts", "requests", "materialize", "max_len"]))
    kwargs = {}
    if what in req:
        req[what] = data.draw(bad_column("int64", 3))
    elif what == "requests":
        req = data.draw(st.one_of(st.none(), st.integers(), st.text(max_size=3), st.just({"user_id": [1, 2],
                                                                                          "request_ts": [1]})))
    elif what == "materialize":
        kwargs = {"materialize": data.draw(ARGUMENTS.filter(lambda v: not isinstance(v, bool))), "max_len": 4}
    else:
        kwargs = {"materialize": True, "max_len": data.draw(st.one_of(ARGUMENTS, st.integers(min_value=2**63)))}
    rejects(store, lambda: store.snapshot(req, **kwargs))


PROJECTION_ARGS = {
    "columns": st.one_of(st.none(), st.integers(), st.just([]), st.lists(st.integers(), min_size=1, max_size=2),
                         st.sampled_from([["nope"], ["item_id", "item_id"], ["lengths"], ["user_id"]])),
    "max_len": st.one_of(ARGUMENTS, st.integers(min_value=(1 << 24) + 1)),
    "actions": st.one_of(st.integers(), st.text(min_size=1, max_size=3),
                         st.lists(st.one_of(st.floats(), st.booleans(), st.text(max_size=2), st.none()), min_size=1,
                                  max_size=3),
                         st.lists(st.integers(2**31, 2**70), min_size=1, max_size=2),
                         st.tuples(st.just(0), st.integers(1 << 24, 2**31 - 1))),
    "window_us": st.one_of(st.floats(), st.text(max_size=3), st.booleans(), st.integers(max_value=-1)),
    "align": st.one_of(st.none(), st.integers(), st.text(max_size=6).filter(lambda s: s not in ("left", "right"))),
    "pad_value": st.one_of(st.none(), st.text(max_size=3), st.complex_numbers(), st.booleans(),
                           st.floats().filter(lambda v: not math.isfinite(v) or v != int(v)),
                           st.integers(min_value=2**63), st.integers(max_value=-(2**63) - 1)),
    "layout": st.one_of(st.none(), st.integers(), st.text(max_size=6).filter(lambda s: s not in ("padded", "jagged"))),
}


@given(data=st.data())
@PROPERTY
def test_projection_rejects_any_bad_argument(world, data):
    store, thin, _ = world
    name = data.draw(st.sampled_from(sorted(PROJECTION_ARGS)))
    kwargs = {"columns": PROJECTED, name: data.draw(PROJECTION_ARGS[name])}

    def build():
        engine.Reconstructor(store, engine.Projection(**kwargs), device="cpu", prefetch=0).reconstruct(thin)
    rejects(store, build, engine.SchemaError)


THIN_POINTERS = ["user_id", "request_ts", "version", "imm_hw", "store_id"]
TAILS = ["tail_seq", "tail_ts", *(f"tail_{c}" for c in COLS)]


@given(data=st.data())
@PROPERTY
def test_reconstruct_rejects_any_bad_thin_column_or_argument(world, data):
    store, thin, rec = world
    name = data.draw(st.sampled_from([*THIN_POINTERS, *TAILS, "thin", "extra_columns"]))
    extra = ()
    if name in THIN_POINTERS:
        thin = replaced(thin, name, data.draw(bad_column("int64", len(thin), python=False)))
    elif name in TAILS:
        col = name[len("tail_"):]
        n = len(thin.column(name).combine_chunks().values)
        thin = with_tail_values(thin, name, data.draw(bad_column(COLS.get(col, "int64"), n, python=False)))
    elif name == "thin":
        thin = data.draw(st.one_of(st.none(), st.integers(), st.text(max_size=3), st.just(thin.drop(["tail_ts"]))))
    else:
        extra = data.draw(st.one_of(st.none(), st.integers(), st.lists(st.integers(), min_size=1, max_size=2),
                                    st.just(["nope"]), st.just(["item_id"]), st.just(["store_id"])))
    rejects(store, lambda: rec.reconstruct(thin, extra_columns=extra))


@given(data=st.data())
@PROPERTY
def test_iter_batches_rejects_any_bad_argument(world, data):
    store, thin, rec = world
    name = data.draw(st.sampled_from(["thin_source", "batch_size", "prefetch", "affinity", "extra_columns",
                                      "chunk_rows"]))
    kwargs = {"thin_source": thin, "batch_size": 2}
    kwargs[name] = data.draw({
        "thin_source": st.one_of(st.none(), st.integers(), st.floats(), st.lists(st.integers(), min_size=1,
                                                                                  max_size=2), st.just(""),
                                 st.just(thin.drop(["imm_hw"]))),
        "batch_size": ARGUMENTS,
        "prefetch": ARGUMENTS.filter(lambda v: v is not None and not (isinstance(v, int) and v == 0)),
        "affinity": ARGUMENTS.filter(lambda v: not isinstance(v, bool)),
        "extra_columns": st.one_of(st.integers(), st.lists(st.integers(), min_size=1, max_size=2), st.just(["nope"])),
        "chunk_rows": st.one_of(ARGUMENTS.filter(lambda v: v is not None), st.integers(3, 99).filter(lambda v: v % 2)),
    }[name])
    rejects(store, lambda: first(rec.iter_batches(**kwargs)))
