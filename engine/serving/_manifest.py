"""One manifest per store version: the commit point of every seal and compaction.

A manifest names the store id, the schema, the live segments and the log of the mutable tier, and when
it was committed (``committed_at``: retention measures grace periods from it). It is written atomically
(temp file, fsync, rename, fsync dir), so a store version either fully exists or not at all.

Format 3 (this code) chains the manifests and records how much of the log was acknowledged:

- ``prev_crc32``: the checksum of the previous version's manifest, so a manifest replaced by another
  (a wrong backup, another store's) is found;
- ``log_bytes`` and ``log_crc32``: bytes of the mutable-tier log acknowledged at this commit, and the
  chain value of its last record there (see ``_log``): a log cut before them is a CorruptionError.

and keeps a ``HEAD`` file beside the manifests, written (atomically) after each manifest rename, at each
writer open and clean close, and before ``expire`` removes manifests. It names the newest committed
version and its manifest's checksum, the oldest retained version (``oldest``), and the log, its
acknowledged length and chain value at that moment. Every open checks that each version from ``oldest``
to HEAD's is there and that the newest is the one committed, so a lost or damaged manifest is a
CorruptionError, never a silent rollback; HEAD's log marker extends the manifest's to the last clean
close. A store without HEAD (format 1 or 2, or HEAD removed on purpose) is read without these checks,
and its writer open moves files no manifest names into ``_quarantine/`` instead of deleting them.

A crash between a manifest's rename and HEAD's leaves HEAD one version behind: that is accepted (the
manifest is there); only losing that manifest too in this window would go unnoticed.

Format 2 added ``store_id``, ``committed_at`` and the checksummed log header; format 1 and 2 stores are
still read (and written from then on as format 3).
"""

from __future__ import annotations

import json
import os
import time
import zlib
from pathlib import Path

from .._errors import CorruptionError, VersionError
from . import _fs
from ._durable import atomic_write

FORMAT = 3
DIR = "_manifests"
HEAD = "HEAD"


def _name(version: int) -> str:
    return f"v{version:010d}.json"


def versions(root) -> list:
    """The store's versions, ascending (``root``: a local folder or a ``_fs.RemotePath``)."""
    d = _fs.at(root) / DIR
    if _fs.is_remote(d):
        names = list(_fs.sizes(d))  # one listing; an object store has no folders to check first
    else:
        try:
            names = os.listdir(d)  # every open lists this folder a few times: no glob, no Path per entry
        except (FileNotFoundError, NotADirectoryError):
            return []
    return sorted(int(n[1:11]) for n in names if n.startswith("v") and n.endswith(".json") and n[1:11].isdigit())


def path_of(root, version: int):
    return _fs.at(root) / DIR / _name(version)


def crc_of(body: dict) -> int:
    """The checksum a manifest file stores for ``body`` (what ``prev_crc32`` and HEAD record)."""
    return zlib.crc32(json.dumps(body, sort_keys=True).encode())


def write(root: Path, body: dict) -> dict:
    """Write the manifest of ``body["version"]``; returns the body as written."""
    body = {**body, "format": FORMAT, "committed_at": time.time()}
    doc = {"crc32": crc_of(body), "body": body}
    atomic_write(Path(root) / DIR / _name(body["version"]), json.dumps(doc, sort_keys=True).encode())
    return body


def load(root, version: int | None = None) -> dict:
    """The manifest of ``version`` (default: the newest), checked end to end."""
    return _load(root, version, versions(root))[0]


def _load(root, version: int | None, vs: list) -> tuple:
    """(manifest of ``version`` (default: the newest of ``vs``, the listed versions), its checksum)."""
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
        crc = crc_of(body)
        ok = crc == doc["crc32"]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CorruptionError(f"manifest {path} cannot be parsed: {e}") from e
    if not ok:
        raise CorruptionError(f"manifest {path} fails its checksum; restore it from a backup")
    if not isinstance(body, dict) or body.get("version") != version:
        raise CorruptionError(f"manifest {path} does not describe version {version}; restore it from a backup")
    if not isinstance(body.get("format", 0), int) or body.get("format", 0) > FORMAT:
        raise VersionError(f"store {root} has format {body['format']}, newer than this code ({FORMAT}); "
                           "upgrade uih-latemat")
    return body, crc


def head_for(manifest: dict, oldest: int, log_bytes: int, log_crc32: int) -> dict:
    """The HEAD contents that name ``manifest`` as the newest committed version."""
    return {"version": int(manifest["version"]), "manifest_crc32": crc_of(manifest), "oldest": int(oldest),
            "log": manifest["log"], "log_bytes": int(log_bytes), "log_crc32": int(log_crc32)}


