"""The store's API (docs/concepts.md) and its errors (docs/errors.md): each failure leaves the store as it was."""

import numpy as np
import pyarrow as pa
import pytest

import engine
from uih.workload import COLUMNS
from uih.workload import random_events as make_events


def snapshot_all(store):
    """Everything observable about a store: its events, version and a fat/thin snapshot."""
    req = {"user_id": np.arange(-1, 22), "request_ts": np.full(23, 10**15)}
    return (store.version, store.to_table(), store.snapshot(req), store.snapshot(req, materialize=True, max_len=50))


def assert_unchanged(store, before):
    after = snapshot_all(store)
    assert after[0] == before[0]
    for a, b in zip(after[1:], before[1:]):
        assert a.equals(b)


def test_append_assigns_dense_seqs_in_input_order(store):
    seqs = store.append({"user_id": [5, 7, 5, 5, 7], "ts": [3, 1, 2, 9, 0], "item_id": [1, 2, 3, 4, 5],
                         "action": [0, 0, 1, 1, 2], "surface": [0] * 5, "dwell_ms": [0] * 5})
    assert seqs.dtype == np.int64 and seqs.tolist() == [0, 0, 1, 2, 1]
    assert store.append(pa.table({"user_id": [7], "ts": [4], "item_id": [6], "action": [0], "surface": [0],
                                  "dwell_ms": [0]})).tolist() == [2]
    store.seal(5)  # user 5: ts 3,2 seal, 9 stops the prefix; user 7: ts 1,0,4 all seal
    assert store.append({"user_id": [5, 7], "ts": [1, 1], "item_id": [0, 0], "action": [0, 0],
                         "surface": [0, 0], "dwell_ms": [0, 0]}).tolist() == [3, 3]


def test_seal_takes_longest_prefix_below_cutoff(store):
    store.append({"user_id": [1] * 4, "ts": [10, 50, 20, 5], "item_id": [0, 1, 2, 3], "action": [0] * 4,
                  "surface": [0] * 4, "dwell_ms": [0] * 4})
    v = store.seal(30)
    assert v == 1 == store.version
    thin = store.snapshot({"user_id": [1], "request_ts": [100]})
    assert thin["imm_hw"].to_pylist() == [1]
    assert thin["tail_seq"].to_pylist() == [[1, 2, 3]]
    assert store.seal(30) == 1  # nothing new to seal: no new version


def test_thin_and_fat_rows(filled_store):
    req = pa.table({"user_id": [3, 3, 99], "request_ts": [10**15] * 3, "example_id": ["a", "b", "c"],
                    "label": [1.0, 0.0, 1.0]})
    thin = filled_store.snapshot(req)
    assert thin.column_names[:2] == ["example_id", "label"]
    assert thin["version"].to_pylist() == [2, 2, 2]
    assert thin["tail_seq"].to_pylist()[2] == [] and thin["imm_hw"].to_pylist()[2] == 0
    fat = filled_store.snapshot(req, materialize=True, max_len=30)
    all_ev = filled_store.to_table().filter(pa.compute.equal(filled_store.to_table()["user_id"], 3))
    for c in ["seq", "ts", *COLUMNS]:
        assert fat[c].to_pylist()[0] == all_ev[c].to_pylist()[-30:]
    assert fat["seq"].to_pylist()[2] == []
    assert fat["example_id"].to_pylist() == ["a", "b", "c"]


def test_update_changes_mutable_values_only(filled_store):
    t = filled_store.to_table()
    mut = t.filter(pa.compute.invert(t["sealed"]))
    sealed = t.filter(t["sealed"])
    u, s = mut["user_id"][0].as_py(), mut["seq"][0].as_py()
    filled_store.update({"user_id": [u], "seq": [s], "item_id": [123456789]})
    row = filled_store.to_table().filter(pa.compute.and_(pa.compute.equal(t["user_id"], u),
                                                         pa.compute.equal(t["seq"], s)))
    assert row["item_id"].to_pylist() == [123456789]
    before = snapshot_all(filled_store)
    with pytest.raises(engine.ImmutableError, match="sealed"):
        filled_store.update({"user_id": [u, sealed["user_id"][0].as_py()],
                             "seq": [s, sealed["seq"][0].as_py()], "item_id": [1, 2]})
    with pytest.raises(engine.ImmutableError, match="does not exist"):
        filled_store.update({"user_id": [u], "seq": [10**9], "item_id": [1]})
    with pytest.raises(engine.ImmutableError, match="does not exist"):
        filled_store.update({"user_id": [12345], "seq": [0], "item_id": [1]})
    assert_unchanged(filled_store, before)


