"""Stores in every on-disk format this code still reads, checked in under tests/data, read to known values.

Each fixture (written once by ``tests/data/make_fixtures.py``, never regenerated) holds a store, thin rows
logged from it and ``expected.json``. A change to how logs, manifests, segments or indexes are read that
breaks an old store fails here, whatever the code that writes stores today does. The fixtures' own bytes
are checked against what they claim to be without the engine, so each keeps exercising its old path.
"""

import hashlib
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import engine
from engine.serving import _log, _manifest

DATA = Path(__file__).resolve().parent / "data"
FIXTURES = sorted(p.name for p in DATA.iterdir() if (p / "expected.json").is_file())
# the formats a change must keep reading; removing one is a decision for CHANGELOG.md, not an accident
KNOWN = {"format1_uihl_log", "format2_ipc_log", "format2_parquet_log", "format3_chained_log",
         "format3_type_counts"}
# record headers, spelled out here so that a change to the engine's constants cannot hide in both places:
# magic, kind, pad, payload length, then the checksums (and from \xc6ulg on, the previous record's chain
# value and the record's own offset before the last, the header checksum, which is its chain value)
HEADER = {"UIHL": struct.Struct("<4sB3xQI"), "\\x93ULG": struct.Struct("<4sB3xQII"),
          "\\xc6ulg": struct.Struct("<4sB3xQIIQI")}
MAGIC = {"UIHL": b"UIHL", "\\x93ULG": b"\x93ULG", "\\xc6ulg": b"\xc6ulg"}
CHAINED = {"\\xc6ulg"}  # framings whose records carry the previous record's chain value and their offset
ZSTD_FRAME = b"\x28\xb5\x2f\xfd"


def expected(name) -> dict:
    return json.loads((DATA / name / "expected.json").read_text())


def decode(d) -> np.ndarray:
    return np.asarray(d["values"], np.dtype(d["dtype"])).reshape(d["shape"])


def assert_same(got: dict, want: dict, what: str) -> None:
    assert sorted(got) == sorted(want), what
    for k, w in want.items():
        g, w = np.asarray(got[k]), decode(w)
        assert (g.dtype, g.shape) == (w.dtype, w.shape), f"{what}: {k}"
        assert g.tobytes() == w.tobytes(), f"{what}: {k} differs"


