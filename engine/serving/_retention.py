"""Retention: which manifests and files the store may delete, and how many bytes they hold.

A version's files are needed while its manifest exists. ``expire`` removes the manifests of versions
outside the newest ``keep_versions`` once they have been superseded for ``grace_s`` seconds (a reader
that opened such a version in that time keeps working), then every file in ``segments/`` and ``log/``
that no remaining manifest references. Manifests go first, so no manifest ever names a deleted file;
before them, ``HEAD`` (see ``_manifest``) records the new oldest retained version, so a manifest missing
from the retained range is damage, not retention.

Nothing is deleted that may belong to a version newer than the newest manifest: expire first checks the
store against HEAD (a lost newest manifest is a CorruptionError, nothing removed), and where a store has
no HEAD, files that no manifest names, and that no removed manifest named, are moved into
``_quarantine/`` (kept, reported by ``uih inspect``) instead of deleted.
"""

from __future__ import annotations

import math
import numbers
import os
import time
from pathlib import Path

from .._errors import CorruptionError, InvalidArgument
from . import _fs, _manifest, _segments
from ._durable import fsync_dir

LOG_DIR = "log"
DEFAULT_KEEP_VERSIONS = 2
DEFAULT_GRACE_S = 3600.0  # longer than a reader usually holds a version between open and its last read


def check_policy(keep_versions, grace_s) -> tuple:
    """(keep_versions, grace_s) validated: an integer >= 1 and a finite number of seconds >= 0."""
    if isinstance(keep_versions, bool) or not isinstance(keep_versions, numbers.Integral) or keep_versions < 1:
        raise InvalidArgument(f"keep_versions must be an integer >= 1 (the current version is always kept), "
                              f"got {keep_versions!r}")
    return int(keep_versions), check_seconds("grace_s", grace_s)


def check_seconds(name: str, value) -> float:
    """``value`` as a float, if it is a finite number of seconds >= 0 (else an InvalidArgument naming ``name``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def check_retention(retention):
    """A store's automatic retention policy: None (keep every version) or a dict of expire()'s arguments."""
    if retention is None:
        return None
    if not isinstance(retention, dict) or set(retention) - {"keep_versions", "grace_s"}:
        raise InvalidArgument(f"retention must be None or a dict with keep_versions and/or grace_s, got {retention!r}")
    keep, grace = check_policy(retention.get("keep_versions", DEFAULT_KEEP_VERSIONS),
                               retention.get("grace_s", DEFAULT_GRACE_S))
    return {"keep_versions": keep, "grace_s": grace}


def files_of(manifest: dict) -> set:
    """Store-relative paths of every data file a version needs: its segments and its log."""
    out = {manifest["log"]}
    for e in manifest["segments"]:
        out.update(_segments.entry_files(e))
    return out


def _committed_at(root: Path, v: int, manifest) -> float:
    if manifest is not None and "committed_at" in manifest:
        return float(manifest["committed_at"])
    try:  # format 1 manifests carry no commit time; the file's mtime is when it was written
        return _manifest.path_of(root, v).stat().st_mtime
    except FileNotFoundError:
        return math.inf


def _load_all(root: Path, vs: list) -> dict:
    """Version -> manifest, or the CorruptionError that reading it raised."""
    out: dict[int, dict | CorruptionError] = {}
    for v in vs:
        try:
            out[v] = _manifest.load(root, v)
        except CorruptionError as e:
            out[v] = e
    return out


def _checked(root: Path, ms: dict) -> list:
    """The manifests of ``ms``, ascending, each readable and chained to the one before it."""
    out: list[dict] = []
    for v in sorted(ms):
        if isinstance(ms[v], CorruptionError):
            raise ms[v]
        if out and out[-1]["version"] == v - 1:
            _manifest.check_link(root, out[-1], ms[v])
        out.append(ms[v])
    return out


def referenced(root: Path) -> set:
    """Every file named by some manifest; a manifest that cannot be read or does not chain to the one
    before it is a CorruptionError (it might name any file)."""
    live = set()
    for m in _checked(root, _load_all(root, _manifest.versions(root))):
        live |= files_of(m)
    return live


def quarantine(root: Path, rel: str) -> None:
    """Move ``rel`` into the store's quarantine folder (same file system: a rename), never deleting."""
    dest = root / _manifest.QUARANTINE / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    while dest.exists():  # a file of the same name quarantined earlier stays as it is
        n += 1
        dest = dest.with_name(f"{Path(rel).name}.{n}")
    os.rename(root / rel, dest)
    fsync_dir(dest.parent)


