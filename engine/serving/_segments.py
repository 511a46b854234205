"""Immutable segments: Parquet files sorted by ``(user_id, seq)``, each with its user index.

Each segment has a main file with every event and, when some event types are rare, sidecar files
holding only the least frequent types' events: ``rare`` (types holding at most 10% of the events) and
``uncommon`` (at most 25%, e.g. everything but the dominant "view"). A tenant that asks only for such
types reads the smallest sidecar that holds them and so reads bytes in proportion to what it uses; the
duplication costs the sidecars' share of the bytes (measured in ``uih bench``'s write amplification).
"""

from __future__ import annotations

import uuid
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .._errors import CorruptionError
from .._ragged import group_starts, offsets_of
from . import _fs, _segment_index
from ._durable import fsync_dir, fsync_file, write_file

DIR = "segments"
ROW_GROUP_ROWS = 16384
# sidecar part -> the share of a segment's events its (least frequent) types may hold at most: a tenant
# reads the smallest sidecar holding every type it asks for, else the main file
SIDECARS = {"rare": 0.10, "uncommon": 0.25}
PARTS = ("main", "rare", "uncommon")  # every part name a manifest entry may hold, whatever SIDECARS writes
RECENT_US = 28 * 86_400_000_000  # events newer than this (ts, microseconds) before the newest go to their own segment
OLD_SHARE_MIN = 0.25  # split only when the old part is at least this share of the rows


def entry_files(entry: dict) -> list:
    """Every file of a manifest's segment entry (data files and their indexes), store-relative."""
    return [f for part in PARTS if entry.get(part) for f in (entry[part]["file"], entry[part]["index"])]


def part_for(entry: dict, types) -> str:
    """The part of a segment to read for a tenant asking for event ``types`` (None: all): the smallest
    sidecar holding all of them, else ``"main"`` (entries written before a sidecar level have none)."""
    if types is not None:
        held = [p for p in PARTS[1:] if entry.get(p) and set(types) <= set(entry[f"{p}_types"])]
        if held:
            return min(held, key=lambda p: entry[p]["rows"])
    return "main"


SAMPLE_ROWS = 65_536  # rows on which each feature column's encoding is chosen
_KEYS = ("user_id", "seq", "ts")  # sorted keys and near-monotone times: delta encoding makes them cheap


def _encoded_size(table: pa.Table, dictionary: list, encoding: dict) -> int:
    sink = pa.BufferOutputStream()  # in memory, with a writer: the file written next is the only I/O
    with pq.ParquetWriter(sink, table.schema, compression="zstd", use_dictionary=dictionary,
                          column_encoding=encoding) as w:
        w.write_table(table)
    return sink.getvalue().size


def choose_encodings(table: pa.Table) -> tuple:
    """(dictionary columns, {column: encoding}): delta for the keys and ts, and for each integer feature
    column whichever of dictionary or byte-stream-split encodes a sample of it smaller.

    Repetitive columns (item ids under a popularity skew, event types) shrink with a dictionary; spread
    ones (durations) with byte-stream split, which lets zstd see their constant high bytes.
    """
    encoding = {c: "DELTA_BINARY_PACKED" for c in _KEYS if c in table.column_names}
    dictionary = []
    for c in table.column_names:
        if c in encoding or not pa.types.is_integer(table.schema.field(c).type):
            continue
        sample = table.select([c]).slice(0, SAMPLE_ROWS)
        if _encoded_size(sample, [c], {}) <= _encoded_size(sample, [], {c: "BYTE_STREAM_SPLIT"}):
            dictionary.append(c)
        else:
            encoding[c] = "BYTE_STREAM_SPLIT"
    return dictionary, encoding


def default_encodings(table: pa.Table) -> tuple:
    """What ``choose_encodings`` returns without sampling: delta for the keys and ts, a dictionary for
    every integer feature column (Parquet falls back to plain pages where one grows too large). For
    tables too small to be a fair sample, where two trial encodings per column would cost more than
    the bytes they could save."""
    encoding = {c: "DELTA_BINARY_PACKED" for c in _KEYS if c in table.column_names}
    dictionary = [c for c in table.column_names
                  if c not in encoding and pa.types.is_integer(table.schema.field(c).type)]
    return dictionary, encoding


