"""Numba's disk cache checked against every compiled source of this project, not only the function's file.

Numba stamps a cached function with its own file's modification time and size, and trusts the cache
while that file is unchanged. But the cached machine code also holds whatever the function calls or
inlines from other modules: the kernels' shared device functions (``_common``), the per-example slicing
inlined into the fused kernel, both kernels compiled into the DALI operator, constants such as
``NO_WINDOW``. Edit one of those alone and every caller would keep running stale code from its cache,
with no sign of it (an editable install, a checkout that moves between commits).

Here the stamp of every cached function of ``kernels``, ``engine`` and ``dali_plugin`` is the modification
times and sizes of all their sources, so any edit recompiles them all once. Installed, unchanged files
still load from the cache. A ``NUMBA_CACHE_DIR`` chosen by the user keeps Numba's own locator (and its
per-file stamps).
"""

from __future__ import annotations

import functools
from pathlib import Path

from numba.core import caching

_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("kernels", "engine", "dali_plugin")


@functools.lru_cache(maxsize=1)
def project_stamp() -> tuple:
    """``(path, mtime_ns, size)`` of every source file of ``PACKAGES``, read once per process."""
    out = []
    for pkg in PACKAGES:
        for p in sorted((_ROOT / pkg).rglob("*.py")):
            st = p.stat()
            out.append((str(p.relative_to(_ROOT)), st.st_mtime_ns, st.st_size))
    return tuple(out)


def _ours(py_file) -> bool:
    try:
        rel = Path(py_file).resolve().relative_to(_ROOT)
    except (ValueError, OSError):
        return False
    return bool(rel.parts) and rel.parts[0] in PACKAGES


class ProjectCacheLocator(caching.InTreeCacheLocator):
    """Numba's in-tree locator (``__pycache__`` beside the source) with the project-wide stamp."""

    @classmethod
    def from_function(cls, py_func, py_file):
        return super().from_function(py_func, py_file) if _ours(py_file) else None

    def get_source_stamp(self):
        return project_stamp()


def install() -> None:
    """Put ``ProjectCacheLocator`` before Numba's own in-tree one (after a user's ``NUMBA_CACHE_DIR``).
    Must run before the first ``cache=True`` function is decorated: it runs when this module is imported,
    which ``kernels`` does first, and ``engine`` imports ``kernels`` first."""
    classes = caching.CacheImpl._locator_classes
    if ProjectCacheLocator not in classes:
        at = classes.index(caching.InTreeCacheLocator) if caching.InTreeCacheLocator in classes else 0
        classes.insert(at, ProjectCacheLocator)


install()
