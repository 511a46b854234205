"""Publish a local store to object storage (or any ``pyarrow.fs`` location) for remote readers.

The copy is ordered so that a reader of the destination never sees a manifest whose files are missing:
version by version, ascending, first the version's segments (main files, sidecars, their indexes), then
its log (or, without ``include_log``, a marker saying the log was left out), then its manifest. Object
stores make an object visible only once its upload completes; on other filesystems each file is written
under a temporary name and renamed. Publishing is idempotent and incremental: an object already there is
skipped only when its bytes equal the local file's, so a damaged object is replaced even when its size is
right. That comparison reads the object back (only when the sizes agree; a differing size is uploaded
without reading): ``pyarrow.fs`` returns no user metadata and no content checksum of an object, so a
checksum recorded at upload could only vouch for what was sent, not for what the destination holds now.
Nothing at the destination is deleted unless ``prune=True``.

Pruning carries the local store's retention over: versions the local store no longer holds (removed by
``UIHStore.expire``) lose their manifests at the destination once their successor has been published for
``grace_s``, then the files those versions named and no remaining version names are deleted, in that
order, as a local ``expire`` does: a reader never finds a manifest whose files are gone, and one that
opened a removed version gets ``VersionError`` and retries the newer one. Only files a removed manifest
names are deleted, so objects another publish is uploading (named by no manifest yet) are never touched.
It refuses to delete anything when a manifest at the destination cannot be read or belongs to another
store. Pruning also collects *orphans*: objects in the store's folders that no manifest names and that
have been there for ``orphan_age_s`` (default a day), left by a publish or a prune that died midway
(their files uploaded but not their manifest, or their manifest deleted but not yet their files). An
upload in flight is younger than that, so it is left alone.

The mutable tier's log is copied only on request (``include_log=True``): each published version's log,
before its manifest, as it is at that moment (the newest one grows while the writer appends). A remote
reader replays it like a local ``read_only`` reader: a torn tail, caught mid-append, is dropped, but a log
that is missing, or shorter than the manifest's ``log_bytes`` (acknowledged at its commit), is a
``CorruptionError`` (see ``check_log``). Without ``include_log``, each version gets a marker
(``_manifests/v<version>.no-log``) instead, and a remote reader sees an empty mutable tier; thin rows still
reconstruct, since they carry their tail events themselves.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from .._errors import CorruptionError, InvalidArgument, UIHError, VersionError
from .._types import StorePath
from . import _fs, _manifest, _retention, _segments

_CHUNK = 8 << 20
DEFAULT_ORPHAN_AGE_S = 86400.0  # far longer than any one publish takes to upload a version's files
_ATOMIC_UPLOADS = {"s3", "gcs"}  # an object appears only when its upload completes

logger = logging.getLogger("uih.engine.publish")


def _files(dest) -> dict:
    """Store-relative path -> ``FileInfo`` of every object under ``dest`` (one recursive listing)."""
    sel = pafs.FileSelector(dest.path, recursive=True, allow_not_found=True)
    cut = len(dest.path) + 1
    return {i.path[cut:]: i for i in dest.fs.get_file_info(sel) if i.type == pafs.FileType.File}


def _listing(dest) -> dict:
    """Store-relative path -> size of every object already under ``dest``."""
    return {rel: i.size for rel, i in _files(dest).items()}


def left_out_marker(v: int) -> str:
    """Store-relative path of the marker saying the publish of version ``v`` left its log out on purpose.
    Not a ``.json``: ``_manifest.versions`` does not take it for a version."""
    return f"{_manifest.DIR}/{_manifest.path_of('', v).name.removesuffix('.json')}.no-log"


def check_log(root, manifest: dict) -> bool:
    """Whether a reader (remote or ``read_only``) of ``root`` at ``manifest`` has a log to replay.

    False only when publish left the log out (its marker is there): the mutable tier is empty. A log
    that is missing otherwise (a reader cannot tell a deleted one from one never copied) or that is
    shorter than the ``log_bytes`` the manifest acknowledged is a ``CorruptionError``; a missing log of a
    version retention has removed meanwhile is a ``VersionError`` (the reader retries a newer one).
    """
    path = _fs.at(root) / manifest["log"]
    try:
        n = _fs.size(path)
    except FileNotFoundError:
        n = None
    want = manifest.get("log_bytes")
    lacking = n is None or (want is not None and n < want)
    if lacking and _fs.exists(_fs.at(root) / left_out_marker(manifest["version"])):
        return False  # a log an earlier publish copied may be older than this version's: not read either
    if n is None:
        err = _manifest.gone(root, manifest["version"], path, "log")
        if isinstance(err, CorruptionError):
            raise CorruptionError(f"{err}; if it is a published copy, publish it again with include_log=True "
                                  "(uih publish --log), or without it for an empty mutable tier") from None
        raise err
    if want is not None and n < want:
        raise CorruptionError(f"log {path} has {n} bytes, but store version {manifest['version']} acknowledged "
                              f"{want}: it was cut short or only partly copied (events are missing); restore it "
                              "from a backup, or publish the store again with include_log=True (uih publish --log)")
    return True


def _same_bytes(local: Path, dest, rel: str) -> bool:
    """Whether the object ``dest/rel`` holds exactly the bytes of ``local`` (the sizes already agree)."""
    with open(local, "rb") as f:
        try:
            g = dest.fs.open_input_stream((dest / rel).path)
        except FileNotFoundError:
            return False  # deleted since the listing (another prune): upload it again
        with g:
            while True:
                a, b = f.read(_CHUNK), g.read(_CHUNK)
                if a != b:
                    return False
                if not a:
                    return True


def _upload(src: Path, dest, rel: str) -> int:
    """Copy one local file to ``dest/rel`` so that readers see all of it or nothing; returns its bytes."""
    target = dest / rel
    atomic = dest.fs.type_name in _ATOMIC_UPLOADS
    tmp = target if atomic else dest / f"{rel.rsplit('/', 1)[0]}/.tmp-{uuid.uuid4().hex[:8]}-{target.name}"
    dest.fs.create_dir((dest / rel.rsplit("/", 1)[0]).path, recursive=True)
    with open(src, "rb") as f, dest.fs.open_output_stream(tmp.path) as out:
        shutil.copyfileobj(f, out, _CHUNK)
        n = f.tell()
    if not atomic:
        dest.fs.move(tmp.path, target.path)
    return n


def _mark(dest, rel: str) -> None:
    """Write the empty object ``dest/rel`` (empty: no reader can find it half written)."""
    try:
        with dest.fs.open_output_stream((dest / rel).path) as f:
            f.write(b"")
    except OSError as e:
        raise UIHError(f"cannot write {dest / rel} ({e}); check that the credentials (filesystem=, or "
                       "AWS_*/GOOGLE_* environment variables) allow writing") from e


def publish(path: StorePath, uri: StorePath, filesystem: pafs.FileSystem | None = None, include_log: bool = False,
            prune: bool = False, grace_s: float = _retention.DEFAULT_GRACE_S,
            orphan_age_s: float = DEFAULT_ORPHAN_AGE_S) -> dict:
    """Copy the store at local ``path`` to ``uri`` so that ``UIHStore.open(uri, read_only=True)`` reads it.

    Parameters
    ----------
    path : str or Path
        A local store (a writer may be working on it: only committed versions are copied).
    uri : str
        Destination: a URI that ``pyarrow.fs`` understands (``s3://bucket/store``, ``gs://...``) or a
        path inside ``filesystem``. Credentials come from ``filesystem`` or the usual environment
        (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...).
    filesystem : pyarrow.fs.FileSystem, optional
        The destination filesystem, e.g. ``S3FileSystem(endpoint_override=...)``.
    include_log : bool
        Also copy each published version's log, so remote readers see its mutable tier (see module doc).
        Always on for a local destination, whose readers treat a missing log as damage.
    prune : bool
        Afterwards, delete at the destination what the local store's retention has removed (see module
        doc): without it, a destination only grows.
    grace_s : float
        With ``prune``: a remote version goes only once its successor has been visible at the destination
        for ``grace_s`` seconds (remote readers see a version superseded when the next one is published,
        not when the local store committed it); a later publish removes the rest.
    orphan_age_s : float
        With ``prune``: also delete objects in the store's folders that no manifest names once they are
        this old (see module doc); they are what a publish or prune that died midway left behind.

    Returns
    -------
    dict
        ``versions`` published, ``files_copied``, ``bytes_copied``, ``files_skipped`` (already there, byte
        for byte), ``files_repaired`` (among those copied: there with the right size but other bytes);
        with ``prune``, also ``versions_removed``, ``files_removed`` and ``bytes_freed`` (orphans
        included) and ``orphans_removed``.
    """
    if _fs.is_uri(path):
        raise InvalidArgument(f"publish copies a local store; {path} is not a local path")
    src = _fs.resolve(path)
    vs = _manifest.versions(src)
    if not vs:
        raise UIHError(f"{src} holds no UIH store (no manifest); pass the store's folder")
    dest = _fs.resolve(uri, filesystem)
    if not _fs.is_remote(dest):
        # e.g. a mounted share: local readers want every file a manifest names, so the log goes too
        dest = _fs.RemotePath(pafs.LocalFileSystem(), str(Path(dest).resolve()))
        include_log = True
    try:
        have = _listing(dest)
    except OSError as e:
        raise UIHError(f"cannot list {dest} ({e}); check the URI and the credentials (filesystem=, or "
                       "AWS_*/GOOGLE_* environment variables)") from e
    _same_store(src, vs, dest)
    out: dict[str, Any] = {"versions": [], "files_copied": 0, "bytes_copied": 0, "files_skipped": 0,
                           "files_repaired": 0}
    done = set()  # copied or found equal by this publish: a log several versions share is read once

    def copy(rel: str) -> None:
        if rel in done:
            return
        local = src / rel
        n = local.stat().st_size  # FileNotFoundError: the local writer expired it meanwhile
        try:
            if have.get(rel) == n and _same_bytes(local, dest, rel):
                out["files_skipped"] += 1
                done.add(rel)
                return
            repaired = have.get(rel) == n
            n = _upload(local, dest, rel)
        except OSError as e:
            if isinstance(e, FileNotFoundError) and not local.exists():
                raise  # the local writer expired it meanwhile
            raise UIHError(f"cannot copy {local} to {dest / rel} ({e}); check that the destination exists and "
                           "that the credentials (filesystem=, or AWS_*/GOOGLE_* environment variables) allow "
                           "reading and writing") from e
        out["bytes_copied"] += n
        out["files_copied"] += 1
        out["files_repaired"] += repaired
        have[rel] = n
        done.add(rel)

    def log_of(v: int, m: dict) -> None:
        """Before ``v``'s manifest: its log, or the marker saying it was left out on purpose."""
        if include_log:
            want = m.get("log_bytes")
            if want is not None and (src / m["log"]).stat().st_size < want:
                raise CorruptionError(f"log {src / m['log']} is shorter than the {want} bytes store version {v} "
                                      "acknowledged; nothing of it was published. Restore the store from a backup")
            copy(m["log"])
            return
        marker = left_out_marker(v)
        if marker not in have:
            _mark(dest, marker)
            have[marker] = 0

    newest: dict = {}  # the last version published (set whenever out["versions"] is not empty)
    for v in vs:
        try:
            m = _manifest.load(src, v)
            for rel in sorted(_retention.files_of(m) - {m["log"]}):
                copy(rel)
            log_of(v, m)
            copy(f"{_manifest.DIR}/{_manifest.path_of(src, v).name}")  # last: its files are all there now
        except (FileNotFoundError, VersionError):
            continue  # the local writer expired this version meanwhile: its manifest is not published
        out["versions"].append(v)
        newest = m
        marker = left_out_marker(v)
        if include_log and marker in have:  # an earlier publish left this log out: its marker is wrong now
            _delete(dest, marker)
            del have[marker]
    if prune:
        grace_s = _retention.check_seconds("grace_s", grace_s)
        orphan_age_s = _retention.check_seconds("orphan_age_s", orphan_age_s)
        out.update(_prune(dest, have, out["versions"], newest, grace_s, orphan_age_s) if out["versions"] else
                   {"versions_removed": [], "files_removed": 0, "bytes_freed": 0, "orphans_removed": 0})
    logger.info("published %d version(s) of %s to %s: %d files copied (%d bytes), %d already there",
                len(out["versions"]), src, dest, out["files_copied"], out["bytes_copied"], out["files_skipped"])
    return out


