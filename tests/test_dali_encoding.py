"""The DALI operator's plans (``dali_plugin._kernel_plan``): what ``encode_chunk``/``encode_share`` write,
the compiled ``decode`` reads back, field for field, each from its named word."""

import ast
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from test_dali import store_with_tails

import engine
import kernels
from dali_plugin._kernel_plan import ChunkWord, ShareWord, decode, encode_chunk, encode_share
from engine.training._unassembled import Column, FilterLanes, Lane, Unassembled

SOURCE_FIELDS = kernels.Source._fields


# --- a synthetic batch: every size and value chosen, so that each header word can be varied alone ---

BASE = dict(max_len=9, right=False, runs=3, use_types=False, use_window=False, type_base=11, types=5,
            columns=((8, 1), (4, 0)), seq=(8, 2), ts=(8, 4), event_type=(4, 1), logged_events=4, lanes8=6,
            lanes4=2, rows=(1, 4), extras=("small",))
STORED = 20  # stored events, in 6 8-byte lanes and 2 4-byte ones: every lane's values differ
STORED_W8 = np.arange(6 * STORED, dtype=np.int64).reshape(6, STORED) * 7 + 1000
STORED_W4 = (np.arange(2 * STORED, dtype=np.int32).reshape(2, STORED) * 3 - 500).astype(np.int32)


def synthetic(**over) -> Unassembled:
    o = {**BASE, **over}
    R, T, c8, c4, n = o["runs"], o["logged_events"], o["lanes8"], o["lanes4"], 6
    t8 = -np.arange(c8 * T, dtype=np.int64).reshape(c8, T) - 1
    t4 = (np.arange(c4 * T, dtype=np.int32).reshape(c4, T) + 77).astype(np.int32)
    lanes = FilterLanes(*(None if o[k] is None else Lane(*o[k]) for k in ("seq", "ts", "event_type")))

    def source(w8, w4):  # seq and ts are 8-byte lanes, the event type a 4-byte one
        seq, ts, etype = lanes
        return kernels.Source(w8, w4, w8[seq.index] if seq else np.zeros(0, np.int64),
                              w8[ts.index] if ts else np.zeros(0, np.int64),
                              w4[etype.index] if etype else np.zeros(0, np.int32))

    extras = {"small": np.arange(n, dtype=np.int16) * 5, "flag": np.arange(n) % 2 == 0}
    return Unassembled(
        rows=n, stored=source(STORED_W8, STORED_W4),
        runs=kernels.Runs(np.arange(R + 1, dtype=np.int64) * 2, np.arange(R, dtype=np.int64) + 10,
                          np.arange(R, dtype=np.int64) + 100),
        logged=source(t8, t4),
        event_filter=kernels.Filter(np.arange(o["types"]) % 2 == 0, o["type_base"], o["use_types"],
                                    o["use_window"]),
        examples=kernels.Examples(*(np.arange(n, dtype=np.int64) * (k + 2) + k for k in range(6))),
        pad=kernels.Words(np.arange(c8, dtype=np.int64) - 50, np.arange(c4, dtype=np.int32) - 70),
        max_len=o["max_len"], right_aligned=o["right"],
        columns=tuple(Column(f"c{i}", np.dtype(np.int64 if w == 8 else np.int32), Lane(w, k))
                      for i, (w, k) in enumerate(o["columns"])),
        filter_lanes=lanes, extras={k: extras[k] for k in o["extras"]}, chunk=object())


def plans(**over):
    """``(batch, chunk plan, share plan, decoded)`` of the synthetic batch with ``over`` changed."""
    u = synthetic(**over)
    a, b = {**BASE, **over}["rows"]
    chunk, share = encode_chunk(u), encode_share(u, a, b, list(u.extras))
    return u, chunk, share, decode(STORED_W8, STORED_W4, chunk, share)


def _row_of(rows, view) -> int:
    """Which row of ``rows`` ``view`` is, 0 for an empty view (as an absent lane is written)."""
    if len(view) == 0:
        return 0
    hits = [i for i in range(len(rows)) if np.array_equal(rows[i], view)]
    assert len(hits) == 1
    return hits[0]


