"""Acknowledged log length: a log cut before the last durable marker (the newest manifest's
``log_bytes``/``log_crc32``, or HEAD's from a writer open or clean close) is a CorruptionError and
nothing is truncated; a torn tail after it is dropped by readers and cut off by the writer."""

import struct
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from test_store_integrity import crash, record_starts, tree

import engine
from engine.serving import _log, _manifest
from uih.workload import COLUMNS
from uih.workload import random_events as make_events

DAY = 86_400_000_000
KINDS = ({}, {"read_only": True})


@pytest.fixture
def sealed(tmp_path, rng):
    """A store whose newest version was sealed with 3 days of events still mutable (carried into the new
    log: the manifest's marker), then given two more records: an append and an update. Not closed."""
    root = tmp_path / "s"
    s = engine.UIHStore.create(root, columns=COLUMNS)
    s.append(make_events(rng, range(6), 400, t0=0, span=4 * DAY))
    s.seal(DAY)
    m = _manifest.load(root)
    log = root / m["log"]
    assert m["log_bytes"] == log.stat().st_size > 0 and m["log_crc32"] != 0
    s.append(make_events(rng, range(6), 20, t0=5 * DAY, span=DAY))
    mutable = s.to_table().filter(pc.invert(s.to_table()["sealed"]))
    s.update({"user_id": mutable["user_id"].to_numpy()[:1], "seq": mutable["seq"].to_numpy()[:1], "item_id": [5]})
    return root, s, log, m["log_bytes"]


def cuts(raw, upto):
    """Every record boundary before ``upto`` (0 excepted: an empty file), and a few bytes inside records."""
    starts = [p for p in record_starts(raw) if 0 < p < upto]
    return sorted({*starts, 1, upto - 1, *(p + 7 for p in starts if p + 7 < upto)})


def test_manifest_records_log_bytes_at_seal_and_compact(sealed, rng):
    root, s, log, marker = sealed
    s.seal(2 * DAY)
    s.seal(3 * DAY)
    s.append(make_events(rng, range(6), 10, t0=6 * DAY, span=DAY))
    s.compact(full=True)
    m = _manifest.load(root)
    assert m["log_bytes"] == (root / m["log"]).stat().st_size == s._log.size  # compact shares the log
    assert m["prev_crc32"] == _manifest.crc_of(_manifest.load(root, m["version"] - 1))
    s.close()


def test_a_cut_before_the_manifest_marker_is_corruption_and_changes_nothing(sealed):
    root, s, log, marker = sealed
    crash(s)
    full = log.read_bytes()
    for cut in cuts(full, marker) + [0]:
        log.write_bytes(full[:cut])
        before = tree(root)
        for kw in KINDS:
            # a writer's replay and a reader's length check (``_publish.check_log``) word it differently; both
            # name the log and the acknowledged length
            said = rf"{log.name}.*({marker} bytes of it were acknowledged|acknowledged {marker}\b)"
            with pytest.raises(engine.CorruptionError, match=said):
                engine.UIHStore.open(root, **kw)
        assert tree(root) == before, cut  # no truncation, no deletion, not even HEAD rewritten


def test_a_torn_tail_after_the_marker_is_dropped_as_before(sealed):
    root, s, log, marker = sealed
    want = s.to_table()
    crash(s)
    full = log.read_bytes()
    starts = record_starts(full)
    assert starts[1] == marker and len(starts) == 3  # carried-over record, then the append and the update
    for cut in [marker, marker + 1, starts[2], starts[2] + 9, len(full) - 1]:
        log.write_bytes(full[:cut])
        kept = max(p for p in [*starts, len(full)] if p <= cut)
        with engine.UIHStore.open(root, read_only=True) as r:
            n = r.to_table().num_rows
        assert n == want.num_rows - (20 if cut < starts[2] else 0)  # the append's 20 rows, once whole
        assert log.stat().st_size == cut
        with engine.UIHStore.open(root) as w:
            assert w.to_table().num_rows == n
        assert log.stat().st_size == kept  # cut exactly the torn bytes, never below the marker


def test_a_clean_close_records_the_whole_log(sealed):
    """After ``close`` every record is behind a marker: a cut anywhere, at a boundary too, is corruption."""
    root, s, log, marker = sealed
    s.close()
    full = log.read_bytes()
    assert _manifest.read_head(root)["log_bytes"] == len(full) > marker
    for cut in cuts(full, len(full)):
        log.write_bytes(full[:cut])
        before = tree(root)
        for kw in KINDS:
            with pytest.raises(engine.CorruptionError, match="acknowledged"):
                engine.UIHStore.open(root, **kw)
        assert tree(root) == before
    log.write_bytes(full)
    with engine.UIHStore.open(root):
        pass


def test_the_writer_open_after_a_crash_records_what_it_recovered(sealed):
    root, s, log, marker = sealed
    crash(s)
    full = log.read_bytes()
    log.write_bytes(full[:-5])  # the update record torn by the crash
    with engine.UIHStore.open(root):  # drops it, and records the rest as acknowledged
        pass
    kept = log.read_bytes()
    assert len(kept) == record_starts(full)[-1] and _manifest.read_head(root)["log_bytes"] == len(kept)
    log.write_bytes(kept[:record_starts(full)[-2]])  # now the append record is behind a marker
    with pytest.raises(engine.CorruptionError, match="acknowledged"):
        engine.UIHStore.open(root, read_only=True)


def test_a_record_removed_from_the_middle_is_corruption(sealed):
    """Each record carries its offset and the previous record's chain value: splicing one out is caught
    even after every marker (a boundary cut there is otherwise indistinguishable from a torn tail)."""
    root, s, log, marker = sealed
    s.append(make_events(np.random.default_rng(1), range(6), 5, t0=7 * DAY, span=DAY))
    crash(s)
    full = log.read_bytes()
    a, b, c = record_starts(full)[1:4]
    log.write_bytes(full[:a] + full[b:])  # the first record after the marker removed
    for kw in KINDS:
        with pytest.raises(engine.CorruptionError, match=rf"record at byte {a} was written at byte {b}"):
            engine.UIHStore.open(root, **kw)


def test_a_log_record_written_by_format_2_code_chains_into_new_records(tmp_path, rng):
    """A store written before format 3 holds records without chain and offset; new records follow them."""
    path = tmp_path / "a.log"
    t = pa.table({"user_id": [1, 2], "seq": [0, 0], "ts": [5, 6]})
    payload = _log._encode(t)
    body = _log._V2.pack(_log.V2_MAGIC, _log.APPEND, payload.size, zlib.crc32(payload), 0)[:-4]
    header = body + struct.pack("<I", zlib.crc32(body))
    path.write_bytes(header + payload.to_pybytes())
    log = _log.AppendLog(path)
    assert log.chain == _log.chain_of(header)
    log.append(_log.APPEND, t)
    log.close()
    got = _log.recover(path, acked=(log.size, log.chain))
    assert len(got.records) == 2 and got.end == path.stat().st_size