def _same_store(src, vs: list, dest) -> None:
    """Refuse a destination that already holds another store: versions are numbered per store, so its
    manifests would be overwritten or mixed with this one's. Format-1 manifests carry no store id: then a
    version both sides hold must have the same manifest. A damaged manifest there is skipped (republishing
    repairs it); the newest one that reads decides."""
    there = _manifest.versions(dest)
    if not there:
        return
    first_error = None

    def newest_readable(candidates):
        nonlocal first_error
        for v in sorted(candidates, reverse=True):
            try:
                return v, _manifest.load(dest, v)
            except (UIHError, OSError) as e:
                first_error = first_error or e
        raise UIHError(f"cannot read the manifests at {dest} to check it holds this store ({first_error}); "
                       "nothing was copied") from first_error

    try:
        mine = _manifest.load(src, vs[-1])
    except (UIHError, OSError) as e:
        raise UIHError(f"cannot read {src}'s newest manifest ({e}); nothing was copied") from e
    theirs = newest_readable(there)[1]
    same = mine.get("store_id") == theirs.get("store_id")
    if same and mine.get("store_id") is None:
        common = set(vs) & set(there)
        if common:
            v, m = newest_readable(common)
            same = _manifest.load(src, v) == m
        else:
            same = False
    if not same:
        raise UIHError(f"{dest} holds another store ({theirs.get('store_id')}, versions {there[0]}..{there[-1]}) "
                       f"than {src} ({mine.get('store_id')}); nothing was copied. Publish each store to its own "
                       "prefix")