@pytest.mark.parametrize("bad, match", [
    (lambda e: e.pop("item_id"), "missing"),
    (lambda e: e.update(extra=e["ts"]), "unexpected"),
    (lambda e: e.update(item_id=e["item_id"].astype(float)), "type"),
    (lambda e: e.update(action=e["action"].astype(np.int64) + 2**40), "without loss"),
    (lambda e: e.update(ts=-e["ts"] - 1), "negative"),
    (lambda e: e.update(item_id=pa.array([None] * len(e["ts"]), pa.int64())), "null"),
    (lambda e: e.update(user_id=e["user_id"].astype(str)), "type"),
], ids=["missing", "extra", "float-into-int", "overflow", "negative-ts", "nulls", "string-user"])
def test_append_rejects_bad_input_and_changes_nothing(filled_store, rng, bad, match):
    ev = make_events(rng, range(5), 10)
    bad(ev)
    before = snapshot_all(filled_store)
    with pytest.raises(engine.SchemaError, match=match):
        filled_store.append(ev)
    assert_unchanged(filled_store, before)


def test_update_rejects_bad_input(filled_store):
    before = snapshot_all(filled_store)
    with pytest.raises(engine.SchemaError, match="ts"):
        filled_store.update({"user_id": [1], "seq": [0], "ts": [5]})
    with pytest.raises(engine.SchemaError, match="unexpected"):
        filled_store.update({"user_id": [1], "seq": [0], "colour": [5]})
    with pytest.raises(engine.SchemaError, match="missing"):
        filled_store.update({"user_id": [1], "item_id": [5]})
    assert_unchanged(filled_store, before)


def test_create_rejects_bad_schemas(tmp_path):
    with pytest.raises(engine.SchemaError, match="event_type_column"):
        engine.UIHStore.create(tmp_path / "a", columns={"item_id": "int64"})
    with pytest.raises(engine.SchemaError, match="dtype"):
        engine.UIHStore.create(tmp_path / "b", columns={"item_id": "int8", "action": "int32"})
    with pytest.raises(engine.SchemaError, match="reserved"):
        engine.UIHStore.create(tmp_path / "c", columns={"seq": "int64", "action": "int32"})


def test_snapshot_rejects_bad_requests(filled_store):
    with pytest.raises(engine.SchemaError, match="request_ts"):
        filled_store.snapshot({"user_id": [1]})
    with pytest.raises(engine.SchemaError, match="clashes"):
        filled_store.snapshot({"user_id": [1], "request_ts": [1], "imm_hw": [3]})
    with pytest.raises(engine.SchemaError, match="max_len"):
        filled_store.snapshot({"user_id": [1], "request_ts": [1]}, materialize=True, max_len=0)


def test_reopen_replays_log_and_keeps_everything(filled_store, tmp_path):
    before = snapshot_all(filled_store)
    filled_store.close()
    with engine.UIHStore.open(tmp_path / "store") as s:
        assert_unchanged(s, before)
        assert s.schema.columns == COLUMNS and list(s.schema.columns) == list(COLUMNS)


def test_compact_keeps_every_thin_row_valid(filled_store):
    req = {"user_id": np.arange(20), "request_ts": np.full(20, 10**15)}
    fat_before = filled_store.snapshot(req, materialize=True, max_len=10**6)
    v = filled_store.compact(full=True)
    assert v == 3 and filled_store.stats()["segments"] == 1
    assert filled_store.snapshot(req, materialize=True, max_len=10**6).equals(fat_before)
    assert filled_store.compact() == 3  # a single segment: nothing to merge


def test_pinned_reader_keeps_its_version(filled_store, tmp_path):
    old = engine.UIHStore.open(tmp_path / "store", version=1)
    t_old = old.to_table()
    filled_store.compact()
    filled_store.seal(10**15)
    assert old.version == 1 and old.to_table().filter(old.to_table()["sealed"]).equals(
        t_old.filter(t_old["sealed"]))
    with pytest.raises(engine.UIHError, match="pinned"):
        old.append({})
    with pytest.raises(engine.VersionError, match="no version 99"):
        engine.UIHStore.open(tmp_path / "store", version=99)


