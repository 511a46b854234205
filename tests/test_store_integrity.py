"""Log integrity (torn tail vs corruption), read-only readers, the writer lock, store identity, typed errors."""

import builtins
import gc
import hashlib
import os
import struct

import numpy as np
import pyarrow as pa
import pytest

import engine
from engine.serving import _log
from uih.workload import COLUMNS
from uih.workload import random_events as make_events


def tree(root):
    """Every path under ``root`` with its bytes' digest: equal trees mean nothing was written."""
    out = {}
    for d, _, files in os.walk(root):
        out[d] = None
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[p] = hashlib.sha1(fh.read()).hexdigest()
    return out


def log_of(root):
    from engine.serving import _manifest
    return root / _manifest.load(root)["log"]


def record_starts(raw):
    """Byte offsets of the records of a (new-format) log."""
    pos, out = 0, []
    while pos < len(raw):
        out.append(pos)
        pos += _log._HEADER.size + struct.unpack_from("<Q", raw, pos + 8)[0]
    return out


def crash(store):
    """Leave ``store`` as a killed writer would: files closed, lock released, no clean close (so the log's
    acknowledged length is recorded only as of the last commit, and the records after it can be torn)."""
    store._log.close()
    store._log = None
    store._lock.release()
    store._lock = None


@pytest.fixture
def logged(store, rng, tmp_path):
    """A crashed store whose log holds three records (append, update, append) and nothing sealed."""
    store.append(make_events(rng, [1, 2], 10))
    store.update({"user_id": [1], "seq": [0], "item_id": [77]})
    store.append(make_events(rng, [1, 2], 10))
    want = store.to_table()
    crash(store)
    return tmp_path / "store", want


# ---- 1. log integrity -------------------------------------------------------------------------------
def test_every_torn_tail_is_dropped_by_readers_and_cut_only_by_the_writer(logged):
    root, want = logged
    log = log_of(root)
    full = log.read_bytes()
    last = record_starts(full)[-1]
    for cut in [last + 1, last + 5, last + _log._HEADER.size - 1, last + _log._HEADER.size,
                last + _log._HEADER.size + 3, len(full) - 1]:
        log.write_bytes(full[:cut])
        with engine.UIHStore.open(root, read_only=True) as r:
            assert len(r.to_table()) == 10  # the last record (10 events) is torn: dropped
        assert log.stat().st_size == cut  # a reader never repairs
        with engine.UIHStore.open(root) as w:
            assert len(w.to_table()) == 10
        assert log.stat().st_size == last  # the writer cut exactly the torn bytes, nothing valid
    log.write_bytes(full)
    with engine.UIHStore.open(root) as w:
        assert w.to_table().equals(want)


@pytest.mark.parametrize("field, offset", [("magic", 1), ("kind", 4), ("length", 8), ("length-high", 14),
                                           ("payload-crc", 17), ("prev-chain", 21), ("offset", 25),
                                           ("header-crc", 33), ("payload", 40)])
@pytest.mark.parametrize("which", ["first", "last"])
def test_damage_anywhere_is_corruption_naming_file_and_offset(logged, field, offset, which):
    root, _ = logged
    log = log_of(root)
    full = log.read_bytes()
    at = record_starts(full)[0 if which == "first" else -1]
    raw = bytearray(full)
    raw[at + offset] ^= 0x5A
    log.write_bytes(bytes(raw))
    for kw in ({}, {"read_only": True}):
        with pytest.raises(engine.CorruptionError, match=rf"{log.name}.* at byte {at}"):
            engine.UIHStore.open(root, **kw)
        assert log.read_bytes() == bytes(raw)  # nothing truncated, nothing deleted


def test_legacy_log_records_are_still_read(store, rng, tmp_path):
    ev = make_events(rng, [1, 2], 10)
    store.append(ev)
    want = store.to_table()
    store.close()
    log = log_of(tmp_path / "store")
    kind, table = _log.AppendLog.replay(log)[0]
    payload = _log._encode(table)
    crc = __import__("zlib").crc32(payload, __import__("zlib").crc32(struct.pack("<BQ", kind, payload.size)))
    log.write_bytes(_log._LEGACY.pack(_log.LEGACY_MAGIC, kind, payload.size, crc) + payload.to_pybytes())
    (tmp_path / "store" / "_manifests" / "HEAD").unlink()  # a store of that time had no HEAD
    with engine.UIHStore.open(tmp_path / "store") as s:
        assert s.to_table().equals(want)
        s.append(make_events(rng, [1], 3))  # new-format records after legacy ones
    with engine.UIHStore.open(tmp_path / "store") as s:
        assert len(s.to_table()) == 13