def write_parquet(path: Path, table: pa.Table) -> None:
    """Write ``table`` to a local Parquet file as segments are written (their encodings, row groups and
    page checksums, fsync'd): a fair comparison for other files of the same events."""
    # Delta encoding makes the sorted user_id/seq columns nearly free (choose_encodings); page checksums
    # let a reader detect damaged bytes (CorruptionError) instead of returning wrong events.
    dictionary, encoding = choose_encodings(table)
    pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, compression="zstd",
                   use_dictionary=dictionary, column_encoding=encoding,
                   write_statistics=["user_id"], write_page_checksum=True,
                   sorting_columns=[pq.SortingColumn(0), pq.SortingColumn(1)])
    fsync_file(path)


def _write_part(root: Path, name: str, table: pa.Table, event_type_column: str | None = None) -> dict:
    seg = Path(root) / DIR
    data_path, idx_path = seg / f"{name}.parquet", seg / f"{name}.idx.arrow"
    write_parquet(data_path, table)
    cols = {c: table.column(c).to_numpy() for c in ("user_id", "seq", "ts")}
    types = table.column(event_type_column).to_numpy() if event_type_column else None
    raw = _segment_index.to_bytes(_segment_index.build(cols["user_id"], cols["seq"], cols["ts"], types))
    write_file(idx_path, raw)
    footer = _footer(data_path)
    return {"file": f"{DIR}/{data_path.name}", "index": f"{DIR}/{idx_path.name}", "rows": table.num_rows,
            "bytes": data_path.stat().st_size, "index_bytes": len(raw), "index_crc": zlib.crc32(raw),
            "footer_bytes": len(footer), "footer_crc": zlib.crc32(footer)}


def _footer(path: Path) -> bytes:
    """The Parquet footer: metadata, its 4-byte length and the closing magic (checksummed in the manifest,
    since Parquet's page checksums do not cover it)."""
    with open(path, "rb") as f:
        f.seek(-8, 2)
        n = int.from_bytes(f.read(4), "little")
        f.seek(-(n + 8), 2)
        return f.read()


def rare_types(types: np.ndarray, share: float = SIDECARS["rare"]) -> list:
    """The least frequent event types that together hold at most ``share`` of the events."""
    if len(types) == 0:
        return []
    codes, counts = np.unique(types, return_counts=True)
    order = np.argsort(counts, kind="stable")
    cum = np.cumsum(counts[order])
    k = int(np.searchsorted(cum, share * len(types), side="right"))
    k = min(k, len(codes) - 1)  # never everything: then the sidecar would just be a copy
    return sorted(int(c) for c in codes[order[:k]])


def write_segment(root: Path, table: pa.Table, event_type_column: str) -> dict:
    """Write one segment (``table`` already sorted by user_id, seq) and return its manifest entry."""
    sid = uuid.uuid4().hex[:16]
    try:
        # event-type counts only in the sidecars' indexes: every reader loads the main indexes (the users'
        # sealed counts), only typed readers a sidecar's, and those are the reads the counts cut
        entry: dict = {"id": sid, "main": _write_part(root, f"seg-{sid}", table)}
        codes, prev = table.column(event_type_column).to_numpy(), list[int]()
        for part in PARTS[1:]:  # every known part named, written or not: readers look each one up
            entry[f"{part}_types"], entry[part] = [], None
        for part, share in SIDECARS.items():
            kinds = rare_types(codes, share)
            entry[f"{part}_types"], entry[part] = [], None
            if kinds and kinds != prev:  # a level with the same types as the one below adds nothing
                entry[f"{part}_types"], prev = kinds, kinds
                entry[part] = _write_part(root, f"seg-{sid}-{part}", table.filter(pa.array(np.isin(codes, kinds))),
                                          event_type_column)
        fsync_dir(Path(root) / DIR)
    except BaseException:
        for p in (Path(root) / DIR).glob(f"seg-{sid}*"):
            p.unlink(missing_ok=True)
        raise
    return entry


def recent_split(user_id: np.ndarray, ts: np.ndarray, horizon: int) -> np.ndarray:
    """Rows (sorted by user_id, seq) of the *old* part: per user, the longest prefix with ``ts < horizon``.

    A prefix per user keeps every user's old seqs below their recent ones, so the old part can be a
    segment of its own in front of the recent part (late arrivals after the prefix stay recent).
    """
    n = len(user_id)
    if n == 0:
        return np.zeros(0, bool)
    starts = group_starts(user_id)
    pos = np.arange(n, dtype=np.int64)
    first_new = np.minimum.reduceat(np.where(ts < horizon, n, pos), starts)
    return pos < np.repeat(first_new, np.diff(np.r_[starts, n]))


