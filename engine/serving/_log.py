"""The mutable tier's durable append log: checksum-framed records, each a small Parquet payload.

A record is acknowledged only after ``fsync``. Each record has a header checksum (over magic, kind
and payload length) and a payload checksum, so replay can tell a torn tail from damage:

- a header cut short at the end of the file, or a payload shorter than its (checksummed) length says,
  is a *torn tail*: a crash mid-write. Replay drops it; only a writer open cuts it off the file.
- anything else (a header or payload failing its checksum, even in the last record, an unknown kind,
  an unparsable payload) cannot come from a crash: it is a ``CorruptionError`` naming file and byte
  offset, and nothing is truncated.

Each record (magic ``\xc6ulg``) also carries the chain value of the record before it (its header
checksum; 0 for the first) and its own byte offset, both under the header checksum: a record removed,
repeated or moved inside the file, or a log spliced from two, fails there instead of replaying as a
shorter or different history.

Acknowledged length: each manifest records ``log_bytes`` and ``log_crc32`` (the log's length and chain
value at its commit), and the store's ``HEAD`` the same at the last commit, writer open or clean close
(see ``_manifest``). Replay is given the largest of these *markers*: a log shorter than the marker, or
whose records do not end exactly there with that chain value, is a ``CorruptionError`` and nothing is
truncated; the torn-tail rule above applies only to bytes after the marker.

Earlier records are still read and may precede new ones in one file: those of the second format
(magic ``\x93ULG``: the same header without chain and offset) and of the first (magic ``UIHL``, one
checksum over kind, length and payload), with that format's weaker rule: a checksum failure on the
last record counts as torn.

A payload is a Parquet file of the record's rows sorted by ``(user_id, seq)``, encoded like a segment
(delta keys and times, dictionary or byte-stream split per feature column, zstd): about a quarter fewer
bytes than the zstd Arrow IPC stream of earlier logs, which replay still
reads (the payload's first bytes tell them apart). Row order inside a record carries no meaning: the
mutable tier sorts by ``(user_id, seq)`` and updates address rows by key.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from .._errors import CorruptionError, UIHError
from . import _fs
from ._durable import fsync_dir
from ._segments import choose_encodings, default_encodings

MAGIC = b"\xc6ulg"  # differs from both earlier magics in every byte: no single flip turns one into another
# magic, kind, pad, payload length, crc32(payload), chain value of the previous record, own offset,
# crc32(header so far): the record's chain value
_HEADER = struct.Struct("<4sB3xQIIQI")
_HEAD_BODY = _HEADER.size - 4
V2_MAGIC = b"\x93ULG"
_V2 = struct.Struct("<4sB3xQII")  # magic, kind, pad, payload length, crc32(payload), crc32(header so far)
LEGACY_MAGIC = b"UIHL"
_LEGACY = struct.Struct("<4sB3xQI")  # magic, kind, pad, payload length, crc32(kind|length|payload)
APPEND, UPDATE = 1, 2
KINDS = (APPEND, UPDATE)

CHOOSE_ROWS = 4096  # a record this large is a fair sample to choose the log's encodings on
_PARQUET = b"PAR1"  # an Arrow IPC stream (the earlier payloads) starts with 0xFFFFFFFF instead


def _encode(table: pa.Table, encodings: tuple | None = None, presorted: bool = False) -> pa.Buffer:
    """The record payload of ``table``: ``encodings`` as ``choose_encodings`` returns them (None: chosen
    here); ``presorted``: the rows are already in (user_id, seq) order, so no sort is needed."""
    if not presorted and {"user_id", "seq"} <= set(table.column_names):
        table = table.sort_by([("user_id", "ascending"), ("seq", "ascending")])
    dictionary, encoding = choose_encodings(table) if encodings is None else encodings
    names = set(table.column_names)  # an update record holds only some of the chosen columns
    dictionary, encoding = [c for c in dictionary if c in names], {c: e for c, e in encoding.items() if c in names}
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, table.schema, compression="zstd", use_dictionary=dictionary, write_statistics=False,
                          column_encoding=encoding) as w:
        w.write_table(table)  # in memory: the framed write below is the record's only I/O
    return sink.getvalue()


def _frame(kind: int, payload: pa.Buffer, prev: int = 0, offset: int = 0) -> tuple:
    """(header, payload): written back to back, never concatenated (the payload may be large).
    ``prev``: the chain value of the record before; ``offset``: where this one starts."""
    body = struct.pack("<4sB3xQIIQ", MAGIC, kind, payload.size, zlib.crc32(payload), prev, offset)
    return body + struct.pack("<I", zlib.crc32(body)), payload


def chain_of(header: bytes) -> int:
    """A record's chain value: the checksum that ends its header (every format ends with one)."""
    return struct.unpack_from("<I", header, len(header) - 4)[0]