# ---- 2. read-only means read-only --------------------------------------------------------------------
@pytest.fixture
def no_writes_under(monkeypatch):
    """Make every write-like call under a folder raise PermissionError, as on a read-only mount."""
    def arm(root):
        root = os.path.realpath(root)
        under = lambda p: os.path.realpath(os.fspath(p)).startswith(root)  # noqa: E731

        def deny(p):
            raise PermissionError(13, "read-only test mount", os.fspath(p))

        real_open, real_os_open = builtins.open, os.open

        def fake_open(file, mode="r", *a, **k):
            if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and under(file):
                deny(file)
            return real_open(file, mode, *a, **k)

        def fake_os_open(path, flags, *a, **k):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC) and under(path):
                deny(path)
            return real_os_open(path, flags, *a, **k)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)
        for name in ("unlink", "remove", "rename", "replace", "truncate", "mkdir", "rmdir"):
            real = getattr(os, name)
            monkeypatch.setattr(os, name, lambda p, *a, _r=real, **k: deny(p) if under(p) else _r(p, *a, **k))
    return arm


def test_read_paths_never_lock_write_truncate_or_delete(filled_store, tmp_path, rng, no_writes_under, capsys):
    from uih.cli import main
    root = tmp_path / "store"
    filled_store.append(make_events(rng, [1, 2], 5))
    (root / "segments" / "stray.bin").write_bytes(b"x")  # inspect reads; it must not delete unknown files
    log = log_of(root)
    log.write_bytes(log.read_bytes()[:-9])  # a torn tail that only a writer may repair
    crash(filled_store)  # (a torn tail is what a crash leaves; a clean close records the log's length)
    (root / "LOCK").unlink()
    before = tree(root)
    no_writes_under(root)
    with engine.UIHStore.open(root, read_only=True) as r:
        assert len(r.to_table()) > 0 and not r.writable
        r.snapshot({"user_id": [1], "request_ts": [10**15]})
        with pytest.raises(engine.UIHError, match="read_only=True"):
            r.append(make_events(rng, [1], 1))
    with engine.UIHStore.open(root, version=1) as pinned:
        assert pinned.version == 1 and len(pinned.to_table())
    with engine.UIHStore.open(root) as fallback:  # cannot take the lock: a reader, not an error
        assert not fallback.writable
        with pytest.raises(engine.UIHError, match="may not write"):
            fallback.seal(10**15)
    assert main(["inspect", str(root)]) == 0
    assert "reclaimable" in capsys.readouterr().out
    assert tree(root) == before and not (root / "LOCK").exists()


def test_reader_while_the_writer_holds_the_lock_sees_the_newest_version(filled_store, tmp_path, rng):
    r = engine.UIHStore.open(tmp_path / "store", read_only=True)
    assert r.version == filled_store.version and r.to_table().equals(filled_store.to_table())
    r.close()


# ---- 5. the writer lock ------------------------------------------------------------------------------
def test_writer_lock_is_released_by_garbage_collection(tmp_path, rng):
    s = engine.UIHStore.create(tmp_path / "s", columns=COLUMNS)
    s.append(make_events(rng, [1], 3))
    other = engine.UIHStore.open(tmp_path / "s")
    assert not other.writable
    with pytest.raises(engine.UIHError, match="this same process holds the writer lock"):
        other.append(make_events(rng, [1], 1))
    other.close()
    s = None  # noqa: F841 - dropping the only reference must release the lock
    gc.collect()
    w = engine.UIHStore.open(tmp_path / "s")
    assert w.writable
    w.append(make_events(rng, [1], 1))
    w.close()


# ---- 7. store identity -------------------------------------------------------------------------------
def test_thin_rows_of_another_store_are_refused(filled_store, tmp_path, rng):
    twin = engine.UIHStore.create(tmp_path / "twin", columns=COLUMNS)
    day = 86_400_000_000
    for d in range(3):  # same users and enough events that every pointer "fits" the twin too
        twin.append(make_events(rng, range(20), 600, t0=d * day, span=day))
        twin.seal((d + 1) * day)
    thin = filled_store.snapshot({"user_id": np.arange(20), "request_ts": np.full(20, 10**15)})
    assert isinstance(filled_store.store_id, str) and filled_store.store_id != twin.store_id
    assert set(thin["store_id"].cast(pa.string()).to_pylist()) == {filled_store.store_id}
    proj = engine.Projection(["item_id"], max_len=8)
    engine.Reconstructor(filled_store, proj, device="cpu").reconstruct(thin)
    with pytest.raises(engine.VersionError, match="another|cannot be reconstructed"):
        engine.Reconstructor(twin, proj, device="cpu").reconstruct(thin)
    twin.close()
    reopened = engine.UIHStore.open(tmp_path / "store", read_only=True)
    assert reopened.store_id == filled_store.store_id