#: what the decoded plan holds of each header word
CHUNK_READS = {
    ChunkWord.MAX_LEN: lambda p: p.max_len,
    ChunkWord.RIGHT_ALIGNED: lambda p: int(p.right_aligned),
    ChunkWord.RUNS: lambda p: len(p.runs.pos),
    ChunkWord.USE_TYPES: lambda p: int(p.event_filter.use_types),
    ChunkWord.USE_WINDOW: lambda p: int(p.event_filter.use_window),
    ChunkWord.TYPE_BASE: lambda p: p.event_filter.type_base,
    ChunkWord.TYPES: lambda p: len(p.event_filter.type_ok),
    ChunkWord.COLUMNS: lambda p: len(p.columns),
    ChunkWord.SEQ_WIDTH: lambda p: 8 if len(p.stored.seq) else 0,
    ChunkWord.SEQ_LANE: lambda p: _row_of(p.stored.w8, p.stored.seq),
    ChunkWord.TS_WIDTH: lambda p: 8 if len(p.stored.ts) else 0,
    ChunkWord.TS_LANE: lambda p: _row_of(p.stored.w8, p.stored.ts),
    ChunkWord.EVENT_TYPE_WIDTH: lambda p: 4 if len(p.stored.etype) else 0,
    ChunkWord.EVENT_TYPE_LANE: lambda p: _row_of(p.stored.w4, p.stored.etype),
    ChunkWord.LOGGED_EVENTS: lambda p: p.logged.w8.shape[1],
    ChunkWord.LOGGED_LANES8: lambda p: p.logged.w8.shape[0],
    ChunkWord.LOGGED_LANES4: lambda p: p.logged.w4.shape[0],
}
SHARE_READS = {
    ShareWord.ROWS: lambda p: len(p.examples.r_lo),
    ShareWord.EXTRA_BYTES: lambda p: len(p.extra_bytes) // max(1, len(p.examples.r_lo)),
}
#: a batch differing from ``BASE`` in each header word (the flags one at a time, so a swap shows)
CHUNK_VARIANTS = {
    ChunkWord.MAX_LEN: dict(max_len=12), ChunkWord.RIGHT_ALIGNED: dict(right=True), ChunkWord.RUNS: dict(runs=4),
    ChunkWord.USE_TYPES: dict(use_types=True), ChunkWord.USE_WINDOW: dict(use_window=True),
    ChunkWord.TYPE_BASE: dict(type_base=3), ChunkWord.TYPES: dict(types=7),
    ChunkWord.COLUMNS: dict(columns=((8, 1), (4, 0), (8, 3))),
    ChunkWord.SEQ_WIDTH: dict(seq=None), ChunkWord.SEQ_LANE: dict(seq=(8, 3)),
    ChunkWord.TS_WIDTH: dict(ts=None), ChunkWord.TS_LANE: dict(ts=(8, 5)),
    ChunkWord.EVENT_TYPE_WIDTH: dict(event_type=None), ChunkWord.EVENT_TYPE_LANE: dict(event_type=(4, 0)),
    ChunkWord.LOGGED_EVENTS: dict(logged_events=6), ChunkWord.LOGGED_LANES8: dict(lanes8=7),
    ChunkWord.LOGGED_LANES4: dict(lanes4=3),
}
SHARE_VARIANTS = {ShareWord.ROWS: dict(rows=(0, 6)), ShareWord.EXTRA_BYTES: dict(extras=("small", "flag"))}
#: an absent lane is written as width 0 and lane 0
ALSO_CHANGES = {ChunkWord.SEQ_WIDTH: ChunkWord.SEQ_LANE, ChunkWord.TS_WIDTH: ChunkWord.TS_LANE,
                ChunkWord.EVENT_TYPE_WIDTH: ChunkWord.EVENT_TYPE_LANE}


def test_every_header_word_is_read_and_varied():
    assert set(CHUNK_READS) == set(CHUNK_VARIANTS) == set(ChunkWord)
    assert set(SHARE_READS) == set(SHARE_VARIANTS) == set(ShareWord)