def test_second_writer_is_refused(filled_store, tmp_path, rng):
    other = engine.UIHStore.open(tmp_path / "store")
    assert not other.writable
    with pytest.raises(engine.UIHError, match="writer lock"):
        other.append(make_events(rng, [1], 1))
    other.close()


def test_corrupt_manifest_and_segment_are_detected(filled_store, tmp_path):
    filled_store.close()
    root = tmp_path / "store"
    from engine.serving import _manifest
    seg = root / _manifest.load(root)["segments"][0]["main"]["file"]  # a main file: to_table reads it
    raw = bytearray(seg.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    seg.write_bytes(bytes(raw))
    s = engine.UIHStore.open(root)
    with pytest.raises(engine.CorruptionError):
        s.to_table()
    s.close()
    man = sorted((root / "_manifests").glob("v*.json"))[-1]
    man.write_bytes(man.read_bytes().replace(b'"version": 2', b'"version": 7'))
    with pytest.raises(engine.CorruptionError, match="checksum"):
        engine.UIHStore.open(root)


def test_newer_format_is_refused(filled_store, tmp_path):
    from engine.serving import _manifest
    filled_store.close()
    body = _manifest.load(tmp_path / "store")
    body["format"] = 99
    body["version"] += 1
    import json
    import zlib
    text = json.dumps(body, sort_keys=True)
    (tmp_path / "store" / "_manifests" / f"v{body['version']:010d}.json").write_text(
        json.dumps({"crc32": zlib.crc32(text.encode()), "body": body}, sort_keys=True))
    for kw in ({}, {"read_only": True}):
        with pytest.raises(engine.VersionError, match="newer than this code"):
            engine.UIHStore.open(tmp_path / "store", **kw)


def test_torn_log_tail_is_dropped_and_bad_middle_is_corruption(store, tmp_path, rng):
    from test_store_integrity import crash
    store.append(make_events(rng, [1, 2], 10))
    store.append(make_events(rng, [1, 2], 10))
    crash(store)  # a torn tail comes from a crash (a clean close records the log's length: a cut is corruption)
    log = next((tmp_path / "store" / "log").glob("*.log"))
    full = log.read_bytes()
    log.write_bytes(full[:-7])  # a crash mid-write of the second record
    s = engine.UIHStore.open(tmp_path / "store")
    assert len(s.to_table()) == 10
    assert s.append(make_events(rng, [1], 1)).tolist() in ([5], [6], [7], [8], [9], [10], [4], [3])
    s.close()
    raw = bytearray(log.read_bytes())
    raw[40] ^= 0xFF  # inside the first record, with a valid record after it
    log.write_bytes(bytes(raw))
    with pytest.raises(engine.CorruptionError):
        engine.UIHStore.open(tmp_path / "store")


def test_rare_event_types_get_a_sidecar(store, rng):
    ev = make_events(rng, range(10), 2000)
    ev["action"] = np.where(rng.random(2000) < 0.05, 7, ev["action"] % 2).astype(np.int32)
    store.append(ev)
    store.seal(10**15)
    st = store.stats()
    assert st["rare_types"] == [7] and 0 < st["sidecar_bytes"] < st["segment_bytes"] / 4


def test_tiered_compaction_leaves_a_large_base_alone(store, rng):
    from engine.serving._compaction import plan
    assert plan([1000, 10, 10, 10, 10]) == (1, 5) and plan([10, 10]) == (2, 2) and plan([5]) == (1, 1)
    assert plan([10, 12, 9, 11, 40]) == (0, 4) and plan([10, 12, 9, 11, 15]) == (0, 4)
    store.append(make_events(rng, range(5), 3000, t0=0, span=1000))
    store.seal(2000)
    for d in range(4):
        store.append(make_events(rng, range(5), 30, t0=3000 + d * 1000, span=1000))
        store.seal(4000 + d * 1000)
    base = store._manifest["segments"][0]["id"]
    store.compact()
    segs = store._manifest["segments"]
    assert len(segs) == 2 and segs[0]["id"] == base and segs[1]["main"]["rows"] == 120
