"""The engine's public names that tools measuring a store use (the ``uih`` app imports nothing else)."""

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import engine
from engine._ragged import range_indices
from uih.fatrows import _batches_of, _ranges
from uih.workload import random_events as make_events


def _sealed(store, rng):
    ev = make_events(rng, range(30), 30_000, t0=0, span=10_000)
    ev["action"] = rng.choice(4, len(ev["ts"]), p=[0.77, 0.15, 0.05, 0.03]).astype(np.int32)
    store.append(ev)
    store.seal(10**9)


def test_segments_describe_each_part_and_the_part_a_tenant_reads(store, rng):
    assert store.segments == ()
    _sealed(store, rng)
    (seg,) = store.segments
    assert isinstance(seg, engine.SegmentInfo) and list(seg.parts) == ["main", "rare", "uncommon"]
    main, rare, uncommon = seg.parts.values()
    assert main.event_types is None and rare.event_types == (2, 3) and uncommon.event_types == (1, 2, 3)
    assert main.rows == 30_000 > uncommon.rows > rare.rows > 0
    for part in seg.parts.values():
        assert part.bytes == (store.root / part.file).stat().st_size
        tail = (store.root / part.file).read_bytes()[-8:]  # the footer's length and the closing magic
        assert part.footer_bytes == int.from_bytes(tail[:4], "little") + 8 and tail[4:] == b"PAR1"
        assert part.index_bytes > 0
    assert seg.part_for([3]) is rare and seg.part_for([1, 3]) is uncommon
    assert seg.part_for([0, 1]) is main and seg.part_for(None) is main and seg.part_for() is main
    with pytest.raises(dataclasses.FrozenInstanceError):
        main.bytes = 0
    with pytest.raises(TypeError):
        seg.parts["main"] = rare  # read-only: the store's manifest is not edited through it
    assert store.stats()["sidecar_bytes"] == rare.bytes + rare.index_bytes + uncommon.bytes + uncommon.index_bytes


def test_versions_lists_a_stores_versions_without_opening_it(store, rng, tmp_path):
    _sealed(store, rng)
    assert engine.UIHStore.versions(store.root) == engine.UIHStore.versions(str(store.root)) == [0, 1]
    assert engine.UIHStore.versions(store.root) == store.stats()["versions"]
    assert engine.UIHStore.versions(tmp_path / "nothing") == []


def test_write_parquet_writes_like_a_segment(store, rng, tmp_path):
    _sealed(store, rng)
    main = store.segments[0].parts["main"]
    table = pq.read_table(store.root / main.file)
    engine.write_parquet(tmp_path / "copy.parquet", table)
    copy = pq.ParquetFile(tmp_path / "copy.parquet")
    assert copy.read().equals(table)
    assert (tmp_path / "copy.parquet").stat().st_size == main.bytes  # the same encodings, row groups, checksums


def test_parquet_files_lists_a_thin_source(tmp_path):
    for name in ["b.parquet", "a.parquet", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in engine.parquet_files(tmp_path)] == ["a.parquet", "b.parquet"]
    assert engine.parquet_files([tmp_path / "b.parquet", tmp_path]) == [tmp_path / "b.parquet", *
                                                                        engine.parquet_files(tmp_path)]
    with pytest.raises(engine.SchemaError):
        engine.parquet_files(tmp_path / "missing")


def test_fat_row_ranges_match_the_engine(rng):
    for _ in range(20):
        n = int(rng.integers(0, 12))
        starts, counts = rng.integers(0, 50, n), rng.integers(0, 4, n) * (rng.random(n) < 0.7)
        got = _ranges(starts.astype(np.int64), counts.astype(np.int64))
        assert got.dtype == np.int64 and np.array_equal(got, range_indices(starts, counts))


@pytest.mark.parametrize("sizes,rows", [([5, 3, 9, 1], 4), ([4, 4], 4), ([], 3), ([2, 0, 1], 5)])
def test_fat_row_batches_are_whole_and_contiguous(sizes, rows):
    start, batches = 0, []
    for n in sizes:
        batches.append(pa.record_batch({"x": pa.array(np.arange(start, start + n))}))
        start += n
    got = list(_batches_of(batches, rows))
    assert all(isinstance(b, pa.RecordBatch) for b in got)
    assert [b.num_rows for b in got] == [rows] * (start // rows) + ([start % rows] if start % rows else [])
    assert np.array_equal(np.concatenate([b["x"].to_numpy() for b in got] or [np.zeros(0, np.int64)]),
                          np.arange(start))