class AppendLog:
    """One log file, opened for appending; ``replay`` reads it back.

    The feature columns' encodings are chosen once per log, on the first record of at least
    ``CHOOSE_ROWS`` rows, and reused for every later record (choosing encodes a sample of each integer
    column twice, which cost more than the record's own encoding); smaller records before that get the
    keys' delta encoding and dictionaries (``_segments.default_encodings``). Each payload is a
    self-describing Parquet file, so the choice is a writer's matter only and replay never needs it.
    """

    def __init__(self, path: Path, chain: int | None = None, encodings: tuple | None = None):
        """Open ``path`` for appending; ``chain``: the chain value at its end (None: read the file for it);
        ``encodings``: a choice to reuse (e.g. the previous log's, carried over by a seal)."""
        self.path = Path(path)
        if chain is None:
            chain = recover(self.path).chain
        self._f = open(self.path, "ab")
        self.size = self._f.tell()
        self.chain = chain
        self.encodings = encodings
        self._broken: OSError | None = None

    def _encodings_for(self, kind: int, table: pa.Table) -> tuple:
        if self.encodings is None:
            if kind != APPEND or table.num_rows < CHOOSE_ROWS:  # an update holds only some columns
                return default_encodings(table)
            self.encodings = choose_encodings(table)
        return self.encodings

    @staticmethod
    def create(path: Path, records=(), encodings: tuple | None = None) -> AppendLog:
        """Write a fresh log holding ``records`` (kind, table, presorted) durably, then open it for
        appending; ``encodings``: as in ``__init__``."""
        path = Path(path)
        chain, offset = 0, 0
        with open(path, "wb") as f:
            for kind, table, presorted in records:
                if encodings is None and kind == APPEND and table.num_rows >= CHOOSE_ROWS:
                    encodings = choose_encodings(table)
                header, payload = _frame(kind, _encode(table, encodings or default_encodings(table), presorted),
                                         chain, offset)
                f.write(header)
                f.write(payload)
                chain, offset = chain_of(header), offset + len(header) + payload.size
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(path.parent)
        return AppendLog(path, chain, encodings)

    def append(self, kind: int, table: pa.Table, presorted: bool = False) -> None:
        """Durably add one record; on any failure the file is cut back so nothing partial remains.
        ``presorted``: the rows are in (user_id, seq) order already."""
        if self._broken:
            raise UIHError(f"log {self.path} could not be cut back after a failed write ({self._broken}); "
                           "close the store and reopen it (the open repairs the log)")
        payload = _encode(table, self._encodings_for(kind, table), presorted)
        header, payload = _frame(kind, payload, self.chain, self.size)
        try:
            self._f.write(header)
            self._f.write(payload)
            self._f.flush()
            os.fsync(self._f.fileno())
        except BaseException:
            self._cut_back()
            raise
        self.size += len(header) + payload.size
        self.chain = chain_of(header)

    def _cut_back(self) -> None:
        try:
            self._f = _reopen_at(self._f, self.path, self.size)
        except OSError as e:  # the tail may hold a partial record: refuse to append after it
            self._broken = e

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass  # buffered bytes of a failed append: cut back already, nothing acknowledged is lost

    @staticmethod
    def replay(path, repair: bool = False, acked: tuple = (0, 0)) -> list:
        """Records of ``path`` as (kind, table); see ``recover``."""
        return recover(path, repair, acked).records


class Recovered(NamedTuple):
    records: list  # (kind, table)
    end: int  # bytes of whole records: the log's length once a torn tail is cut
    chain: int  # chain value of the last whole record (0: none)