def tree(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def thin_rows(name) -> pa.Table:
    return pq.read_table(DATA / name / "thin.parquet")


def check_reads(store, name) -> None:
    """Reconstructions of the fixture's thin rows, through every projection, equal the expected ones."""
    want = expected(name)
    for proj, kw in want["projections"].items():
        batch = engine.Reconstructor(store, engine.Projection(**kw), device="cpu").reconstruct(thin_rows(name))
        assert_same(batch.to_numpy(), want["reconstruct"][proj], f"{name} {proj}")


def test_every_format_has_its_fixture_and_they_stay_tiny():
    assert set(FIXTURES) >= KNOWN
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert total < 500_000, f"tests/data holds {total:,} bytes; keep fixtures to a few KB each"


def manifest_crc(body: dict) -> int:
    return zlib.crc32(json.dumps(body, sort_keys=True).encode())


def check_chain_and_head(root: Path, claims: dict, bodies: list, chains: dict) -> None:
    """Format 3's manifest chain and HEAD, or their absence from an older store: each manifest names its
    predecessor's checksum and an acknowledged log length that ends a record with that chain value; HEAD
    names the newest manifest and its log's full length and last chain value (the store was closed cleanly)."""
    chained = claims.get("manifest_chain", False)
    for prev, body in zip([None, *bodies], bodies):
        assert ("log_bytes" in body and "log_crc32" in body) == chained, f"v{body['version']}"
        assert ("prev_crc32" in body) == (chained and prev is not None), f"v{body['version']}"
        if chained and prev is not None:
            assert body["prev_crc32"] == manifest_crc(prev), f"v{body['version']} does not chain to its predecessor"
        if chained:
            assert chains[body["log"]].get(body["log_bytes"]) == body["log_crc32"], f"v{body['version']}"
    head_file = root / "_manifests" / "HEAD"
    assert head_file.is_file() == claims.get("head", False)
    if head_file.is_file():
        doc = json.loads(head_file.read_text())
        head = doc["body"]
        assert doc["crc32"] == manifest_crc(head)
        newest = bodies[-1]
        assert (head["version"], head["manifest_crc32"], head["oldest"]) == (
            newest["version"], manifest_crc(newest), bodies[0]["version"])
        end = max(chains[newest["log"]])
        assert head["log"] == newest["log"] and (head["log_bytes"], head["log_crc32"]) == (
            end, chains[newest["log"]][end])


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_is_the_format_it_claims(name):
    """Read from the bytes, without the engine: manifests, log records and payloads, indexes, sidecars."""
    claims, root = expected(name)["claims"], DATA / name / "store"
    bodies = [json.loads(p.read_text())["body"] for p in sorted((root / "_manifests").glob("v*.json"))]
    assert bodies and {b["format"] for b in bodies} == {claims["manifest_format"]}
    assert all(("store_id" in b) == (claims["store_id"] == "uuid") for b in bodies)
    parts = [e[k] for b in bodies for e in b["segments"] for k in ("main", "rare", "uncommon") if e.get(k)]
    assert parts and all(("footer_crc" in p) == claims["footer_checksums"] for p in parts)
    sidecars = {k for b in bodies for e in b["segments"] for k in ("rare", "uncommon") if e.get(k)}
    assert sorted(sidecars) == sorted(claims["sidecars"])
    assert all("uncommon" in e for b in bodies for e in b["segments"]) == ("uncommon" in claims["sidecars"])
    header = HEADER[claims["log_magic"]]
    records, chains = 0, {}  # log -> {record boundary: chain value there}
    for log in (root / "log").glob("*.log"):
        raw, pos, chain = log.read_bytes(), 0, 0
        ends = chains[f"log/{log.name}"] = {0: 0}
        while pos < len(raw):
            fields = header.unpack_from(raw, pos)
            magic, _, length = fields[:3]
            assert magic == MAGIC[claims["log_magic"]], f"{log.name} at byte {pos}"
            if claims["log_magic"] != "UIHL":  # a header checksum over everything before it
                assert zlib.crc32(raw[pos:pos + header.size - 4]) == fields[-1], f"{log.name} at byte {pos}"
            if claims["log_magic"] in CHAINED:
                assert fields[-3:-1] == (chain, pos), f"{log.name} at byte {pos}: chain value and offset"
            payload = raw[pos + header.size:pos + header.size + 4]
            assert payload == (b"PAR1" if claims["log_payload"] == "parquet" else b"\xff\xff\xff\xff")
            pos, records, chain = pos + header.size + length, records + 1, fields[-1]
            ends[pos] = chain
    assert records >= 4  # appends and updates of the mutable tier, and of logs that sealed since
    check_chain_and_head(root, claims, bodies, chains)
    for p in parts:
        raw = (root / p["index"]).read_bytes()
        t = pa.ipc.open_file(pa.py_buffer(raw)).read_all()
        assert ("ts_ckpt" in t.column_names) == claims["index_time_checkpoints"]
        assert (ZSTD_FRAME in raw) == claims["index_compressed"]
        # only sidecars' indexes count event types (every reader loads the main ones)
        sidecar = any(e.get(k) == p for b in bodies for e in b["segments"] for k in ("rare", "uncommon"))
        assert ("type_ckpt" in t.column_names) == (sidecar and claims.get("index_type_counts", False))


@pytest.mark.parametrize("name", FIXTURES)
def test_a_reader_gets_the_expected_events_and_batches_and_writes_nothing(name):
    root, want = DATA / name / "store", expected(name)
    before = tree(root)
    with engine.UIHStore.open(root, read_only=True) as s:
        assert s.version == want["versions"][-1] and s.store_id == want["store_id"]
        if want["claims"]["store_id"] == "legacy":  # derived from the schema: thin rows carry it
            assert s.store_id.startswith("legacy-")
        assert_same({c: s.to_table()[c].to_numpy() for c in s.to_table().column_names}, want["events"],
                    f"{name} events")
        check_reads(s, name)
    assert _manifest.versions(root) == want["versions"]
    for v in want["versions"]:  # every version stays readable on its own (time travel)
        with engine.UIHStore.open(root, version=v) as s:
            t = s.to_table()
            assert_same({c: t[c].to_numpy() for c in ("user_id", "seq")}, want["pinned"][str(v)], f"{name} v{v}")
    assert tree(root) == before


@pytest.mark.parametrize("name", FIXTURES)
def test_a_writer_appends_after_old_records_and_seals_to_the_current_format(name, tmp_path):
    """On a copy: the writer appends new records after the old ones (one log, two framings), replays both,
    seals and compacts into this code's format; the old thin rows still reconstruct to the same batches."""
    root, want = tmp_path / "store", expected(name)
    shutil.copytree(DATA / name / "store", root)
    n_events = len(want["events"]["seq"]["values"])
    ev = {"user_id": np.array([1, 11, 11]), "ts": np.full(3, 3 * 86_400_000_000 + 5), "item_id": np.arange(3),
          "action": np.array([0, 3, 2], np.int32), "surface": np.zeros(3, np.int32),
          "dwell_ms": np.ones(3, np.int32), "score": np.full(3, 0.5, np.float32)}
    with engine.UIHStore.open(root) as s:
        assert s.writable and len(s.to_table()) == n_events
        s.append(ev)
        log = root / _manifest.load(root)["log"]
    raw = log.read_bytes()
    assert raw.startswith(MAGIC[want["claims"]["log_magic"]]) and _log.MAGIC in raw[4:]  # this code's records
    with engine.UIHStore.open(root) as s:
        t = s.to_table()
        assert len(t) == n_events + 3 and t.filter(pa.compute.equal(t["user_id"], 11)).num_rows == 2
        s.seal(4 * 86_400_000_000)
        s.compact(full=True)
    with engine.UIHStore.open(root, read_only=True) as s:
        assert _manifest.load(root)["format"] == _manifest.FORMAT and s.store_id == want["store_id"]
        assert len(s.to_table()) == n_events + 3 and bool(np.all(s.to_table()["sealed"].to_numpy()))
        check_reads(s, name)