def write_segments(root: Path, table: pa.Table, event_type_column: str, newest_ts: int) -> list:
    """Write ``table`` (sorted by user_id, seq) as one segment, or as two, old then recent, when a large
    share of it is older than ``RECENT_US`` before ``newest_ts``; returns their manifest entries in order.

    The split clusters each user's recent events: a reader with a time window skips the old segment by
    its index's newest ts, and one with a short ``max_len`` reads the recent segment's denser row groups.
    """
    old = recent_split(table.column("user_id").to_numpy(), table.column("ts").to_numpy(), newest_ts - RECENT_US)
    n_old = int(old.sum())
    if n_old < OLD_SHARE_MIN * len(old) or n_old == len(old):
        return [write_segment(root, table, event_type_column)]
    first = write_segment(root, table.filter(pa.array(old)), event_type_column)
    try:
        return [first, write_segment(root, table.filter(pa.array(~old)), event_type_column)]
    except BaseException:
        for rel in entry_files(first):
            (Path(root) / rel).unlink(missing_ok=True)
        raise


# What PyArrow raises on damaged Parquet bytes: besides its own errors, a damaged footer can surface as a
# KeyError or UnicodeDecodeError (a ValueError) while it decodes the schema's metadata.
PARSE_ERRORS = (pa.ArrowException, OSError, KeyError, ValueError, IndexError, TypeError)


def open_parquet(root, part: dict) -> pq.ParquetFile:
    """The part's Parquet file, checked against the manifest; FileNotFoundError when it is not there.

    ``root``: a local folder or a ``_fs.RemotePath`` (object storage); both are read through one
    random-access file, so the footer check and page checksums hold on either.
    """
    path = _fs.at(root) / part["file"]
    f = _fs.open_input(path)
    try:
        size = f.size()
        if size != part["bytes"]:
            raise CorruptionError(f"segment {path} has {size} bytes, the manifest says {part['bytes']}; the store "
                                  "is damaged, restore it from a backup")
        # the footer (schema, row groups, statistics) is checked end to end
        start = max(size - part.get("footer_bytes", 0), 0)
        tail = f.read_at(size - start, start)
        if "footer_crc" in part and zlib.crc32(tail) != part["footer_crc"]:
            raise CorruptionError(f"segment {path} footer fails its checksum; the store is damaged, restore it "
                                  "from a backup")
        # remotely, one coalesced set of ranged GETs per read instead of one request per column chunk
        pf = pq.ParquetFile(f, page_checksum_verification=True, pre_buffer=_fs.is_remote(path))
        pf.schema_arrow  # noqa: B018 - decode the schema now, so damage shows here, typed
        return pf
    except BaseException as e:
        f.close()
        if isinstance(e, FileNotFoundError) or not isinstance(e, PARSE_ERRORS):
            raise
        raise CorruptionError(f"segment {path} cannot be parsed: {e}; restore the store from a backup") from e


def read_groups_arrow(pf: pq.ParquetFile, path: str, groups: list, columns: list, name: str) -> dict:
    """The named columns of the given row groups, concatenated, as numpy arrays (the CPU reader)."""
    try:
        t = pf.read_row_groups(groups, columns=columns, use_threads=False)
    except PARSE_ERRORS as e:
        raise CorruptionError(f"{name} cannot be read: {e}; restore the store from a backup") from e
    return {c: np.asarray(t.column(c).combine_chunks() if t.column(c).num_chunks != 1 else t.column(c).chunk(0))
            for c in columns}


def row_group_rows(pf: pq.ParquetFile) -> np.ndarray:
    """Rows of each row group of ``pf``, from its footer (int64)."""
    md = pf.metadata
    return np.array([md.row_group(i).num_rows for i in range(md.num_row_groups)], np.int64)


def read_rows(pf: pq.ParquetFile, columns: list, rows: np.ndarray, name: str = "segment",
              read_groups=read_groups_arrow) -> dict:
    """Columns of the given sorted row numbers, reading only the row groups that hold them.

    ``read_groups(pf, path, groups, columns, name)`` does the I/O and returns NumPy arrays.
    """
    rg_rows = row_group_rows(pf)
    rg_start = offsets_of(rg_rows)
    if len(rows) == 0:
        return {c: None for c in columns}
    rows_group = np.searchsorted(rg_start, rows, side="right") - 1
    # rows are sorted, so their groups are too: keep the first of each run
    groups = rows_group[np.r_[True, rows_group[1:] != rows_group[:-1]]]
    got = read_groups(pf, name, groups.tolist(), columns, name)
    # map global row numbers into the concatenation of the read groups
    local_start = offsets_of(rg_rows[groups])
    g = np.searchsorted(groups, rows_group)
    local = rows - rg_start[groups[g]] + local_start[g]
    return {c: got[c][local] for c in columns}