def quarantined(root) -> dict:
    """Store-relative path -> bytes of every file in the quarantine folder."""
    q = _fs.at(root) / _manifest.QUARANTINE
    if _fs.is_remote(q) or not q.is_dir():
        return {}
    return {p.relative_to(_fs.at(root)).as_posix(): p.stat().st_size for p in sorted(q.rglob("*")) if p.is_file()}


def clear_orphans(root: Path, live: set, delete: bool, known: frozenset = frozenset()) -> set:
    """Remove data files outside ``live``: delete those in ``known`` (named by an expired manifest), and
    the rest if ``delete`` (the caller proved no newer version may need them), else quarantine them.
    Returns the store-relative paths quarantined."""
    root, moved, touched = Path(root), set(), set()
    for rel in data_files(root):
        if rel in live:
            continue
        if delete or rel in known:
            (root / rel).unlink(missing_ok=True)
        else:
            quarantine(root, rel)
            moved.add(rel)
        touched.add(rel.split("/")[0])
    for d in touched:
        fsync_dir(root / d)
    return moved


def check_present(root, manifest: dict) -> None:
    """Raise for the first segment or index file of ``manifest`` that is missing, or not the size it was
    committed with: a CorruptionError naming it (a VersionError where retention removed the version)."""
    have = data_files(root, (_segments.DIR,))
    for e in manifest["segments"]:
        for part in _segments.PARTS:
            p = e.get(part)
            for rel, size, what in ((p["file"], p.get("bytes"), "segment"),
                                    (p["index"], p.get("index_bytes"), "segment index")) if p else ():
                if rel not in have:
                    raise _manifest.gone(root, manifest["version"], _fs.at(root) / rel, what)
                if size is not None and have[rel] != size:
                    raise CorruptionError(f"{what} {_fs.at(root) / rel} has {have[rel]} bytes, but store version "
                                          f"{manifest['version']} was committed with {size}; restore it from a backup")


def data_files(root, dirs=(_segments.DIR, LOG_DIR)) -> dict:
    """Store-relative path -> bytes of every file in ``dirs`` (default ``segments/`` and ``log/``)."""
    root = _fs.at(root)
    return {f"{d}/{name}": size for d in dirs for name, size in _fs.sizes(root / d).items()}


def expire(root: Path, keep_versions: int, grace_s: float, now: float | None = None) -> dict:
    """Remove what no retained version needs (see the module docstring); returns what was removed."""
    keep_versions, grace_s = check_policy(keep_versions, grace_s)
    root = Path(root)
    now = time.time() if now is None else now
    _, head = _manifest.load_checked(root)  # the newest manifest lost or replaced: CorruptionError, nothing removed
    vs = _manifest.versions(root)
    ms = _load_all(root, vs)
    removable = []
    for i, v in enumerate(vs[:-keep_versions] if len(vs) > keep_versions else []):
        nxt = vs[i + 1]  # version v stopped being the newest when nxt was committed
        nxt_m = None if isinstance(ms[nxt], CorruptionError) else ms[nxt]
        if _committed_at(root, nxt, nxt_m) + grace_s > now:
            break  # every later version was superseded later still
        removable.append(v)
    remaining = _checked(root, {v: m for v, m in ms.items() if v not in removable})
    if removable and head is not None:
        _manifest.write_head(root, {**head, "oldest": remaining[0]["version"]})  # first: see the docstring
    for v in removable:
        _manifest.path_of(root, v).unlink(missing_ok=True)
    if removable:
        fsync_dir(root / _manifest.DIR)
    live = set().union(*(files_of(m) for m in remaining))
    expired = frozenset().union(*(files_of(ms[v]) for v in removable if isinstance(ms[v], dict)))
    freed = {rel: size for rel, size in data_files(root).items() if rel not in live}
    moved = clear_orphans(root, live, delete=head is not None, known=expired)
    return {"versions_removed": removable, "files_removed": len(freed) - len(moved),
            "bytes_freed": sum(size for rel, size in freed.items() if rel not in moved),
            "files_quarantined": len(moved)}


def disk_usage(root, manifest: dict) -> dict:
    """Bytes on disk: ``live_bytes`` that the given version needs, ``reclaimable_bytes`` the rest."""
    files = data_files(root, (_segments.DIR, LOG_DIR, _manifest.DIR))
    own = f"{_manifest.DIR}/{_manifest.path_of(root, manifest['version']).name}"
    live = sum(files.get(rel, 0) for rel in [*files_of(manifest), own])
    return {"disk_bytes": sum(files.values()), "live_bytes": live,
            "reclaimable_bytes": sum(files.values()) - live}