def recover(path, repair: bool = False, acked: tuple = (0, 0), decode: bool = True,
            stop: int | None = None) -> Recovered:
    """Read ``path``; a torn tail after the marker ``acked`` = (log_bytes, log_crc32) is dropped, and
    cut off only if ``repair``; a log that ends before the marker, or does not pass through it, is a
    CorruptionError (nothing truncated).

    Only the writer may repair: for a reader, the "torn" tail may be a record still being written.
    ``decode=False`` checks every record's framing (checksums, chain, offsets, the marker) without
    decoding a payload: the records are then ``(kind, None)``. ``stop``: read only the file's first
    ``stop`` bytes (a reader decoding later what it checked at open, not records written since).
    """
    path = _fs.at(path)  # a reader's log may be on object storage; only a local writer repairs
    acked_bytes, acked_crc = (int(acked[0] or 0), int(acked[1] or 0))
    buf = memoryview(_fs.read_bytes(path))
    if stop is not None:
        buf = buf[:stop]
    out, pos, chain = [], 0, 0
    at_marker = acked_bytes == 0 and acked_crc == 0
    while pos < len(buf):
        rec = _read_record(path, buf, pos, chain, decode)
        if rec is None:
            break
        kind, table, pos, chain = rec
        out.append((kind, table))
        if pos == acked_bytes:
            at_marker = chain == acked_crc
    if pos < acked_bytes or not at_marker:
        where = "ends" if pos < acked_bytes else "has no record boundary with the committed checksum"
        raise CorruptionError(f"log {path} {where} at byte {pos}, but {acked_bytes} bytes of it were acknowledged "
                              "(recorded in the manifest or HEAD): acknowledged records are missing. Restore "
                              "the log from a backup (nothing was truncated)")
    if pos < len(buf) and repair:
        with open(path, "r+b") as f:
            f.truncate(pos)
            os.fsync(f.fileno())
    return Recovered(out, pos, chain)


def _reopen_at(f, path: Path, size: int):
    """Drop whatever a failed append left in the buffer and on disk past ``size``."""
    try:
        f.close()
    except OSError:
        pass  # the buffered bytes are exactly what we are discarding
    with open(path, "r+b") as g:
        g.truncate(size)
        os.fsync(g.fileno())
    return open(path, "ab")


def _read_record(path: Path, buf: memoryview, pos: int, chain: int, decode: bool = True):
    """(kind, table, next position, chain value) of the record at ``pos``, None for a torn tail, or
    CorruptionError. ``chain``: the chain value of the record before it."""
    n = len(buf)
    magic = bytes(buf[pos:pos + 4])
    if magic == LEGACY_MAGIC:
        return _read_legacy(path, buf, pos, decode)
    head = _HEADER if magic == MAGIC else _V2
    if n - pos < head.size:
        if MAGIC.startswith(magic) or V2_MAGIC.startswith(magic):
            return None  # a header cut short by a crash
        raise CorruptionError(f"log {path} has a damaged record header at byte {pos}; restore the store "
                              "from a backup (nothing was truncated)")
    fields = head.unpack_from(buf, pos)
    magic, kind, length, pcrc, hcrc = *fields[:4], fields[-1]
    if magic not in (MAGIC, V2_MAGIC) or zlib.crc32(buf[pos:pos + head.size - 4]) != hcrc:
        raise CorruptionError(f"log {path} record at byte {pos} has a damaged header (marker or checksum); "
                              "restore the store from a backup (nothing was truncated)")
    if head is _HEADER and (fields[4], fields[5]) != (chain, pos):
        raise CorruptionError(f"log {path} record at byte {pos} was written at byte {fields[5]} after another "
                              "record: records before it are missing or were replaced; restore the store from a "
                              "backup (nothing was truncated)")
    end = pos + head.size + length
    if end > n:
        return None  # the payload was cut short by a crash (its length is checksummed, so this is real)
    payload = buf[pos + head.size:end]
    if zlib.crc32(payload) != pcrc:
        raise CorruptionError(f"log {path} record at byte {pos} fails its payload checksum; restore the store "
                              "from a backup (nothing was truncated)")
    return kind, _decode(path, payload, kind, pos, decode), end, hcrc


def _read_legacy(path: Path, buf: memoryview, pos: int, decode: bool):
    n = len(buf)
    if n - pos < _LEGACY.size:
        return None
    _, kind, length, crc = _LEGACY.unpack_from(buf, pos)
    end = pos + _LEGACY.size + length
    if end > n:
        return None
    payload = buf[pos + _LEGACY.size:end]
    if zlib.crc32(payload, zlib.crc32(struct.pack("<BQ", kind, length))) != crc:
        if end == n:
            return None  # the legacy format cannot tell a half-flushed last record from damage
        raise CorruptionError(f"log {path} record at byte {pos} fails its checksum; restore the store from a backup")
    return kind, _decode(path, payload, kind, pos, decode), end, crc


def _decode(path: Path, payload, kind: int, pos: int, decode: bool = True) -> pa.Table | None:
    if kind not in KINDS:
        raise CorruptionError(f"log {path} record at byte {pos} has unknown kind {kind}; the file is damaged")
    if not decode:
        return None
    try:
        if bytes(payload[:4]) == _PARQUET:
            return pq.read_table(pa.BufferReader(pa.py_buffer(payload)))
        return pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise CorruptionError(f"log {path} record at byte {pos} cannot be parsed: {e}") from e
