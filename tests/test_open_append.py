"""Read-only opens check but do not decode: the log's framing is checked at open, its records are
decoded when the reader first reads the mutable tier (and only the records checked then), and no seq
counter is built. Appends sort their rows by (user_id, seq) from the seq counter's slots and choose
the log's encodings once per log."""

import numpy as np
import pyarrow as pa
import pytest
from test_store_integrity import record_starts, tree

import engine
from engine.serving import _log, _manifest, _mutable, _segment_index
from uih.workload import COLUMNS
from uih.workload import random_events as make_events

DAY = 86_400_000_000


@pytest.fixture
def sealed(tmp_path, rng):
    """A closed store with a sealed segment and mutable events in its log; (root, every event)."""
    root = tmp_path / "s"
    with engine.UIHStore.create(root, columns=COLUMNS) as s:
        s.append(make_events(rng, range(8), 400, t0=0, span=2 * DAY))
        s.seal(DAY)
        s.append(make_events(rng, range(8), 50, t0=3 * DAY, span=DAY))
        return root, s.to_table()


def counting(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def wrapper(*a, **kw):
        calls.append(name)
        return real(*a, **kw)
    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_a_read_only_open_decodes_no_log_record_and_reads_no_index(sealed, monkeypatch):
    root, want = sealed
    decoded = counting(monkeypatch, _log.pq, "read_table")
    indexes = counting(monkeypatch, _segment_index, "load")
    before = tree(root)
    with engine.UIHStore.open(root, read_only=True) as r:
        assert r._tier is None and r._counter is None
        assert not decoded and not indexes
        assert r.to_table().equals(want)  # the mutable tier decoded on first use
        assert decoded and r._counter is None
    assert tree(root) == before


def test_a_damaged_payload_fails_the_read_only_open_itself(sealed):
    root, _ = sealed
    log = root / _manifest.load(root)["log"]
    raw = bytearray(log.read_bytes())
    raw[record_starts(bytes(raw))[-1] + 60] ^= 0x10  # inside the last record's payload
    log.write_bytes(bytes(raw))
    with pytest.raises(engine.CorruptionError, match="payload checksum"):
        engine.UIHStore.open(root, read_only=True)


def test_a_reader_decodes_what_it_checked_at_open_and_nothing_appended_since(sealed, rng):
    root, want = sealed
    with engine.UIHStore.open(root, read_only=True) as r, engine.UIHStore.open(root) as w:
        w.append(make_events(rng, range(8), 30, t0=5 * DAY, span=DAY))
        assert r.to_table().equals(want)


def test_a_log_damaged_after_the_open_is_corruption_when_the_reader_decodes_it(sealed):
    root, _ = sealed
    r = engine.UIHStore.open(root, read_only=True)
    log = root / r._manifest["log"]
    raw = bytearray(log.read_bytes())
    raw[-3] ^= 0x01
    log.write_bytes(bytes(raw))
    with pytest.raises(engine.CorruptionError, match="payload checksum"):
        r.to_table()
    r.close()


def test_slot_order_is_a_stable_sort_by_slot(rng):
    slot = rng.integers(0, 50, 5000)
    assert np.array_equal(_mutable._slot_order(slot, 50), np.argsort(slot, kind="stable"))
    assert len(_mutable._slot_order(np.zeros(0, np.int64), 0)) == 0


def test_append_logs_its_rows_in_key_order_and_returns_input_order_seqs(store, rng):
    ev = make_events(rng, rng.integers(0, 1 << 40, 30), 2000)
    store.append(make_events(rng, ev["user_id"][:5], 7))  # some users already have seqs
    seq = store.append(ev)
    t = _log.recover(store._log.path).records[-1][1]
    key = np.lexsort((t["seq"].to_numpy(), t["user_id"].to_numpy()))
    assert np.array_equal(key, np.arange(len(key)))  # the payload is sorted by (user_id, seq)
    got = {(u, s): i for u, s, i in zip(t["user_id"].to_numpy(), t["seq"].to_numpy(), t["item_id"].to_numpy())}
    assert [got[(u, s)] for u, s in zip(ev["user_id"], seq)] == list(ev["item_id"])


def test_encodings_are_chosen_once_per_store_handle_not_per_append(store, rng, monkeypatch):
    chosen = counting(monkeypatch, _log, "choose_encodings")
    small = _log.CHOOSE_ROWS // 2
    store.append(make_events(rng, range(20), small, t0=0, span=DAY))
    assert not chosen  # too small a sample: defaults, no choice yet
    for d in range(3):
        store.append(make_events(rng, range(20), _log.CHOOSE_ROWS, t0=d * DAY, span=DAY))
    assert len(chosen) == 1
    store.seal(DAY)  # the new log keeps the choice for the carried-over rows and what follows
    store.append(make_events(rng, range(20), _log.CHOOSE_ROWS, t0=4 * DAY, span=DAY))
    assert len(chosen) == 1
    mut = store.to_table().filter(pa.compute.invert(store.to_table()["sealed"]))
    store.update({"user_id": mut["user_id"].to_numpy()[:2], "seq": mut["seq"].to_numpy()[:2], "item_id": [1, 2]})
    want = store.to_table()
    store.close()
    with engine.UIHStore.open(store.root, read_only=True) as r:
        assert r.to_table().equals(want)
