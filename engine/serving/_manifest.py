"""One manifest per store version: the commit point of every seal and compaction.

A manifest names the store id, the schema, the live segments and the log of the mutable tier, and when
it was committed (``committed_at``: retention measures grace periods from it). It is written atomically
(temp file, fsync, rename, fsync dir), so a store version either fully exists or not at all.

Format 2 (this code) adds ``store_id``, ``committed_at`` and the checksummed log header (see ``_log``);
format 1 stores are still read.
"""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path

from .._errors import CorruptionError, VersionError
from . import _fs
from ._durable import atomic_write

FORMAT = 2
DIR = "_manifests"


def _name(version: int) -> str:
    return f"v{version:010d}.json"


def versions(root) -> list:
    """The store's versions, ascending (``root``: a local folder or a ``_fs.RemotePath``)."""
    d = _fs.at(root) / DIR
    if _fs.is_remote(d):
        names = list(_fs.sizes(d))  # one listing; an object store has no folders to check first
    elif d.is_dir():
        names = [p.name for p in d.glob("v*.json")]
    else:
        return []
    return sorted(int(n[1:11]) for n in names if n.startswith("v") and n.endswith(".json") and n[1:11].isdigit())


def path_of(root, version: int):
    return _fs.at(root) / DIR / _name(version)


def write(root: Path, body: dict) -> None:
    body = {**body, "format": FORMAT, "committed_at": time.time()}
    text = json.dumps(body, sort_keys=True)
    doc = {"crc32": zlib.crc32(text.encode()), "body": body}
    atomic_write(Path(root) / DIR / _name(body["version"]), json.dumps(doc, sort_keys=True).encode())


def load(root, version: int | None = None) -> dict:
    """The manifest of ``version`` (default: the newest), checked end to end."""
    vs = versions(root)
    if not vs:
        raise CorruptionError(f"{root} has no manifest; it is not a UIH store (create one with UIHStore.create)")
    if version is None:
        version = vs[-1]
    if version not in vs:
        raise VersionError(f"store {root} has no version {version}; it holds versions {vs[0]}..{vs[-1]}")
    path = path_of(root, version)
    try:
        raw = _fs.read_bytes(path)
    except FileNotFoundError:
        raise VersionError(f"store {root} version {version} was removed by retention (expire) while being "
                           "opened; open a newer version") from None
    try:
        doc = json.loads(raw)
        body = doc["body"]
        ok = zlib.crc32(json.dumps(body, sort_keys=True).encode()) == doc["crc32"]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CorruptionError(f"manifest {path} cannot be parsed: {e}") from e
    if not ok:
        raise CorruptionError(f"manifest {path} fails its checksum; restore it from a backup")
    if not isinstance(body, dict) or body.get("version") != version:
        raise CorruptionError(f"manifest {path} does not describe version {version}; restore it from a backup")
    if not isinstance(body.get("format", 0), int) or body.get("format", 0) > FORMAT:
        raise VersionError(f"store {root} has format {body['format']}, newer than this code ({FORMAT}); "
                           "upgrade uih-latemat")
    return body


def gone(root, version: int, path, what: str):
    """The error for a file of ``version`` that is not there: expired by retention, or damage."""
    if version not in versions(root):
        return VersionError(f"{what} {path} belonged to store version {version}, which retention (expire) has "
                            "removed after its grace period; reopen the store, or expire with a longer grace_s")
    return CorruptionError(f"{what} {path} of store version {version} is missing; the store is damaged, restore "
                           "it from a backup")
