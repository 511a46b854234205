"""Write tests/data's stores in every on-disk format this code still reads. Run by hand, not in the suite:

    python tests/data/make_fixtures.py NAME...      # from the repository root; writes tests/data/NAME/
    python tests/data/make_fixtures.py --out DIR NAME...   # writes DIR/NAME/: compare with the checked-in one

A fixture, once checked in, is never regenerated: it stands for the stores that exist out there, and
``tests/test_format_fixtures.py`` checks that this code still reads it to ``expected.json``. An existing
folder is refused unless ``--force`` is given (for a fixture that was never released). When a format
changes, keep the old fixtures, give the fixture of the replaced format a converter below (the steps that
rewrite this code's store into the old layout, as the others have) and add a fixture for the new format;
CHANGELOG.md lists the formats.

Each fixture is a folder of 60 to 75 KB (Parquet footers and the expected values, mostly):

- ``store/``: a closed store, four versions (two daily seals, a full compaction), with events still in the
  log (appends and an update) and rare and uncommon event types, so every part of the format is there;
- ``thin.parquet``: thin rows logged from it at each step, as ``UIHStore.snapshot`` writes them (from a
  format-1 store they carry the ``legacy-`` id this code derives for it);
- ``expected.json``: what the fixture is (``claims``, checked against its bytes by the test) and what reading
  it gives: versions, store id, every event, the events of each pinned version, and the reconstruction of
  ``thin.parquet`` for each projection in ``PROJECTIONS``.

Every fixture starts as one store written by this code with seeded ids and a fixed clock (the bytes
repeat for a given PyArrow), which its converter rewrites into the old layout: log framing and payload
encoding, manifest keys and format number, user index form, sidecar levels. Segment Parquet files keep
this code's encodings (a reader depends only on Parquet, which reads them all). Before anything is
written, the converted store must read back to the same events and reconstructions as the original.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import struct
import sys
import tempfile
import types
import uuid
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from engine.serving import _log, _manifest, _segments, _store  # noqa: E402

HERE = Path(__file__).resolve().parent
DAY = 86_400_000_000
COLUMNS = {"item_id": "int64", "action": "int32", "surface": "int32", "dwell_ms": "int32", "score": "float32"}
# action shares: 3 holds ~7% (the rare sidecar), 2 and 3 ~20% (the uncommon one)
ACTION_P = [0.6, 0.2, 0.13, 0.07]
PROJECTIONS = {
    "all_left": dict(columns=["item_id", "action", "score", "seq", "ts"], max_len=8),
    "rare_right": dict(columns=["item_id", "dwell_ms"], max_len=4, actions=[3], align="right", pad_value=-1),
    "uncommon_window": dict(columns=["item_id", "surface", "seq"], max_len=6, actions=[2, 3], window_us=DAY),
    "jagged": dict(columns=["item_id", "score"], max_len=5, layout="jagged"),
}


# ---- the store every fixture starts from --------------------------------------------------------------
def _events(rng, users, n, day) -> dict:
    return {"user_id": rng.choice(np.asarray(users, np.int64), n),
            "ts": day * DAY + np.sort(rng.integers(0, DAY, n)),
            "item_id": rng.integers(0, 1 << 40, n),
            "action": rng.choice(4, n, p=ACTION_P).astype(np.int32),
            "surface": rng.integers(0, 8, n).astype(np.int32),
            "dwell_ms": rng.integers(0, 60_000, n).astype(np.int32),
            "score": rng.standard_normal(n).astype(np.float32)}


def _seeded():
    """Seeded ids (segment, log and store ids) and manifest clock, so a fixture's bytes repeat. Only the
    store's modules see them: others (Numba's cache writes, say) draw uuid4 at times of their own."""
    ids = random.Random(27)
    seeded = types.SimpleNamespace(uuid4=lambda: uuid.UUID(int=ids.getrandbits(128), version=4))
    _store.uuid = _segments.uuid = seeded
    clock = iter(range(1_800_000_000, 1_800_001_000, 10))
    _manifest.time = types.SimpleNamespace(time=lambda: float(next(clock)))


def build(root: Path) -> pa.Table:
    """The original store at ``root`` (closed); returns the thin rows logged while it was written."""
    rng = np.random.default_rng(27)
    users, thins = [1, 2, 3, 5], []
    store = engine.UIHStore.create(root, columns=COLUMNS, event_type_column="action")
    for day in range(3):
        store.append(_events(rng, users, 30, day))
        t = store.to_table()
        mutable = t.filter(pc.invert(t["sealed"]))
        pick = rng.choice(mutable.num_rows, 3, replace=False)
        store.update({"user_id": mutable["user_id"].to_numpy()[pick], "seq": mutable["seq"].to_numpy()[pick],
                      "dwell_ms": np.array([1, 2, 3], np.int32)})
        thins.append(store.snapshot({"user_id": [*users, 9], "request_ts": np.full(5, (day + 1) * DAY - 1)}))
        if day < 2:
            store.seal((day + 1) * DAY)
    store.compact(full=True)
    thins.append(store.snapshot({"user_id": users, "request_ts": np.full(4, 3 * DAY)}))
    store.close()
    (root / "LOCK").unlink()  # a closed store needs none; a writer makes it
    return pa.concat_tables(thins)


# ---- rewriting a store into an older layout -------------------------------------------------------------
def _ipc(table: pa.Table, compression) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _legacy_record(kind: int, payload: bytes) -> bytes:
    """A ``UIHL`` record: one checksum over kind, length and payload."""
    crc = zlib.crc32(payload, zlib.crc32(struct.pack("<BQ", kind, len(payload))))
    return _log._LEGACY.pack(_log.LEGACY_MAGIC, kind, len(payload), crc) + payload


def _checksummed_record(kind: int, payload: bytes) -> bytes:
    """A ``\\x93ULG`` record: payload checksum, then one over the header so far (no chain, no offset)."""
    body = struct.pack("<4sB3xQI", _log.V2_MAGIC, kind, len(payload), zlib.crc32(payload))
    return body + struct.pack("<I", zlib.crc32(body)) + payload


def _payloads(path: Path) -> list:
    """(kind, payload bytes) of each record of a log this code wrote, the payloads as they are."""
    raw, pos, out = path.read_bytes(), 0, []
    while pos < len(raw):
        magic, kind, length = _log._HEADER.unpack_from(raw, pos)[:3]
        if magic != _log.MAGIC:
            raise SystemExit(f"{path} at byte {pos}: not a record of this code's log; its framing changed, "
                             "so give the current fixture a converter first")
        start = pos + _log._HEADER.size
        out.append((kind, raw[start:start + length]))
        pos = start + length
    return out


def rewrite_logs(root: Path, record, compression) -> None:
    """Every log's records re-encoded as Arrow IPC payloads (``compression``) in ``record``'s framing."""
    for path in sorted((root / "log").glob("*.log")):
        records = _log.AppendLog.replay(path)
        path.write_bytes(b"".join(record(kind, _ipc(t, compression)) for kind, t in records))


def _manifests(root: Path) -> list:
    return [(v, _manifest.load(root, v)) for v in _manifest.versions(root)]


def _format2_manifests(root: Path) -> list:
    """The manifests as format 2 wrote them: without their chain (``prev_crc32``), the acknowledged log
    (``log_bytes``, ``log_crc32``) and ``_manifests/HEAD``, which format 3 added."""
    (root / _manifest.DIR / _manifest.HEAD).unlink()
    bodies = _manifests(root)
    for _, body in bodies:
        for k in ("prev_crc32", "log_bytes", "log_crc32"):
            body.pop(k, None)  # the first manifest has no predecessor to chain to
        body["format"] = 2
    return bodies


def _write_manifest(root: Path, body: dict) -> None:
    text = json.dumps(body, sort_keys=True)
    doc = {"crc32": zlib.crc32(text.encode()), "body": body}
    _manifest.path_of(root, body["version"]).write_text(json.dumps(doc, sort_keys=True))


def rewrite_segments(root: Path, bodies: list, time_checkpoints: bool) -> None:
    """One sidecar level (rare), and user indexes as uncompressed Arrow IPC files (with or without the
    time checkpoints), their sizes and checksums updated in every manifest naming them."""
    new = {}
    for _, body in bodies:
        for e in body["segments"]:
            if e.get("uncommon"):
                for rel in (e["uncommon"]["file"], e["uncommon"]["index"]):
                    (root / rel).unlink(missing_ok=True)
            e.pop("uncommon", None)
            e.pop("uncommon_types", None)
            for part in (e["main"], e["rare"]):
                if part is None:
                    continue
                if part["index"] not in new:
                    path = root / part["index"]
                    t = pa.ipc.open_file(pa.py_buffer(path.read_bytes())).read_all()
                    if not time_checkpoints:
                        t = t.drop_columns(["ts_ckpt"])
                    sink = pa.BufferOutputStream()
                    with pa.ipc.new_file(sink, t.schema) as w:
                        w.write_table(t)
                    raw = sink.getvalue().to_pybytes()
                    path.write_bytes(raw)
                    new[part["index"]] = {"index_bytes": len(raw), "index_crc": zlib.crc32(raw)}
                part.update(new[part["index"]])


def to_format1(root: Path) -> None:
    """What the first code wrote: manifest format 1 (no store_id, committed_at, footer checksums), a log of
    ``UIHL`` records with uncompressed Arrow IPC payloads, indexes without time checkpoints, one sidecar."""
    rewrite_logs(root, _legacy_record, None)
    bodies = _format2_manifests(root)
    rewrite_segments(root, bodies, time_checkpoints=False)
    for _, body in bodies:
        for k in ("store_id", "committed_at"):
            body.pop(k)
        body["format"] = 1
        for e in body["segments"]:
            for part in (e["main"], e["rare"]):
                if part:
                    part.pop("footer_bytes")
                    part.pop("footer_crc")
        _write_manifest(root, body)


def to_format2_ipc_log(root: Path) -> None:
    """What the code wrote from the checksummed log header until Parquet log payloads: manifest format 2,
    ``\\x93ULG`` records with zstd Arrow IPC payloads, uncompressed indexes with time checkpoints, one sidecar."""
    rewrite_logs(root, _checksummed_record, "zstd")
    bodies = _format2_manifests(root)
    rewrite_segments(root, bodies, time_checkpoints=True)
    for _, body in bodies:
        _write_manifest(root, body)


def to_format2_parquet_log(root: Path) -> None:
    """What the code wrote from Parquet log payloads until chained manifests: manifest format 2 (no
    ``prev_crc32``, ``log_bytes``, ``log_crc32``), no ``_manifests/HEAD``, ``\\x93ULG`` records around the
    same Parquet payloads, zstd indexes with time checkpoints, two sidecar levels."""
    for path in sorted((root / "log").glob("*.log")):
        path.write_bytes(b"".join(_checksummed_record(kind, payload) for kind, payload in _payloads(path)))
    for _, body in _format2_manifests(root):
        _write_manifest(root, body)


def as_written(root: Path) -> None:
    """This code's format: manifest format 3 (chained, with the acknowledged log length) and
    ``_manifests/HEAD``, ``\\xc6ulg`` records (chain value and offset) with Parquet payloads, zstd indexes with
    time checkpoints, two sidecar levels whose indexes count event types. Give it a converter when the format
    changes."""


FIXTURES = {
    "format1_uihl_log": (to_format1, dict(manifest_format=1, log_magic="UIHL", log_payload="arrow-ipc",
                                          store_id="legacy", index_time_checkpoints=False,
                                          index_compressed=False, sidecars=["rare"], footer_checksums=False)),
    "format2_ipc_log": (to_format2_ipc_log, dict(manifest_format=2, log_magic="\\x93ULG", log_payload="arrow-ipc",
                                                 store_id="uuid", index_time_checkpoints=True,
                                                 index_compressed=False, sidecars=["rare"], footer_checksums=True)),
    "format2_parquet_log": (to_format2_parquet_log, dict(manifest_format=2, log_magic="\\x93ULG",
                                                         log_payload="parquet", store_id="uuid",
                                                         index_time_checkpoints=True, index_compressed=True,
                                                         sidecars=["rare", "uncommon"], footer_checksums=True)),
    "format3_chained_log": (as_written, dict(manifest_format=3, log_magic="\\xc6ulg", log_payload="parquet",
                                             store_id="uuid", index_time_checkpoints=True, index_compressed=True,
                                             sidecars=["rare", "uncommon"], footer_checksums=True,
                                             manifest_chain=True, head=True)),
    "format3_type_counts": (as_written, dict(manifest_format=3, log_magic="\\xc6ulg", log_payload="parquet",
                                             store_id="uuid", index_time_checkpoints=True, index_compressed=True,
                                             sidecars=["rare", "uncommon"], footer_checksums=True,
                                             manifest_chain=True, head=True, index_type_counts=True)),
}


# ---- what reading a fixture gives -------------------------------------------------------------------------
def encode(a) -> dict:
    a = np.asarray(a)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "values": a.ravel().tolist()}


def read_back(root: Path, thin: pa.Table) -> dict:
    out = {"pinned": {}, "reconstruct": {}}
    with engine.UIHStore.open(root, read_only=True) as s:
        out["versions"] = [int(v) for v in _manifest.versions(root)]
        out["store_id"] = s.store_id
        out["events"] = {c: encode(s.to_table()[c].to_numpy()) for c in s.to_table().column_names}
        thin = thin.set_column(thin.schema.get_field_index("store_id"), "store_id",
                               pa.DictionaryArray.from_arrays(np.zeros(len(thin), np.int32), [s.store_id]))
        for name, kw in PROJECTIONS.items():
            batch = engine.Reconstructor(s, engine.Projection(**kw), device="cpu").reconstruct(thin)
            out["reconstruct"][name] = {k: encode(v) for k, v in batch.to_numpy().items()}
    for v in out["versions"]:
        with engine.UIHStore.open(root, version=v) as s:
            t = s.to_table()
            out["pinned"][str(v)] = {c: encode(t[c].to_numpy()) for c in ("user_id", "seq")}
    return out, thin


def make(name: str, force: bool, out: Path = HERE) -> None:
    convert, claims = FIXTURES[name]
    dest = out / name
    if dest.exists():
        if not force:
            raise SystemExit(f"{dest} exists: a checked-in fixture is never regenerated (see this file's "
                             "docstring); pass --force only for one that was never released")
        shutil.rmtree(dest)
    with tempfile.TemporaryDirectory() as d:
        original, converted = Path(d) / "original", Path(d) / "store"
        _seeded()
        thin = build(original)
        shutil.copytree(original, converted)
        convert(converted)
        want, _ = read_back(original, thin)
        got, thin = read_back(converted, thin)
        for k in ("events", "pinned", "reconstruct", "versions"):
            if got[k] != want[k]:
                raise SystemExit(f"{name}: the converted store reads {k} differently from the original")
        dest.mkdir()
        shutil.copytree(converted, dest / "store")
        pq.write_table(thin, dest / "thin.parquet", compression="zstd")
        doc = {"fixture": name, "claims": claims, "written_with": {"pyarrow": pa.__version__},
               "projections": PROJECTIONS, **got}
        (dest / "expected.json").write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")
    files = [p for p in dest.rglob("*") if p.is_file()]
    digest = hashlib.sha1(b"".join(p.read_bytes() for p in sorted(files))).hexdigest()[:12]
    print(f"{name}: {len(files)} files, {sum(p.stat().st_size for p in files):,} bytes, sha1 {digest}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("names", nargs="+", choices=sorted(FIXTURES), help="fixtures to write")
    ap.add_argument("--force", action="store_true", help="replace an existing fixture folder")
    ap.add_argument("--out", type=Path, default=HERE,
                    help="write NAME/ under this folder instead (to compare a rerun with the checked-in bytes)")
    args = ap.parse_args(argv)
    for name in args.names:
        make(name, args.force, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
