"""Retention: which manifests and files the store may delete, and how many bytes they hold.

A version's files are needed while its manifest exists. ``expire`` removes the manifests of versions
outside the newest ``keep_versions`` once they have been superseded for ``grace_s`` seconds (a reader
that opened such a version in that time keeps working), then every file in ``segments/`` and ``log/``
that no remaining manifest references. Manifests go first, so no manifest ever names a deleted file.
"""

from __future__ import annotations

import math
import numbers
import time
from pathlib import Path

from .._errors import SchemaError, UIHError
from . import _fs, _manifest, _segments
from ._durable import fsync_dir

LOG_DIR = "log"
DEFAULT_KEEP_VERSIONS = 2
DEFAULT_GRACE_S = 3600.0  # longer than a reader usually holds a version between open and its last read


def check_policy(keep_versions, grace_s) -> tuple:
    """(keep_versions, grace_s) validated: an integer >= 1 and a finite number of seconds >= 0."""
    if isinstance(keep_versions, bool) or not isinstance(keep_versions, numbers.Integral) or keep_versions < 1:
        raise SchemaError(f"keep_versions must be an integer >= 1 (the current version is always kept), "
                          f"got {keep_versions!r}")
    return int(keep_versions), check_seconds("grace_s", grace_s)


def check_seconds(name: str, value) -> float:
    """``value`` as a float, if it is a finite number of seconds >= 0 (else a SchemaError naming ``name``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise SchemaError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def check_retention(retention):
    """A store's automatic retention policy: None (keep every version) or a dict of expire()'s arguments."""
    if retention is None:
        return None
    if not isinstance(retention, dict) or set(retention) - {"keep_versions", "grace_s"}:
        raise SchemaError(f"retention must be None or a dict with keep_versions and/or grace_s, got {retention!r}")
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
    out = {}
    for v in vs:
        try:
            out[v] = _manifest.load(root, v)
        except UIHError:
            out[v] = None
    return out


def referenced(root: Path):
    """Every file named by some manifest, or None when a manifest cannot be read (then delete nothing)."""
    live = set()
    for m in _load_all(root, _manifest.versions(root)).values():
        if m is None:
            return None
        live |= files_of(m)
    return live


def data_files(root, dirs=(_segments.DIR, LOG_DIR)) -> dict:
    """Store-relative path -> bytes of every file in ``dirs`` (default ``segments/`` and ``log/``)."""
    root = _fs.at(root)
    return {f"{d}/{name}": size for d in dirs for name, size in _fs.sizes(root / d).items()}


def expire(root: Path, keep_versions: int, grace_s: float, now: float | None = None) -> dict:
    """Remove what no retained version needs (see the module docstring); returns what was removed."""
    keep_versions, grace_s = check_policy(keep_versions, grace_s)
    root = Path(root)
    now = time.time() if now is None else now
    vs = _manifest.versions(root)
    ms = _load_all(root, vs)
    removable = []
    for i, v in enumerate(vs[:-keep_versions] if len(vs) > keep_versions else []):
        nxt = vs[i + 1]  # version v stopped being the newest when nxt was committed
        if _committed_at(root, nxt, ms[nxt]) + grace_s > now:
            break  # every later version was superseded later still
        removable.append(v)
    remaining = [ms[v] for v in vs if v not in removable]
    if any(m is None for m in remaining):
        raise UIHError(f"store {root} has a manifest that cannot be read; nothing was expired. Fix or remove "
                       "it first (uih inspect shows the versions)")
    for v in removable:
        _manifest.path_of(root, v).unlink(missing_ok=True)
    if removable:
        fsync_dir(root / _manifest.DIR)
    live = set().union(*(files_of(m) for m in remaining))
    freed = {rel: size for rel, size in data_files(root).items() if rel not in live}
    for rel in freed:
        (root / rel).unlink(missing_ok=True)
    for d in {rel.split("/")[0] for rel in freed}:
        fsync_dir(root / d)
    return {"versions_removed": removable, "files_removed": len(freed), "bytes_freed": sum(freed.values())}


def disk_usage(root, manifest: dict) -> dict:
    """Bytes on disk: ``live_bytes`` that the given version needs, ``reclaimable_bytes`` the rest."""
    files = data_files(root, (_segments.DIR, LOG_DIR, _manifest.DIR))
    own = f"{_manifest.DIR}/{_manifest.path_of(root, manifest['version']).name}"
    live = sum(files.get(rel, 0) for rel in [*files_of(manifest), own])
    return {"disk_bytes": sum(files.values()), "live_bytes": live,
            "reclaimable_bytes": sum(files.values()) - live}