@pytest.mark.parametrize("word", [*ChunkWord, *ShareWord], ids=lambda w: w.name)
def test_the_compiled_decoding_reads_each_named_word(word):
    """The decoded plan holds each header word as written, for a batch differing from the base batch in
    that word alone: a word read at another's offset (or a size taken for another) shows."""
    chunk_word = isinstance(word, ChunkWord)
    reads = CHUNK_READS if chunk_word else SHARE_READS
    _, base_chunk, base_share, _ = plans()
    _, chunk, share, p = plans(**(CHUNK_VARIANTS if chunk_word else SHARE_VARIANTS)[word])
    header, base = (chunk, base_chunk) if chunk_word else (share, base_share)
    changed = {w for w in reads if header[w] != base[w]}
    assert changed == {word, *([ALSO_CHANGES[word]] if word in ALSO_CHANGES else [])}
    for plan_reads, words in ((CHUNK_READS, chunk), (SHARE_READS, share)):
        assert {w: int(f(p)) for w, f in plan_reads.items()} == {w: int(words[w]) for w in plan_reads}


def _check_round_trip(u: Unassembled, p, a: int, b: int, extras):
    """``p``, decoded from ``u``'s plans of rows ``[a, b)``, holds ``u``'s fields for those rows."""
    assert (p.max_len, p.right_aligned) == (u.max_len, u.right_aligned)
    pads = {8: u.pad.w8, 4: u.pad.w4}
    assert p.columns.tolist() == [[c.lane.width, c.lane.index, pads[c.lane.width][c.lane.index]]
                                  for c in u.columns]
    for got, want in ((p.stored, u.stored), (p.logged, u.logged)):
        for f in SOURCE_FIELDS:
            np.testing.assert_array_equal(getattr(got, f), getattr(want, f), err_msg=f)
    for f in kernels.Runs._fields:
        np.testing.assert_array_equal(getattr(p.runs, f), getattr(u.runs, f), err_msg=f)
    np.testing.assert_array_equal(p.event_filter.type_ok, u.event_filter.type_ok)
    assert tuple(p.event_filter[1:]) == tuple(u.event_filter[1:])
    for f in kernels.Examples._fields:
        np.testing.assert_array_equal(getattr(p.examples, f), getattr(u.examples, f)[a:b], err_msg=f)
    raw = [np.ascontiguousarray(u.extras[c][a:b]).view(np.uint8).reshape(b - a, -1) for c in extras]
    np.testing.assert_array_equal(p.extra_bytes, np.concatenate(raw, axis=1).ravel() if raw else [])


def test_a_synthetic_batch_round_trips():
    u, _, _, p = plans()
    _check_round_trip(u, p, *BASE["rows"], BASE["extras"])


@pytest.fixture(scope="module")
def store_and_thin(tmp_path_factory):
    rng = np.random.default_rng(5)
    store = store_with_tails(tmp_path_factory.mktemp("enc") / "s", rng, 20, 3000, 0.1, 700_000)
    n = 41
    thin = store.snapshot({"user_id": rng.integers(0, 24, n), "request_ts": np.full(n, 3_000_000)})
    thin = (thin.append_column("label", pa.array(rng.random(n) < 0.5))
            .append_column("rank", pa.array(np.arange(n, dtype=np.int64) * -3)))
    yield store, thin
    store.close()


@pytest.mark.parametrize("proj", [
    engine.Projection(["item_id", "action", "ts"], max_len=16),
    engine.Projection(["item_id", "dwell_ms"], max_len=10, align="right", pad_value=-7),
    engine.Projection(["item_id", "surface"], max_len=12, actions=[2, 3], window_us=900_000),
], ids=["plain", "right-pad", "types-window"])
def test_reconstructed_batches_round_trip(store_and_thin, proj):
    """Every batch of a reconstructor, in two shares, decodes to its own fields."""
    store, thin = store_and_thin
    rec = engine.Reconstructor(store, proj, device="cpu", chunk_batches=2)
    extras = ["label", "rank"]
    seen = 0
    for u in rec.iter_unassembled(thin, 9, extra_columns=extras):
        chunk = encode_chunk(u)
        for a, b in ((0, u.rows // 2), (u.rows // 2, u.rows)):
            p = decode(u.stored.w8, u.stored.w4, chunk, encode_share(u, a, b, extras))
            _check_round_trip(u, p, a, b, extras)
        seen += u.rows
    assert seen == len(thin)


def test_only_the_plan_module_imports_the_kernels():
    """The plugin reaches the kernels through ``_kernel_plan`` alone, where every word is named."""
    root = Path(__file__).resolve().parent.parent / "dali_plugin"
    importers = set()
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if any(n == "kernels" or n.startswith("kernels.") for n in names):
                importers.add(path.name)
    assert importers == {"_kernel_plan.py"}
