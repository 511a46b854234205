"""Publish a local store to object storage (or any ``pyarrow.fs`` location) for remote readers.

The copy is ordered so that a reader of the destination never sees a manifest whose files are missing:
version by version, ascending, first the version's segments (main files, sidecars, their indexes), then
its manifest. Object stores make an object visible only once its upload completes; on other filesystems
each file is written under a temporary name and renamed. Publishing is idempotent and incremental: an
object already there with the same size is skipped (every file a manifest names is immutable, and so is
the manifest itself). Nothing at the destination is deleted unless ``prune=True``.

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

The mutable tier's log is copied only on request (``include_log=True``), for the newest version, after
its manifest: a remote reader then replays it like a local ``read_only`` reader (a torn tail, caught
mid-append, is dropped). Without it, a remote reader sees an empty mutable tier; thin rows still
reconstruct, since they carry their tail events themselves.
"""

from __future__ import annotations

import math
import shutil
import time
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from .._errors import UIHError, VersionError
from . import _fs, _manifest, _retention, _segments

_CHUNK = 8 << 20
DEFAULT_ORPHAN_AGE_S = 86400.0  # far longer than any one publish takes to upload a version's files
_ATOMIC_UPLOADS = {"s3", "gcs"}  # an object appears only when its upload completes


def _files(dest) -> dict:
    """Store-relative path -> ``FileInfo`` of every object under ``dest`` (one recursive listing)."""
    sel = pafs.FileSelector(dest.path, recursive=True, allow_not_found=True)
    cut = len(dest.path) + 1
    return {i.path[cut:]: i for i in dest.fs.get_file_info(sel) if i.type == pafs.FileType.File}


def _listing(dest) -> dict:
    """Store-relative path -> size of every object already under ``dest``."""
    return {rel: i.size for rel, i in _files(dest).items()}


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


def publish(path, uri, filesystem: pafs.FileSystem | None = None, include_log: bool = False,
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
        Also copy the newest version's log, so remote readers see its mutable tier (see module doc).
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
        ``versions`` published, ``files_copied``, ``bytes_copied``, ``files_skipped`` (already there);
        with ``prune``, also ``versions_removed``, ``files_removed`` and ``bytes_freed`` (orphans
        included) and ``orphans_removed``.
    """
    if _fs.is_uri(path):
        raise UIHError(f"publish copies a local store; {path} is not a local path")
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
    out = {"versions": [], "files_copied": 0, "bytes_copied": 0, "files_skipped": 0}

    def copy(rel: str, force: bool = False) -> None:
        local = src / rel
        if not force and rel in have and have[rel] == local.stat().st_size:
            out["files_skipped"] += 1
            return
        try:
            n = _upload(local, dest, rel)
        except OSError as e:
            if isinstance(e, FileNotFoundError) and not local.exists():
                raise  # the local writer expired it meanwhile
            raise UIHError(f"cannot write {dest / rel} ({e}); check that the destination exists and that the "
                           "credentials (filesystem=, or AWS_*/GOOGLE_* environment variables) allow writing") from e
        out["bytes_copied"] += n
        out["files_copied"] += 1
        have[rel] = n

    newest = None
    for v in vs:
        try:
            m = _manifest.load(src, v)
            for rel in sorted(_retention.files_of(m) - {m["log"]}):
                copy(rel)
            copy(f"{_manifest.DIR}/{_manifest.path_of(src, v).name}")  # last: its files are all there now
        except (FileNotFoundError, VersionError):
            continue  # the local writer expired this version meanwhile: its manifest is not published
        out["versions"].append(v)
        newest = m
    if include_log and newest is not None:
        copy(newest["log"], force=True)  # the log grows while the writer appends: always the latest bytes
    if prune:
        grace_s = _retention.check_seconds("grace_s", grace_s)
        orphan_age_s = _retention.check_seconds("orphan_age_s", orphan_age_s)
        out.update(_prune(dest, have, out["versions"], newest, grace_s, orphan_age_s) if out["versions"] else
                   {"versions_removed": [], "files_removed": 0, "bytes_freed": 0, "orphans_removed": 0})
    return out


def _same_store(src, vs: list, dest) -> None:
    """Refuse a destination that already holds another store: versions are numbered per store, so its
    manifests would be overwritten or mixed with this one's. Format-1 manifests carry no store id: then a
    version both sides hold must have the same manifest."""
    there = _manifest.versions(dest)
    if not there:
        return
    try:
        mine, theirs = _manifest.load(src, vs[-1]), _manifest.load(dest, there[-1])
        same = mine.get("store_id") == theirs.get("store_id")
        if same and mine.get("store_id") is None:
            common = sorted(set(vs) & set(there))
            same = bool(common) and _manifest.load(src, common[-1]) == _manifest.load(dest, common[-1])
    except (UIHError, OSError) as e:
        raise UIHError(f"cannot read the manifests at {dest} to check it holds this store ({e}); nothing was "
                       "copied") from e
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
    temporaries anywhere) that no manifest names (``live``) and whose time is before ``older_than``."""
    out = {}
    for rel, i in _files(dest).items():
        if rel in live or i.mtime is None or i.mtime.timestamp() >= older_than:
            continue
        top = rel.split("/", 1)[0]
        if top in (_segments.DIR, _retention.LOG_DIR) or (top == _manifest.DIR and
                                                          rel.rsplit("/", 1)[-1].startswith(".tmp-")):
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
    live = set().union(*(_retention.files_of(manifests[v]) for v in remote if v not in gone))
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