def _published_at(dest, v: int) -> float:
    """When version ``v``'s manifest appeared at the destination (its object's time; +inf if unknown)."""
    info = dest.fs.get_file_info((dest / f"{_manifest.DIR}/{_manifest.path_of(dest, v).name}").path)
    return info.mtime.timestamp() if info.mtime is not None else math.inf


def _delete(dest, rel: str) -> None:
    try:
        dest.fs.delete_file((dest / rel).path)
    except FileNotFoundError:
        pass  # already gone (an earlier prune, or another one running)


def _orphans(dest, live: set, older_than: float) -> dict:
    """Store-relative path -> size of the objects in the store's folders (segments, logs, and upload
    temporaries and left-out-log markers among the manifests) that no manifest names (``live``) and whose
    time is before ``older_than``."""
    out = {}
    for rel, i in _files(dest).items():
        if rel in live or i.mtime is None or i.mtime.timestamp() >= older_than:
            continue
        top = rel.split("/", 1)[0]
        name = rel.rsplit("/", 1)[-1]
        if top in (_segments.DIR, _retention.LOG_DIR) or (top == _manifest.DIR and (
                name.startswith(".tmp-") or name.endswith(".no-log"))):
            out[rel] = i.size
    return out


def _prune(dest, have: dict, local_versions: list, newest: dict, grace_s: float, orphan_age_s: float) -> dict:
    """Remove the destination's versions the local store has expired once their successor has been
    published for ``grace_s``, then the files only they named, then orphans older than ``orphan_age_s``.
    ``have``: path -> size of the objects."""
    remote = _manifest.versions(dest)
    manifests = {}
    for v in remote:
        try:
            manifests[v] = _manifest.load(dest, v)
        except UIHError as e:
            raise UIHError(f"cannot prune {dest}: its version {v} cannot be read ({e}); nothing was deleted. "
                           "Fix or remove that manifest first") from e
    if any(m.get("store_id") != newest.get("store_id") for m in manifests.values()):
        raise UIHError(f"cannot prune {dest}: it holds versions of another store; nothing was deleted. Publish "
                       "each store to its own prefix")
    now = time.time()
    gone = []
    for i, v in enumerate(remote[:-1]):  # expired locally: older than every local version (expire removes
        if v >= local_versions[0] or _published_at(dest, remote[i + 1]) + grace_s > now:  # the oldest first)
            break
        gone.append(v)
    for v in gone:
        _delete(dest, f"{_manifest.DIR}/{_manifest.path_of(dest, v).name}")
        if left_out_marker(v) in have:  # after the manifest: a reader holding it then gets VersionError
            _delete(dest, left_out_marker(v))
    live = set().union(*(_retention.files_of(manifests[v]) | {left_out_marker(v)}
                         for v in remote if v not in gone))
    freed = {rel: have.get(rel, 0) for v in gone for rel in _retention.files_of(manifests[v]) - live}
    # logs first: a reader still opening a removed version then fails at its log replay and retries the
    # newer version (see UIHStore._replay), rather than later, at a segment
    for rel in sorted(freed, key=lambda r: r.startswith(f"{_segments.DIR}/")):
        _delete(dest, rel)
    orphans = _orphans(dest, live, now - orphan_age_s)
    for rel in orphans:
        _delete(dest, rel)
    return {"versions_removed": gone, "files_removed": sum(rel in have for rel in freed) + len(orphans),
            "bytes_freed": sum(freed.values()) + sum(orphans.values()), "orphans_removed": len(orphans)}
