"""One manifest per store version: the commit point of every seal and compaction.

A manifest names the schema, the live segments and the log of the mutable tier. It is written
atomically (temp file, fsync, rename, fsync dir), so a store version either fully exists or not at all.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from .._errors import CorruptionError, VersionError
from ._durable import atomic_write

FORMAT = 1
DIR = "_manifests"


def _name(version: int) -> str:
    return f"v{version:010d}.json"


def versions(root: Path) -> list:
    d = Path(root) / DIR
    if not d.is_dir():
        return []
    return sorted(int(p.name[1:11]) for p in d.glob("v*.json") if p.name[1:11].isdigit())


def write(root: Path, body: dict) -> None:
    body = {**body, "format": FORMAT}
    text = json.dumps(body, sort_keys=True)
    doc = {"crc32": zlib.crc32(text.encode()), "body": body}
    atomic_write(Path(root) / DIR / _name(body["version"]), json.dumps(doc, sort_keys=True).encode())


def load(root: Path, version: int | None = None) -> dict:
    """The manifest of ``version`` (default: the newest), checked end to end."""
    vs = versions(root)
    if not vs:
        raise CorruptionError(f"{root} has no manifest; it is not a UIH store (create one with UIHStore.create)")
    if version is None:
        version = vs[-1]
    if version not in vs:
        raise VersionError(f"store {root} has no version {version}; it holds versions {vs[0]}..{vs[-1]}")
    path = Path(root) / DIR / _name(version)
    try:
        doc = json.loads(path.read_bytes())
        body = doc["body"]
        ok = zlib.crc32(json.dumps(body, sort_keys=True).encode()) == doc["crc32"]
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptionError(f"manifest {path} cannot be parsed: {e}") from e
    if not ok:
        raise CorruptionError(f"manifest {path} fails its checksum; restore it from a backup")
    if body.get("format", 0) > FORMAT:
        raise VersionError(f"store {root} has format {body['format']}, newer than this code ({FORMAT}); "
                           "upgrade uih-latemat")
    return body
