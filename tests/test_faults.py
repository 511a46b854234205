"""Fault injection: a write or fsync failing (ENOSPC, EIO) anywhere inside append, update, seal, compact or
expire leaves a store that reads, and reopens, exactly as before the call (docs/errors.md)."""

import errno
import os

import numpy as np
import pyarrow as pa
import pytest
from test_store import assert_unchanged, snapshot_all

import engine
from engine.serving import _durable, _log, _manifest, _retention, _segments
from uih.workload import random_events as make_events

DAY = 86_400_000_000


class Faults:
    """Counts fsyncs, or writes and removals, and fails the ``at``-th with ``err`` (a write after writing half)."""

    def __init__(self, monkeypatch, kind, at, err, store):
        self.kind, self.at, self.err, self.calls = kind, at, err, 0
        self._store = store
        if kind == "fsync":
            real = os.fsync
            monkeypatch.setattr(os, "fsync", lambda fd: self._maybe_fail() or real(fd))
        else:
            for mod in (_log, _durable):
                monkeypatch.setattr(mod, "open", self._open, raising=False)
            store._log._f = _FailingFile(store._log._f, self)  # the open log file
            real_unlink = os.unlink  # expire writes nothing: its "writes" are removals
            monkeypatch.setattr(os, "unlink", lambda p, *a, **k: self._maybe_fail() or real_unlink(p, *a, **k))
            real_pq = _segments.pq.write_table

            def write_table(table, where, **kw):
                if self._hit():
                    with open(where, "wb") as f:
                        f.write(b"PAR1 partial")
                    self._raise()
                return real_pq(table, where, **kw)
            monkeypatch.setattr(_segments.pq, "write_table", write_table)

    def disarm(self):
        log = self._store._log
        if log is not None and isinstance(log._f, _FailingFile):
            log._f = log._f._f

    def _hit(self):
        self.calls += 1
        return self.calls == self.at

    def _raise(self):
        raise OSError(self.err, os.strerror(self.err))

    def _maybe_fail(self):
        if self._hit():
            self._raise()

    def _open(self, path, mode="r", *a, **k):
        f = open(path, mode, *a, **k)
        return _FailingFile(f, self) if any(c in mode for c in "wa") else f


class _FailingFile:
    def __init__(self, f, faults):
        self._f, self._faults = f, faults

    def write(self, data):
        if self._faults._hit():
            self._f.write(bytes(memoryview(data)[: len(memoryview(data)) // 2]))  # a short write, then ENOSPC
            self._faults._raise()
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def mutable_rows(store):
    t = store.to_table()
    return t.filter(pa.compute.invert(t["sealed"]))


OPS = {
    "append": lambda s, rng: s.append(make_events(rng, range(6), 40, t0=3 * DAY, span=DAY)),
    "update": lambda s, rng: s.update({"user_id": mutable_rows(s)["user_id"].to_numpy()[:5],
                                       "seq": mutable_rows(s)["seq"].to_numpy()[:5],
                                       "item_id": np.arange(5) + 10**9}),
    "seal": lambda s, rng: s.seal(3 * DAY - DAY // 2),
    "compact": lambda s, rng: s.compact(full=True),
    "expire": lambda s, rng: s.expire(keep_versions=1, grace_s=0),
}


def check_whole(root):
    """Every remaining version opens and names only files that exist."""
    live = _retention.referenced(root)
    assert live is not None and all((root / rel).exists() for rel in live)
    for v in _manifest.versions(root):
        with engine.UIHStore.open(root, version=v) as s:
            s.to_table()


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
@pytest.mark.parametrize("kind", ["fsync", "write"])
@pytest.mark.parametrize("op", list(OPS))
def test_a_failing_write_or_fsync_leaves_the_store_as_before(filled_store, tmp_path, monkeypatch, rng, op, kind,
                                                             err):
    root = tmp_path / "store"
    store = filled_store
    failures = 0
    for at in range(1, 60):
        before = snapshot_all(store)
        files_before = set(_retention.data_files(root))
        with monkeypatch.context() as m:
            faults = Faults(m, kind, at, err, store)
            try:
                OPS[op](store, np.random.default_rng(at))
                failed = False
            except OSError as e:
                assert e.errno == err
                failed = True
            finally:
                faults.disarm()
        if not failed:
            assert faults.calls < at  # the call ran to the end without reaching the fault: done
            break
        failures += 1
        if op != "expire":
            assert_unchanged(store, before)  # the same handle, in memory
            assert set(_retention.data_files(root)) <= files_before | {store._manifest["log"]}
        with engine.UIHStore.open(root, read_only=True) as r:
            assert_unchanged(r, before)  # what a reader (or a process after a crash) sees
        store.close()
        store = engine.UIHStore.open(root)  # the writer's open repairs what the failure left
        assert_unchanged(store, before)
        check_whole(root)
    assert failures >= 1  # the op reached at least one write or fsync
    store.close()
