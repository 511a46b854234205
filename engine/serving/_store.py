"""``UIHStore``: the public facade over the log, the mutable tier, segments and manifests."""

from __future__ import annotations

import fcntl
import os
import threading
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

from .._errors import ImmutableError, SchemaError, UIHError
from .._ragged import group_starts, lookup
from . import _compaction, _log, _manifest, _segments
from ._immutable import ImmutableView
from ._mutable import MutableTier, SeqCounter
from ._schema import StoreSchema, coerce_events, coerce_requests, coerce_updates
from ._snapshot import fat_rows, thin_rows

LOG_DIR = "log"
LOCK = "LOCK"


class UIHStore:
    """An append-only, versioned store of user interaction histories (SPEC §2).

    One process writes (it holds ``LOCK``); any number may read. A store opened with ``version=V``
    is pinned to V: a read-only view of V's immutable tier that never sees later seals or compactions.
    """

    def __init__(self, root, manifest, writer_fd, pinned):
        self.root = Path(root)
        self.schema = StoreSchema.from_json(manifest["schema"])
        self._lock_fd = writer_fd
        self._pinned = pinned
        self._mu = threading.RLock()
        self._install(manifest)
        cols = self.schema.event_columns()
        self._mutable = MutableTier(cols, {c: self.schema.dtype(c) for c in cols})
        self._log = None
        self._replay()
        self._seqs = self._make_counter()

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def create(cls, path, columns, event_type_column="action") -> UIHStore:
        """Create an empty store at ``path`` (which must not hold one) with the declared columns."""
        schema = StoreSchema.declare(columns, event_type_column)
        root = Path(path)
        if _manifest.versions(root):
            raise UIHError(f"{root} already holds a UIH store; use UIHStore.open({str(root)!r})")
        (root / LOG_DIR).mkdir(parents=True, exist_ok=True)
        (root / _segments.DIR).mkdir(exist_ok=True)
        (root / _manifest.DIR).mkdir(exist_ok=True)
        fd = cls._try_lock(root)
        if fd is None:
            raise UIHError(f"{root} is being created by another process")
        log_name = f"{LOG_DIR}/{uuid.uuid4().hex[:12]}.log"
        _log.AppendLog.create(root / log_name).close()
        _manifest.write(root, {"version": 0, "schema": schema.to_json(), "segments": [], "log": log_name})
        return cls(root, _manifest.load(root), fd, pinned=False)

    @classmethod
    def open(cls, path, version=None) -> UIHStore:
        """Open an existing store, recovering from any crash; ``version`` pins a read-only view."""
        root = Path(path)
        fd = None if version is not None else cls._try_lock(root)
        manifest = _manifest.load(root, version)
        store = cls(root, manifest, fd, pinned=version is not None)
        if fd is not None:
            store._remove_orphans()
        return store

    @staticmethod
    def _try_lock(root: Path):
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def close(self) -> None:
        """Release the log and the writer lock; the object must not be used afterwards."""
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"UIHStore({str(self.root)!r}, version={self.version}, columns={self.schema.columns})"

    # ---- state ----------------------------------------------------------------------------------
    def _install(self, manifest):
        self._manifest = manifest
        self.view = ImmutableView(self.root, manifest, self.schema)

    @property
    def version(self) -> int:
        """Current store version: bumps on every seal and compaction."""
        return int(self._manifest["version"])

    @property
    def writable(self) -> bool:
        return self._lock_fd is not None

    def _replay(self):
        if self._pinned:
            return  # a pinned view serves time travel over the immutable tier; its log may be long gone
        path = self.root / self._manifest["log"]
        for kind, table in _log.AppendLog.replay(path, truncate=self.writable):
            self._apply(kind, {c: table.column(c).to_numpy() for c in table.column_names})
        if self.writable:
            self._log = _log.AppendLog(path)

    def _apply(self, kind, rows):
        if kind == _log.APPEND:
            self._mutable.add(rows)
        else:
            pos = self._mutable.positions(rows["user_id"], rows["seq"])
            self._mutable.set(pos, {c: v for c, v in rows.items() if c not in ("user_id", "seq")})

    def _check_writable(self, what):
        if self._pinned:
            raise UIHError(f"this store is pinned to version {self.version} (read-only); open it without "
                           f"version= to {what}")
        if not self.writable:
            raise UIHError(f"another process holds the writer lock of {self.root}; only it can {what}")

    def _make_counter(self) -> SeqCounter:
        s_users, s_counts = self.view.user_counts()
        m_users, _, m_counts, _ = self._mutable.runs()
        users = np.union1d(s_users, m_users)
        return SeqCounter(users, lookup(s_users, s_counts, users) + lookup(m_users, m_counts, users))

    # ---- writes ---------------------------------------------------------------------------------
    def append(self, events) -> np.ndarray:
        """Durably add events; returns the seq assigned to each input row (input order)."""
        with self._mu:
            self._check_writable("append")
            rows = coerce_events(events, self.schema)
            seq = rows["seq"] = self._seqs.assign(rows["user_id"])
            table = pa.table({c: rows[c] for c in self.schema.event_columns()})
            self._log.append(_log.APPEND, table)
            self._seqs.commit()
            self._mutable.add({c: rows[c] for c in self.schema.event_columns()})
            return seq

    def update(self, events) -> None:
        """Change feature values of mutable (not yet sealed) events, identified by (user_id, seq)."""
        with self._mu:
            self._check_writable("update")
            rows = coerce_updates(events, self.schema)
            pos = self._mutable.positions(rows["user_id"], rows["seq"])
            bad = np.flatnonzero(pos < 0)
            if len(bad):
                u, s = int(rows["user_id"][bad[0]]), int(rows["seq"][bad[0]])
                sealed = lookup(*self.view.user_counts(), rows["user_id"][bad[:1]])[0]
                why = "is sealed (immutable)" if 0 <= s < sealed else "does not exist"
                raise ImmutableError(f"update of user {u} seq {s}: the event {why}; {len(bad)} row(s) "
                                     "rejected, nothing applied. Only mutable events can be updated.")
            table = pa.table(rows)
            self._log.append(_log.UPDATE, table)
            self._mutable.set(pos, {c: v for c, v in rows.items() if c not in ("user_id", "seq")})

    def seal(self, cutoff_ts: int) -> int:
        """Move, per user, the longest prefix of mutable events with ``ts < cutoff_ts`` into a segment."""
        with self._mu:
            self._check_writable("seal")
            d = self._mutable.sorted()
            n = len(d["user_id"])
            ok = d["ts"] < int(cutoff_ts)
            # per user, position of the first event that may not seal; everything before it seals
            starts = group_starts(d["user_id"])
            pos = np.arange(n, dtype=np.int64)
            first_bad = np.minimum.reduceat(np.where(ok, n, pos), starts) if n else np.zeros(0, np.int64)
            lengths = np.diff(np.r_[starts, n])
            seal_mask = pos < np.repeat(first_bad, lengths)
            if not seal_mask.any():
                return self.version
            remaining, sealed = self._mutable.split(~seal_mask)
            entry = _segments.write_segment(self.root, pa.table(sealed), self.schema.event_type_column)
            table = pa.table({c: remaining[c] for c in self.schema.event_columns()})
            old_log, new_log = self._manifest["log"], f"{LOG_DIR}/{uuid.uuid4().hex[:12]}.log"
            log = _log.AppendLog.create(self.root / new_log, [(_log.APPEND, table)] if len(table) else [])
            self._commit({"segments": [*self._manifest["segments"], entry], "log": new_log},
                         cleanup=[*_segments.entry_files(entry), new_log])
            old = self._log
            self._log = log
            old.close()
            (self.root / old_log).unlink(missing_ok=True)
            self._mutable.replace(remaining)
            return self.version

    def compact(self, full: bool = False) -> int:
        """Merge segments into fewer, larger ones (size-tiered, LSM-style); returns the new version.

        By default size-tiered: the newest run of at least four segments of similar size (within 2x) is
        merged, so a large base segment is not rewritten every day; nothing due, nothing written.
        ``full=True`` merges everything. Seqs never change, so every thin row ever logged reconstructs
        identically.
        """
        with self._mu:
            self._check_writable("compact")
            segs = self._manifest["segments"]
            first = 0 if full else _compaction.run_start([e["main"]["rows"] for e in segs])
            if len(segs) - first <= 1:
                return self.version
            cols = self.schema.event_columns()
            tables = [self.view.parquet(s, "main").read(columns=cols) for s in range(first, len(segs))]
            merged = pa.concat_tables(tables).sort_by([("user_id", "ascending"), ("seq", "ascending")])
            entry = _segments.write_segment(self.root, merged, self.schema.event_type_column)
            self._commit({"segments": [*segs[:first], entry], "log": self._manifest["log"]},
                         cleanup=_segments.entry_files(entry))
            return self.version

    def _commit(self, changes: dict, cleanup: list) -> None:
        """Write manifest V+1; if that fails, remove the files written for it and keep V."""
        body = {**self._manifest, **changes, "version": self.version + 1}
        body.pop("format", None)
        try:
            _manifest.write(self.root, body)
        except BaseException:
            for rel in cleanup:
                (self.root / rel).unlink(missing_ok=True)
            raise
        self._install(_manifest.load(self.root, body["version"]))

    def _remove_orphans(self) -> None:
        """Delete what a crash left behind: temp files, logs and segments no manifest references."""
        live_logs = {self._manifest["log"]}
        live = set()
        for v in _manifest.versions(self.root):
            try:
                m = _manifest.load(self.root, v)
            except UIHError:
                continue
            for e in m["segments"]:
                live.update(_segments.entry_files(e))
        for p in (self.root / _manifest.DIR).glob(".tmp-*"):
            p.unlink(missing_ok=True)
        for p in (self.root / LOG_DIR).glob("*.log"):
            if f"{LOG_DIR}/{p.name}" not in live_logs:
                p.unlink(missing_ok=True)
        for p in (self.root / _segments.DIR).iterdir():
            if f"{_segments.DIR}/{p.name}" not in live:
                p.unlink(missing_ok=True)

    # ---- reads ----------------------------------------------------------------------------------
    def snapshot(self, requests, materialize: bool = False, max_len: int | None = None) -> pa.Table:
        """Thin rows (default) or, with ``materialize=True``, Fat Rows of the last ``max_len`` events."""
        with self._mu:
            table, uid, rts = coerce_requests(requests)
            if not materialize:
                return thin_rows(table, uid, rts, self.version, self.view.user_counts(), self._mutable,
                                 self.schema)
            if max_len is None or int(max_len) < 1:
                raise SchemaError(f"materialize=True needs max_len >= 1, got {max_len!r}")
            return fat_rows(table, uid, rts, self.view, self._mutable, self.schema, int(max_len))

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
        """Counts and bytes per tier, for ``uih inspect`` and reports."""
        segs = self._manifest["segments"]
        users, counts = self.view.user_counts()
        m_users = self._mutable.runs()[0]
        return {"version": self.version, "versions": _manifest.versions(self.root),
                "columns": dict(self.schema.columns), "event_type_column": self.schema.event_type_column,
                "segments": len(segs), "sealed_events": int(counts.sum()),
                "mutable_events": len(self._mutable),
                "users": int(len(np.union1d(users, m_users))),
                "segment_bytes": sum(e["main"]["bytes"] + e["main"]["index_bytes"] for e in segs),
                "sidecar_bytes": sum(e["rare"]["bytes"] + e["rare"]["index_bytes"] for e in segs if e["rare"]),
                "log_bytes": (self.root / self._manifest["log"]).stat().st_size,
                "rare_types": sorted({t for e in segs for t in e["rare_types"]})}
