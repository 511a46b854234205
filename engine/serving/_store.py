"""``UIHStore``: the public facade over the log, the mutable tier, segments and manifests."""

from __future__ import annotations

import logging
import os
import threading
import uuid
import warnings
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from .._errors import CorruptionError, ImmutableError, InvalidArgument, UIHError, VersionError
from .._ragged import group_starts, lookup
from .._types import StorePath, TableLike
from . import _compaction, _fs, _log, _manifest, _publish, _retention, _segments
from ._immutable import ImmutableView
from ._lock import WriterLock
from ._mutable import MutableTier, SeqCounter
from ._schema import (
    StoreSchema,
    as_int64,
    check_bool,
    check_max_len,
    check_path,
    coerce_events,
    coerce_requests,
    coerce_updates,
)
from ._segment_info import SegmentInfo
from ._snapshot import fat_rows, thin_rows

logger = logging.getLogger("uih.engine.store")

LOG_DIR = _retention.LOG_DIR
READ_RETRIES = 8  # a reader re-loads the newest manifest this often when retention removes files under it


def _store_root(path, filesystem=None):
    """``path`` (local, or a URI / ``filesystem`` path) as a store root, or CorruptionError saying why it is
    not one (nothing is created)."""
    root = _fs.resolve(path, filesystem)
    try:
        found, folder, vs = _fs.exists(root), _fs.is_dir(root), _manifest.versions(root)
    except OSError as e:  # remotely: no route, bad credentials, no permission (before any store file is read)
        if not _fs.is_remote(root):
            raise
        raise UIHError(f"cannot read {root} ({e}); check the URI, the endpoint and the credentials "
                       "(filesystem=, or the AWS_*/GOOGLE_* environment variables)") from e
    if not found:
        raise CorruptionError(f"no UIH store at {root}: the path does not exist; create one with UIHStore.create")
    if not folder:
        raise CorruptionError(f"no UIH store at {root}: it is not a directory; pass the store's folder")
    if not vs:
        _manifest.load_checked(root)  # a store whose HEAD outlived every manifest says so
    return root


