"""Where a store's files live: a local folder, or a URI that ``pyarrow.fs`` understands (s3://, gs://, ...).

Every read a *reader* makes (manifests, indexes, segments, sidecars, the log) goes through here; the
writer's own bookkeeping (flock, fsync, rename, orphan and retention scans) needs a POSIX folder and
stays on ``pathlib``. A local store stays a ``pathlib.Path`` and is read through it. A remote
store is a ``RemotePath``: a ``pyarrow.fs.FileSystem`` and a path in it, joined with ``/`` like a
``Path``, so the readers need not care which one they hold. A missing object raises
``FileNotFoundError`` naming the URI, exactly as a missing local file does, so the callers map it to
the same typed error (``VersionError`` or ``CorruptionError``).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from .._errors import InvalidArgument, UIHError


class RemotePath:
    """A file or folder on a ``pyarrow.fs`` filesystem; ``str()`` gives its URI (for messages)."""

    __slots__ = ("fs", "path", "scheme")

    def __init__(self, fs: pafs.FileSystem, path: str, scheme: str = ""):
        self.fs, self.path, self.scheme = fs, path.rstrip("/"), scheme

    def __truediv__(self, rel) -> RemotePath:
        return RemotePath(self.fs, f"{self.path}/{rel}", self.scheme)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path}" if self.scheme else self.path

    __repr__ = __str__

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def is_remote(p) -> bool:
    return isinstance(p, RemotePath)


def is_uri(path) -> bool:
    """Whether ``path`` names a location through a scheme other than ``file://``."""
    s = path if isinstance(path, str) else os.fspath(path) if isinstance(path, os.PathLike) else None
    return s is not None and "://" in s and not s.startswith("file://")


def at(root):
    """``root`` as the readers' location type: a RemotePath stays one, anything else is a Path."""
    return root if isinstance(root, RemotePath) else Path(root)


def resolve(path, filesystem: pafs.FileSystem | None = None):
    """A store location from a local path or a URI, and optionally an explicit filesystem.

    ``filesystem`` (e.g. ``pyarrow.fs.S3FileSystem(endpoint_override=..., access_key=...)``) overrides
    what the URI's scheme would pick; ``path`` may then be the URI or the path inside that filesystem.
    A local filesystem (or ``file://``) gives a ``Path``, so local stores keep their POSIX reads.
    """
    if isinstance(path, RemotePath):
        return path
    s = os.fspath(path)
    scheme = s.split("://", 1)[0] if "://" in s else ""
    if filesystem is None:
        if not scheme:
            return Path(s)
        try:
            filesystem, inner = pafs.FileSystem.from_uri(s)
        except (pa.ArrowException, ValueError, OSError) as e:
            raise UIHError(f"cannot open {s} ({e}); check the URI, or pass filesystem=pyarrow.fs.S3FileSystem(...) "
                           "(or GcsFileSystem, HadoopFileSystem) configured for it") from e
    elif not isinstance(filesystem, pafs.FileSystem):
        raise InvalidArgument(f"filesystem must be a pyarrow.fs.FileSystem, got {type(filesystem).__name__}")
    else:
        inner = s.split("://", 1)[1].split("?", 1)[0] if scheme else s
    if isinstance(filesystem, pafs.LocalFileSystem):
        return Path(inner)
    return RemotePath(filesystem, inner, scheme or filesystem.type_name)


def _missing(p) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "no such object", str(p))


def read_bytes(p) -> bytes:
    """The whole file (one GET on an object store)."""
    if not is_remote(p):
        return Path(p).read_bytes()
    try:
        with p.fs.open_input_stream(p.path) as f:
            return f.readall()
    except FileNotFoundError:
        raise _missing(p) from None


def open_input(p) -> pa.NativeFile:
    """A random-access file (for Parquet): a plain OS file locally, the filesystem's reader remotely."""
    try:
        if is_remote(p):
            return p.fs.open_input_file(p.path)
        f = pa.OSFile(str(p))
    except FileNotFoundError:
        raise _missing(p) from None
    # Parquet reads jump between column chunks: the kernel's sequential readahead would fetch pages no
    # projection asked for (it was most of the over-read of short jobs), so tell it the access is random
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
    return f


def size(p) -> int:
    if not is_remote(p):
        return Path(p).stat().st_size
    info = p.fs.get_file_info(p.path)
    if info.type != pafs.FileType.File:
        raise _missing(p)
    return info.size


def is_dir(p) -> bool:
    if not is_remote(p):
        return Path(p).is_dir()
    return p.fs.get_file_info(p.path).type == pafs.FileType.Directory


def exists(p) -> bool:
    if not is_remote(p):
        return Path(p).exists()
    return p.fs.get_file_info(p.path).type != pafs.FileType.NotFound


def sizes(folder) -> dict:
    """Name -> bytes of every file directly in ``folder`` (empty when there is no such folder)."""
    out: dict[str, int] = {}
    if not is_remote(folder):
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return out
        for e in entries:
            try:
                out[e.name] = e.stat().st_size
            except FileNotFoundError:
                pass  # removed meanwhile by the writer's retention
        return out
    sel = pafs.FileSelector(folder.path, recursive=False, allow_not_found=True)
    for info in folder.fs.get_file_info(sel):
        if info.type == pafs.FileType.File:
            out[info.base_name] = info.size
    return out
