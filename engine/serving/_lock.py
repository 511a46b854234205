"""The writer lock: one ``flock`` on ``LOCK`` per store, released by close, garbage collection or exit."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import weakref
from pathlib import Path

NAME = "LOCK"
_held: dict[str, int] = {}  # real path of a store -> pid, for the stores this process holds (a clearer refusal message)
_held_mu = threading.Lock()


def _release(fd: int, key: str, pid: int) -> None:
    if os.getpid() != pid:
        return  # a forked child inherited the descriptor; closing it here would not be ours to do
    with _held_mu:
        _held.pop(key, None)
    os.close(fd)


class WriterLock:
    """The exclusive writer lock of one store, or why it could not be taken (``refusal``)."""

    def __init__(self, fd: int, key: str):
        self.fd = fd
        self._finalizer = weakref.finalize(self, _release, fd, key, os.getpid())

    @classmethod
    def try_take(cls, root: Path):
        """(lock, None) when taken, else (None, a sentence saying who holds it or what stops us)."""
        key = os.path.realpath(root)
        try:
            fd = os.open(Path(root) / NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            return None, f"this process may not write {Path(root) / NAME} ({e.strerror})"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            with _held_mu:
                mine = _held.get(key) == os.getpid()
            if mine:
                return None, ("this same process holds the writer lock through another open UIHStore object; "
                              "close() that one (or drop every reference to it) first")
            return None, "another process holds the writer lock"
        with _held_mu:
            _held[key] = os.getpid()
        return cls(fd, key), None

    def release(self) -> None:
        self._finalizer()
