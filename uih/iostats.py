"""Bytes really moved, from the kernel's per-process I/O counters (``/proc/self/io``).

``read_bytes``/``write_bytes`` count what reached the storage layer, so a read is only honest after the
file's pages have left the page cache: ``drop_cache`` asks for that with ``POSIX_FADV_DONTNEED``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

_FIELDS = ("rchar", "wchar", "read_bytes", "write_bytes")


def counters() -> dict:
    try:
        text = Path("/proc/self/io").read_text()
    except OSError:  # not Linux: report zeros rather than fail a run
        return dict.fromkeys(_FIELDS, 0)
    kv = dict(line.split(": ") for line in text.splitlines() if ": " in line)
    return {k: int(kv.get(k, 0)) for k in _FIELDS}


def drop_cache(*paths) -> None:
    """Evict the files under ``paths`` from the page cache (dirty pages are flushed first)."""
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


@contextmanager
def measure():
    """``with measure() as io: ...``; afterwards ``io`` holds the counter deltas of the block."""
    out = {}
    before = counters()
    try:
        yield out
    finally:
        after = counters()
        out.update({k: after[k] - before[k] for k in _FIELDS})


def tree_bytes(*paths) -> int:
    total = 0
    for p in paths:
        p = Path(p)
        total += p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total