class UIHStore:
    """An append-only, versioned store of user interaction histories (docs/concepts.md).

    One process writes (it holds ``LOCK``); any number may read. A reader never locks, writes, truncates
    or deletes: ``read_only=True`` reads the newest version (the immutable tier plus the mutable tier
    replayed from the log, as far as the log reached at open); ``version=V`` pins a read-only view of V's
    immutable tier that never sees later seals or compactions. Old versions stay readable until
    ``expire`` removes them.
    """

    def __init__(self, root: StorePath | _fs.RemotePath, manifest: dict, lock: WriterLock | None, pinned: bool,
                 read_only_why: str | None = None, retention: Mapping[str, Any] | None = None,
                 head: dict | None = None) -> None:
        self.root = _fs.at(root)  # a Path, or a _fs.RemotePath for a store on object storage (read-only)
        self.schema = StoreSchema.from_json(manifest["schema"])
        self._lock = lock
        self._pinned = pinned
        self._read_only_why = read_only_why
        self._retention = retention
        self._mu = threading.RLock()
        self._head = head  # the store's HEAD as this handle last read or wrote it (None: the store has none)
        self._install(manifest)
        self._tier: MutableTier | None = None  # a reader's is decoded from the log on first use
        self._log_span: tuple = (0, 0)  # (bytes, chain value) of the log a reader checked at open
        self._log: Any = None  # a writer's AppendLog once replayed; None for a reader
        self._replay()
        self._counter: SeqCounter | None = None  # built on the first append

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: StorePath, columns: Mapping[str, Any], event_type_column: str = "action",
               retention: Mapping[str, Any] | None = None) -> UIHStore:
        """Create an empty store at ``path`` (which must not hold one) with the declared columns.

        ``retention``: None keeps every version; ``{"keep_versions": N, "grace_s": S}`` makes every seal
        and compaction of this handle call ``expire(N, S)``.
        """
        check_path(path)
        schema = StoreSchema.declare(columns, event_type_column)
        retention = _retention.check_retention(retention)
        if _fs.is_uri(path):
            raise InvalidArgument(f"cannot create a store at {path}: the writer needs a local (POSIX) folder for its "
                                  "lock, fsync and rename; create it locally and copy it there with engine.publish "
                                  "(uih publish)")
        root = _fs.resolve(path)  # a Path (file:// URIs included)
        if root.exists() and not root.is_dir():
            raise InvalidArgument(f"{root} exists and is not a directory; choose another path for the store")
        if _manifest.versions(root):
            raise UIHError(f"{root} already holds a UIH store; use UIHStore.open({str(root)!r})")
        (root / LOG_DIR).mkdir(parents=True, exist_ok=True)
        (root / _segments.DIR).mkdir(exist_ok=True)
        (root / _manifest.DIR).mkdir(exist_ok=True)
        lock, why = WriterLock.try_take(root)
        if lock is None:
            raise UIHError(f"{root} cannot be created: {why}")
        try:
            log_name = f"{LOG_DIR}/{uuid.uuid4().hex[:12]}.log"
            _log.AppendLog.create(root / log_name).close()
            body = _manifest.write(root, {"version": 0, "schema": schema.to_json(), "segments": [], "log": log_name,
                                          "store_id": uuid.uuid4().hex, "log_bytes": 0, "log_crc32": 0})
            head = _manifest.head_for(body, 0, 0, 0)
            _manifest.write_head(root, head)
            return cls(root, _manifest.load(root), lock, pinned=False, retention=retention, head=head)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open(cls, path: StorePath | _fs.RemotePath, version: int | None = None, read_only: bool = False,
             retention: Mapping[str, Any] | None = None, filesystem: pafs.FileSystem | None = None) -> UIHStore:
        """Open an existing store, recovering from any crash; ``version`` pins a read-only view.

        ``read_only=True`` (or a store whose lock another holder has) opens a reader at the newest
        version that never locks, writes, truncates or deletes. ``retention``: as in ``create``.

        Every open checks the store against its HEAD (``_manifest``): a lost, damaged or replaced manifest
        of a retained version, a missing segment file of the version opened, or a log shorter than its
        acknowledged length is a CorruptionError naming what to restore, never an older version.

        A reader's open checks the manifests, the sizes of the version's files and every log record's
        framing (checksums, chain, the acknowledged length), and decodes nothing: the log's records are
        decoded (and checked again) when it first reads the mutable tier, segment indexes when it first
        reads the immutable tier. Only the writer's open clears orphaned files and repairs a torn tail.

        ``path`` may be a URI that ``pyarrow.fs`` understands (``s3://bucket/store``, ``gs://...``,
        ``hdfs://...``), or a path inside ``filesystem`` (a ``pyarrow.fs.FileSystem``, for endpoint
        overrides and credentials). Such a store opens only for reading (``read_only=True`` or
        ``version=V``); its mutable tier is the published log, or empty when none was published.
        """
        check_path(path)
        read_only = check_bool(read_only, "read_only")
        root = _store_root(path, filesystem)
        retention = _retention.check_retention(retention)
        if _fs.is_remote(root) and version is None and not read_only:
            raise InvalidArgument(f"{root} is on object storage, where a store can only be read: open it with "
                                  "read_only=True or version=V. Write to the local store and publish it "
                                  "(engine.publish / uih publish)")
        if version is not None:
            version = as_int64(version, "version")
            return cls._reader(root, version, "it is pinned to a version")
        if read_only:
            return cls._reader(root, None, "it was opened with read_only=True")
        lock, why = WriterLock.try_take(root)
        if lock is None:
            return cls._reader(root, None, why)
        try:
            manifest, head = _manifest.load_checked(root)
            _retention.check_present(root, manifest)
            store = cls(root, manifest, lock, pinned=False, retention=retention, head=head)
            store._recover()
            return store
        except BaseException:
            lock.release()
            raise

    @classmethod
    def _reader(cls, root, version, why: str) -> UIHStore:
        """A reader; when retention removes the newest version's files under it, re-load and retry."""
        for _ in range(READ_RETRIES):
            tried = (_manifest.versions(root) or [None])[-1]
            try:
                manifest, head = _manifest.load_checked(root, version, READ_RETRIES)
                tried = manifest["version"]
                _retention.check_present(root, manifest)
                return cls(root, manifest, None, pinned=version is not None, read_only_why=why, head=head)
            except VersionError:
                if version is not None or tried in _manifest.versions(root):
                    raise  # not a race with retention (e.g. a store newer than this code)
                # the version we loaded was expired while we read it: a newer one exists, take it
        raise VersionError(f"store {root} expired {READ_RETRIES} versions in a row while this reader opened "
                           "them; retry, or give expire a longer grace_s")

    def close(self) -> None:
        """Release the log and the writer lock; the object must not be used afterwards.

        A writer first records in HEAD how far the log was acknowledged, so that a later cut of any
        acknowledged record is a CorruptionError (after a crash only the last commit's marker holds).
        """
        if self._log is not None:
            if self._head is not None and not self._log._broken and self._log.size != self._head["log_bytes"]:
                try:
                    self._write_head(self._head["oldest"])
                except OSError:
                    pass  # HEAD keeps the previous marker: later records are then only torn-tail checked
            self._log.close()
            self._log = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> UIHStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"UIHStore({str(self.root)!r}, version={self.version}, columns={self.schema.columns})"

    # ---- state ----------------------------------------------------------------------------------
    def _install(self, manifest):
        self._manifest = manifest
        self.view = ImmutableView(self.root, manifest, self.schema)

    @staticmethod
    def versions(path: str | os.PathLike[str] | _fs.RemotePath, filesystem: pafs.FileSystem | None = None) -> list[int]:
        """The versions a store at ``path`` (a folder or a URI) holds, ascending; [] where it holds none."""
        return _manifest.versions(_fs.resolve(path, filesystem))

    @property
    def segments(self) -> tuple[SegmentInfo, ...]:
        """The current version's immutable segments (``SegmentInfo``: files, bytes, sidecars' event types)."""
        return tuple(SegmentInfo.of(e) for e in self._manifest["segments"])

    @property
    def version(self) -> int:
        """Current store version: bumps on every seal and compaction."""
        return int(self._manifest["version"])

    @property
    def store_id(self) -> str:
        """The id fixed at creation; thin rows carry it. Format-1 stores derive one from their schema."""
        sid = self._manifest.get("store_id")
        if sid is None:
            schema = repr(self._manifest["schema"]).encode()
            return f"legacy-{zlib.crc32(schema):08x}"
        return str(sid)

    @property
    def writable(self) -> bool:
        return self._lock is not None

    def _empty_tier(self) -> MutableTier:
        cols = self.schema.event_columns()
        return MutableTier(cols, {c: self.schema.dtype(c) for c in cols})

    def _tier_of(self, records: list) -> MutableTier:
        tier = self._empty_tier()
        for kind, table in records:
            rows = {c: table.column(c).to_numpy() for c in table.column_names}
            if kind == _log.APPEND:
                tier.add(rows)
            else:
                pos = tier.positions(rows["user_id"], rows["seq"])
                tier.set(pos, {c: v for c, v in rows.items() if c not in ("user_id", "seq")})
        return tier

    def _replay(self):
        """Check the log against the acknowledged markers; a writer also repairs a torn tail and decodes
        the mutable tier now, a reader only when it first reads the mutable tier (``_mutable``): opening
        for reads immutable segments (training) then costs no decoding."""
        if self._pinned:
            self._tier = self._empty_tier()  # a pinned view serves time travel over the immutable tier; its
            return  # log may be long gone
        path = self.root / self._manifest["log"]
        if not self.writable and not _publish.check_log(self.root, self._manifest):
            self._tier = self._empty_tier()  # published without its log (engine.publish, include_log=False)
            return
        acked = (self._manifest.get("log_bytes", 0), self._manifest.get("log_crc32", 0))
        head = self._head
        if head is not None and head["version"] == self.version and head["log"] == self._manifest["log"] \
                and head["log_bytes"] > acked[0]:
            acked = (head["log_bytes"], head["log_crc32"])  # a later marker: a writer open or clean close
        try:
            # every record's framing is checked here, so a damaged, cut or spliced log fails the open
            found = _log.recover(path, repair=self.writable, acked=acked, decode=self.writable)
        except FileNotFoundError:
            # damage, or a version that retention (expire, publish(prune=True)) removed while this reader
            # opened it (the reader then takes the newer one), never an empty mutable tier
            raise _manifest.gone(self.root, self.version, path, "log") from None
        if self.writable:
            self._tier = self._tier_of(found.records)
            self._log = _log.AppendLog(path, found.chain)
        else:
            self._log_span = (found.end, found.chain)

    @property
    def _mutable(self) -> MutableTier:
        """The mutable tier: a reader decodes the records it checked at open (none written since)."""
        if self._tier is None:
            with self._mu:
                if self._tier is None:
                    path = self.root / self._manifest["log"]
                    end, chain = self._log_span
                    try:
                        found = _log.recover(path, acked=(end, chain), stop=end)
                    except FileNotFoundError:  # retention removed this version's log since the open
                        raise _manifest.gone(self.root, self.version, path, "log") from None
                    self._tier = self._tier_of(found.records)
        return self._tier

    @property
    def _seqs(self) -> SeqCounter:
        """Each user's next seq (only appends need it: built on the first one)."""
        if self._counter is None:
            self._counter = self._make_counter()
        return self._counter

    def _check_writable(self, what):
        if self._pinned:
            raise UIHError(f"this store is pinned to version {self.version} (read-only); open it without "
                           f"version= to {what}")
        if not self.writable:
            raise UIHError(f"this handle of {self.root} is read-only ({self._read_only_why}); only the holder "
                           f"of the writer lock can {what}: open it with UIHStore.open(path) in that process")

    def _make_counter(self) -> SeqCounter:
        s_users, s_counts = self.view.user_counts()
        m_users, _, m_counts, _ = self._mutable.runs()
        users = np.union1d(s_users, m_users)
        return SeqCounter(users, lookup(s_users, s_counts, users) + lookup(m_users, m_counts, users))

    # ---- writes ---------------------------------------------------------------------------------
    def append(self, events: TableLike) -> np.ndarray:
        """Durably add events; returns the seq assigned to each input row (input order)."""
        with self._mu:
            self._check_writable("append")
            rows = coerce_events(events, self.schema)
            seq, order = self._seqs.assign(rows["user_id"])
            rows["seq"] = seq
            # in (user_id, seq) order, as the record's payload wants it (delta keys, clustered users)
            keyed = {c: rows[c][order] for c in self.schema.event_columns()}
            self._log.append(_log.APPEND, pa.table(keyed), presorted=True)
            self._seqs.commit()
            self._mutable.add(keyed)
            return seq

    def update(self, events: TableLike) -> None:
        """Change feature values of mutable (not yet sealed) events, identified by (user_id, seq)."""
        with self._mu:
            self._check_writable("update")
            rows = coerce_updates(events, self.schema)
            pos = self._mutable.positions(rows["user_id"], rows["seq"])
            bad = np.flatnonzero(pos < 0)
            if len(bad):
                u, s = int(rows["user_id"][bad[0]]), int(rows["seq"][bad[0]])
                sealed_users, sealed_counts = self.view.user_counts()
                sealed = lookup(sealed_users, sealed_counts, rows["user_id"][bad[:1]])[0]
                why = "is sealed (immutable)" if 0 <= s < sealed else "does not exist"
                raise ImmutableError(f"update of user {u} seq {s}: the event {why}; {len(bad)} row(s) "
                                     "rejected, nothing applied. Only mutable events can be updated.")
            table = pa.table(rows)
            self._log.append(_log.UPDATE, table)
            self._mutable.set(pos, {c: v for c, v in rows.items() if c not in ("user_id", "seq")})

    def seal(self, cutoff_ts: int) -> int:
        """Move, per user, the longest prefix of mutable events with ``ts < cutoff_ts`` into a segment
        (two, old then recent, when a quarter of them is older than ``_segments.RECENT_US``).

        The previous log stays on disk for readers of the previous version until ``expire`` removes it.
        """
        cutoff = as_int64(cutoff_ts, "cutoff_ts")
        with self._mu:
            self._check_writable("seal")
            d = self._mutable.sorted()
            n = len(d["user_id"])
            ok = d["ts"] < cutoff
            # per user, position of the first event that may not seal; everything before it seals
            starts = group_starts(d["user_id"])
            pos = np.arange(n, dtype=np.int64)
            first_bad = np.minimum.reduceat(np.where(ok, n, pos), starts) if n else np.zeros(0, np.int64)
            lengths = np.diff(np.r_[starts, n])
            seal_mask = pos < np.repeat(first_bad, lengths)
            if not seal_mask.any():
                return self.version
            remaining, sealed = self._mutable.split(~seal_mask)
            # "recent" is relative to the newest event sealed now (a cutoff may lie far in the future)
            entries = _segments.write_segments(self.root, pa.table(sealed), self.schema.event_type_column,
                                               int(sealed["ts"].max()))
            table = pa.table({c: remaining[c] for c in self.schema.event_columns()})
            new_log = f"{LOG_DIR}/{uuid.uuid4().hex[:12]}.log"
            written = [*(f for e in entries for f in _segments.entry_files(e)), new_log]
            try:
                log = _log.AppendLog.create(self.root / new_log, [(_log.APPEND, table, True)] if len(table) else [],
                                            encodings=self._log.encodings)
            except BaseException:
                self._discard(written)
                raise
            try:
                self._commit({"segments": [*self._manifest["segments"], *entries], "log": new_log}, log,
                             cleanup=written)
            except BaseException:
                log.close()
                raise
            old = self._log
            self._log = log
            old.close()
            self._mutable.replace(remaining)
            logger.info("sealed %d events into %d segment(s) of %s: version %d", int(seal_mask.sum()), len(entries),
                        self.root, self.version)
            self._auto_expire()
            return self.version

    def compact(self, full: bool = False) -> int:
        """Merge segments into fewer, larger ones (size-tiered, LSM-style); returns the new version.

        By default size-tiered (``_compaction.plan``): the cheapest contiguous run of at least four
        segments of similar size (within 2x) merges into one in their place, so a large base segment is
        not rewritten every day; past 16 segments, a balanced window (its largest segment at most half
        of it) restores the bound. Nothing due, nothing written.
        ``full=True`` merges everything. Seqs never change, so every thin row ever logged reconstructs
        identically.
        """
        full = check_bool(full, "full")
        with self._mu:
            self._check_writable("compact")
            segs = self._manifest["segments"]
            first, stop = (0, len(segs)) if full else _compaction.plan([e["main"]["rows"] for e in segs])
            if stop - first <= 1:
                return self.version
            cols = self.schema.event_columns()
            tables = [self.view.parquet(s, "main").read(columns=cols) for s in range(first, stop)]
            merged = pa.concat_tables(tables).sort_by([("user_id", "ascending"), ("seq", "ascending")])
            # "recent" is relative to the newest sealed event of the store, not of the merged run
            newest = max(int(self.view.index(s, "main")["ts_max"].max(initial=0)) for s in range(len(segs)))
            entries = _segments.write_segments(self.root, merged, self.schema.event_type_column, newest)
            self._commit({"segments": [*segs[:first], *entries, *segs[stop:]], "log": self._manifest["log"]},
                         self._log, cleanup=[f for e in entries for f in _segments.entry_files(e)])
            logger.info("compacted %d segments into %d in %s: version %d", stop - first, len(entries), self.root,
                        self.version)
            self._auto_expire()
            return self.version

    def expire(self, keep_versions: int = _retention.DEFAULT_KEEP_VERSIONS,
               grace_s: float = _retention.DEFAULT_GRACE_S) -> dict:
        """Remove manifests and files that none of the newest ``keep_versions`` versions needs, once
        they have been superseded for ``grace_s`` seconds (0: at once). Returns what was removed.

        A reader that opened a removed version within its grace period keeps working; one that reads it
        later gets a VersionError. Thin rows stay reconstructible by every retained version.
        """
        keep_versions, grace_s = _retention.check_policy(keep_versions, grace_s)
        with self._mu:
            self._check_writable("expire")
            try:
                return _retention.expire(self.root, keep_versions, grace_s)
            finally:
                self._head = _manifest.read_head(self.root)  # expire raised its ``oldest``

    def _auto_expire(self) -> None:
        """Apply the handle's retention policy after a commit; the commit stands even if this fails."""
        if self._retention is None:
            return
        try:
            _retention.expire(self.root, **self._retention)
            self._head = _manifest.read_head(self.root)
        except (OSError, UIHError) as e:
            warnings.warn(f"retention after version {self.version} failed ({e}); the next seal, compact or "
                          "expire() retries it", RuntimeWarning, stacklevel=3)

    def _commit(self, changes: dict, log, cleanup: list) -> None:
        """Write manifest V+1 (``log``: the log it names, open), then HEAD; if either fails, remove
        manifest V+1 and the files written for it, put HEAD back, and keep V."""
        body = {**self._manifest, **changes, "version": self.version + 1,
                "prev_crc32": _manifest.crc_of(self._manifest), "log_bytes": log.size, "log_crc32": log.chain}
        for k in ("format", "committed_at"):
            body.pop(k, None)
        oldest = self._head["oldest"] if self._head is not None else self.version  # (_recover wrote HEAD)
        try:
            _manifest.write(self.root, body)
            manifest = _manifest.load(self.root, body["version"])
            head = _manifest.head_for(manifest, oldest, log.size, log.chain)
            _manifest.write_head(self.root, head)
        except BaseException:
            # the rename may have happened before a failing directory sync: V+1 must not survive
            self._discard([f"{_manifest.DIR}/{_manifest.path_of(self.root, body['version']).name}", *cleanup])
            if self._head is not None:
                try:
                    _manifest.write_head(self.root, self._head)
                except OSError:
                    pass  # HEAD names V+1 without its manifest: opens say so, nothing is deleted
            raise
        self._head = head
        self._install(manifest)

    def _write_head(self, oldest: int) -> None:
        head = _manifest.head_for(self._manifest, oldest, self._log.size, self._log.chain)
        _manifest.write_head(self.root, head)
        self._head = head

    def _discard(self, rels: list) -> None:
        """Best-effort removal of files written for a call that failed (the next writer open retries)."""
        for rel in rels:
            try:
                (self.root / rel).unlink(missing_ok=True)
            except OSError:
                pass

    def _recover(self) -> None:
        """A writer open: check every manifest, clear what a crash left behind, and write HEAD.

        Files no manifest names are what a crash left of a version that was never committed (HEAD names
        the newest commit, and ``load_checked`` found its manifest) or of expired versions: deleted.
        Without HEAD that cannot be told from the files of a lost newer manifest: moved to the quarantine.
        """
        for p in (self.root / _manifest.DIR).glob(".tmp-*"):
            p.unlink(missing_ok=True)
        live = _retention.referenced(self.root)
        _retention.clear_orphans(self.root, live, delete=self._head is not None)
        if self._head is not None:
            oldest = self._head["oldest"]
        else:  # a store without HEAD: from now on, the versions down to the first gap must stay
            vs, oldest = set(_manifest.versions(self.root)), self.version
            while oldest - 1 in vs:
                oldest -= 1
        self._write_head(oldest)

    # ---- reads ----------------------------------------------------------------------------------
    def snapshot(self, requests: TableLike, materialize: bool = False, max_len: int | None = None) -> pa.Table:
        """Thin rows (default) or, with ``materialize=True``, Fat Rows of the last ``max_len`` events."""
        limit = check_max_len(max_len) if check_bool(materialize, "materialize") else 0
        with self._mu:
            table, uid, rts = coerce_requests(requests)
            if not materialize:
                return thin_rows(table, uid, rts, self.store_id, self.version, self.view.user_counts(), self._mutable,
                                 self.schema)
            return fat_rows(table, uid, rts, self.view, self._mutable, self.schema, limit)

    def to_table(self) -> pa.Table:
        """Every event (sealed and mutable), sorted by (user_id, seq), with a boolean ``sealed`` column."""
        with self._mu:
            cols = self.schema.event_columns()
            users, _ = self.view.user_counts()
            buf = self.view.gather(users, cols[2:] + ["user_id"])
            mut = self._mutable.sorted()
            merged = {c: np.concatenate([buf.columns[c], mut[c]]) for c in cols}
            sealed = np.r_[np.ones(buf.num_events, bool), np.zeros(len(mut["user_id"]), bool)]
            order = np.lexsort((merged["seq"], merged["user_id"]))
            return pa.table({**{c: merged[c][order] for c in cols}, "sealed": sealed[order]})

    def stats(self) -> dict:
        """Counts and bytes per tier, and live vs reclaimable bytes on disk, for ``uih inspect``."""
        segs = self._manifest["segments"]
        try:
            log_bytes = _fs.size(self.root / self._manifest["log"])
        except FileNotFoundError:
            log_bytes = 0  # a pinned old version whose log retention has removed
        users, counts = self.view.user_counts()
        m_users = self._mutable.runs()[0]
        return {"version": self.version, "versions": _manifest.versions(self.root), "store_id": self.store_id,
                "columns": dict(self.schema.columns), "event_type_column": self.schema.event_type_column,
                "segments": len(segs), "sealed_events": int(counts.sum()),
                "mutable_events": len(self._mutable),
                "users": int(len(np.union1d(users, m_users))),
                "segment_bytes": sum(e["main"]["bytes"] + e["main"]["index_bytes"] for e in segs),
                "sidecar_bytes": sum(e[p]["bytes"] + e[p]["index_bytes"] for e in segs for p in _segments.SIDECARS
                                     if e.get(p)),
                "log_bytes": log_bytes, "quarantined": _retention.quarantined(self.root),
                "rare_types": sorted({t for e in segs for t in e["rare_types"]}),
                "uncommon_types": sorted({t for e in segs for t in e.get("uncommon_types", [])}),
                **_retention.disk_usage(self.root, self._manifest)}
