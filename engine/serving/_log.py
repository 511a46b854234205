"""The mutable tier's durable append log: length- and checksum-framed Arrow IPC records.

A record is acknowledged only after ``fsync``. On replay, a record cut short at the end of the file
(a crash mid-write) is a torn tail: it is dropped and the file truncated. A checksum failure anywhere
else cannot come from a crash and is reported as corruption, never silently skipped.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pyarrow as pa

from .._errors import CorruptionError
from ._durable import fsync_dir

MAGIC = b"UIHL"
_HEADER = struct.Struct("<4sB3xQI")  # magic, kind, pad, payload length, crc32(kind|length|payload)
APPEND, UPDATE = 1, 2


_IPC = pa.ipc.IpcWriteOptions(compression="zstd")  # fast at its default level; ~4x fewer log bytes


def _encode(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_IPC) as w:
        w.write_table(table)
    return sink.getvalue()


def _frame(kind: int, payload: pa.Buffer) -> tuple:
    """(header, payload): written back to back, never concatenated (the payload may be large)."""
    crc = zlib.crc32(payload, zlib.crc32(struct.pack("<BQ", kind, payload.size)))
    return _HEADER.pack(MAGIC, kind, payload.size, crc), payload


class AppendLog:
    """One log file, opened for appending; ``replay`` reads it back."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f = open(self.path, "ab")
        self.size = self._f.tell()

    @staticmethod
    def create(path: Path, records=()) -> AppendLog:
        """Write a fresh log holding ``records`` (kind, table) durably, then open it for appending."""
        path = Path(path)
        with open(path, "wb") as f:
            for kind, table in records:
                for part in _frame(kind, _encode(table)):
                    f.write(part)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(path.parent)
        return AppendLog(path)

    def append(self, kind: int, table: pa.Table) -> None:
        """Durably add one record; on any failure the file is cut back so nothing partial remains."""
        header, payload = _frame(kind, _encode(table))
        try:
            self._f.write(header)
            self._f.write(payload)
            self._f.flush()
            os.fsync(self._f.fileno())
        except BaseException:
            self._f.truncate(self.size)
            self._f.seek(self.size)
            raise
        self.size += len(header) + payload.size

    def close(self) -> None:
        self._f.close()

    @staticmethod
    def replay(path: Path, truncate: bool = True) -> list:
        """Records of ``path`` as (kind, table); a torn tail is dropped (and cut off if ``truncate``).

        Only the writer may truncate: for a reader, the "torn" tail may be a record still being written.
        """
        path = Path(path)
        buf = memoryview(path.read_bytes())
        out, pos, n = [], 0, len(buf)
        while pos < n:
            if n - pos < _HEADER.size:
                break  # torn header
            magic, kind, length, crc = _HEADER.unpack_from(buf, pos)
            end = pos + _HEADER.size + length
            if magic != MAGIC:
                raise CorruptionError(f"log {path} has a bad record marker at byte {pos}; the file is damaged")
            if end > n:
                break  # torn payload
            payload = buf[pos + _HEADER.size:end]
            if zlib.crc32(payload, zlib.crc32(struct.pack("<BQ", kind, length))) != crc:
                if end == n:
                    break  # last record half-flushed
                raise CorruptionError(f"log {path} record at byte {pos} fails its checksum")
            try:
                table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
            except pa.ArrowException as e:
                raise CorruptionError(f"log {path} record at byte {pos} cannot be parsed: {e}") from e
            if kind not in (APPEND, UPDATE):
                raise CorruptionError(f"log {path} record at byte {pos} has unknown kind {kind}")
            out.append((kind, table))
            pos = end
        if pos < n and truncate:
            with open(path, "r+b") as f:
                f.truncate(pos)
                os.fsync(f.fileno())
        return out