def write_head(root: Path, head: dict) -> None:
    doc = {"crc32": crc_of(head), "body": head}
    atomic_write(Path(root) / DIR / HEAD, json.dumps(doc, sort_keys=True).encode())


def read_head(root) -> dict | None:
    """The store's HEAD, or None where it has none (format 1 or 2, or removed on purpose)."""
    path = _fs.at(root) / DIR / HEAD
    try:
        raw = _fs.read_bytes(path)
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
        head = doc["body"]
        ok = crc_of(head) == doc["crc32"]
        ok = ok and all(isinstance(head[k], int) for k in ("version", "manifest_crc32", "oldest", "log_bytes",
                                                             "log_crc32")) and isinstance(head["log"], str)
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise CorruptionError(f"{path} is damaged (it records the newest committed version); restore it from a "
                              "backup, or remove it: the store then trusts its newest manifest without this check, "
                              f"and the next writer open moves files no manifest names into {QUARANTINE}/")
    return head


QUARANTINE = "_quarantine"


def _head_problem(root, head: dict | None, vs: list):
    """Why the listed versions ``vs`` contradict ``head`` (a CorruptionError), or None."""
    if head is None:
        return None
    missing = [v for v in range(head["oldest"], head["version"] + 1) if v not in set(vs)]
    if not missing:
        return None
    names = ", ".join(f"{DIR}/{_name(v)}" for v in missing[:5]) + (" ..." if len(missing) > 5 else "")
    if missing[-1] == head["version"]:
        what = f"the newest committed version {head['version']} has no manifest"
        loss = (f"events acknowledged after version {vs[-1]} may be lost" if vs else "the store is lost")
    else:
        span = f"version {missing[0]}" if len(missing) == 1 else f"versions {missing[0]}..{missing[-1]}"
        what = f"{span} inside the retained range {head['oldest']}..{head['version']} has no manifest"
        loss = "those versions can no longer be opened"
    return CorruptionError(
        f"store {root}: {what} ({DIR}/{HEAD} records the commit); missing: {names}. Restore "
        f"{'them' if len(missing) > 1 else 'it'} from a backup. Nothing was deleted; opening would silently roll "
        f"back. To accept that ({loss}), remove {DIR}/{HEAD}: the next writer open then moves files no "
        f"manifest names into {QUARANTINE}/")


def load_checked(root, version: int | None = None, retries: int = 8) -> tuple:
    """(manifest of ``version`` (default: the newest), HEAD or None), after checking the store against
    HEAD: every retained version present, the newest the one committed, chained to the one before it."""
    for _ in range(retries):
        head = read_head(root)  # before listing: HEAD names only manifests renamed before it was written
        vs = versions(root)
        problem = _head_problem(root, head, vs)
        if problem is None:
            break
        if read_head(root) == head:
            raise problem
        # expire raised ``oldest`` or a failed commit rolled HEAD back while we listed: look again
    else:
        raise problem
    manifest, crc = _load(root, version, vs)
    v = manifest["version"]
    if head is not None and v == head["version"] and crc != head["manifest_crc32"]:
        raise CorruptionError(f"manifest {path_of(root, v)} is not the one committed as version {v} (its checksum "
                              f"differs from {DIR}/{HEAD}'s); restore it from a backup")
    if "prev_crc32" in manifest and v - 1 in vs:
        try:
            prev, prev_crc = _load(root, v - 1, vs)
        except VersionError:
            return manifest, head  # expired while we read it
        if manifest["prev_crc32"] != prev_crc:
            check_link(root, prev, manifest)  # raises, naming both
    return manifest, head


def check_link(root, prev: dict, manifest: dict) -> None:
    """CorruptionError unless ``manifest`` was committed right after ``prev``."""
    if "prev_crc32" in manifest and manifest["prev_crc32"] != crc_of(prev):
        raise CorruptionError(f"manifests {path_of(root, prev['version'])} and {path_of(root, manifest['version'])} "
                              "do not chain (the newer was not committed after the older); one was replaced: "
                              "restore both from a backup")


def gone(root, version: int, path, what: str):
    """The error for a file of ``version`` that is not there: expired by retention, or damage."""
    if version not in versions(root):
        return VersionError(f"{what} {path} belonged to store version {version}, which retention (expire) has "
                            "removed after its grace period; reopen the store, or expire with a longer grace_s")
    return CorruptionError(f"{what} {path} of store version {version} is missing; the store is damaged, restore "
                           "it from a backup")