# ---- 8. typed errors, the store unchanged ------------------------------------------------------------
def test_bad_calls_raise_typed_errors_and_change_nothing(filled_store, tmp_path):
    from test_store import assert_unchanged, snapshot_all
    before = snapshot_all(filled_store)
    thin = filled_store.snapshot({"user_id": [1, 2], "request_ts": [10**15, -(10**15)]})
    for bad in (None, "1600000", 1.5, True, 1 << 70):
        with pytest.raises(engine.SchemaError, match="cutoff_ts"):
            filled_store.seal(bad)
    with pytest.raises(engine.SchemaError, match="not event columns"):
        engine.Projection(["user_id"])
    with pytest.raises(engine.SchemaError, match="max_len"):
        engine.Projection(["item_id"], max_len=1 << 40)
    with pytest.raises(engine.InvalidArgument, match="keep_versions"):
        filled_store.expire(keep_versions=0)
    with pytest.raises(engine.InvalidArgument, match="grace_s"):
        filled_store.expire(grace_s=float("nan"))
    with pytest.raises(engine.SchemaError, match="does not exist"):
        list(engine.Reconstructor(filled_store, engine.Projection(["item_id"]), device="cpu")
             .iter_batches(tmp_path / "nowhere.parquet", batch_size=4))
    assert_unchanged(filled_store, before)
    huge = engine.Projection(["item_id", "ts"], max_len=4096, window_us=1 << 70)
    b = engine.Reconstructor(filled_store, huge, device="cpu").reconstruct(thin)
    full = engine.Projection(["item_id", "ts"], max_len=4096)
    ref = engine.Reconstructor(filled_store, full, device="cpu").reconstruct(thin)
    assert np.array_equal(b["lengths"], ref["lengths"]) and ref["lengths"][1] > 0


def test_window_start_saturates_instead_of_wrapping(filled_store):
    thin = filled_store.snapshot({"user_id": [3], "request_ts": [-5]})
    w = engine.Reconstructor(filled_store, engine.Projection(["ts"], max_len=10**4, window_us=(1 << 63) - 1),
                             device="cpu").reconstruct(thin)
    n = len(filled_store.to_table().filter(pa.compute.equal(filled_store.to_table()["user_id"], 3)))
    assert int(w["lengths"][0]) == n > 0


@pytest.mark.parametrize("columns", [{"x": "string", "action": "int32"}, ["item_id"], {"x": object}, None])
def test_create_with_bad_columns_is_a_schema_error(tmp_path, columns):
    with pytest.raises(engine.SchemaError):
        engine.UIHStore.create(tmp_path / "s", columns=columns)


def test_open_of_what_is_not_a_store_is_typed_and_creates_nothing(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    for p in (tmp_path / "missing", tmp_path / "file", tmp_path / "empty"):
        for kw in ({}, {"read_only": True}, {"version": 0}):
            with pytest.raises(engine.CorruptionError, match="UIH store"):
                engine.UIHStore.open(p, **kw)
    assert not (tmp_path / "missing").exists() and list((tmp_path / "empty").iterdir()) == []


@pytest.mark.parametrize("fmt", [1, 2])
def test_format_1_and_2_stores_are_still_read_and_written(filled_store, tmp_path, rng, fmt):
    import json
    import zlib

    from engine.serving import _manifest
    root = tmp_path / "store"
    want = filled_store.to_table()
    filled_store.close()
    (root / _manifest.DIR / _manifest.HEAD).unlink()  # format 3 added HEAD ...
    for v in _manifest.versions(root):
        body = _manifest.load(root, v)
        for k in ("prev_crc32", "log_bytes", "log_crc32"):  # ... and these keys
            body.pop(k, None)
        body["format"] = fmt
        if fmt == 1:  # strip what format 2 added
            for k in ("store_id", "committed_at"):
                body.pop(k)
            for e in body["segments"]:
                for part in (e["main"], e["rare"]):
                    if part:
                        part.pop("footer_bytes")
                        part.pop("footer_crc")
        text = json.dumps(body, sort_keys=True)
        _manifest.path_of(root, v).write_text(json.dumps({"crc32": zlib.crc32(text.encode()), "body": body}))
    with engine.UIHStore.open(root, read_only=True) as s:
        assert s.to_table().equals(want)
    with engine.UIHStore.open(root) as s:
        assert s.to_table().equals(want) and s.store_id.startswith("legacy-") == (fmt == 1)
        assert _manifest.read_head(root)["version"] == s.version  # the writer open starts keeping HEAD
        thin = s.snapshot({"user_id": [1], "request_ts": [10**15]})
        s.seal(10**15)
        rec = engine.Reconstructor(s, engine.Projection(["item_id"], max_len=10**4), device="cpu")
        assert int(rec.reconstruct(thin)["lengths"][0]) == len(want.filter(pa.compute.equal(want["user_id"], 1)))
