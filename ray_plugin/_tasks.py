"""The Ray Data task that reconstructs parts, with what it keeps warm in its worker process.

Ray reuses idle worker processes for later tasks, so a process keeps, across tasks, epochs and datasets:
the open store and its ``Reconstruct`` (Numba kernels loaded, the arena's decoded row groups), keyed by
what they depend on; and one epoch's ordered thin rows for its other parts. A warm epoch then pays no
process start, no JIT cache load and no store open: an actor pool (``ActorPoolStrategy``) starts new
actors for every execution of a dataset, which is what made each epoch's first batch take seconds.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict

import pyarrow as pa

_RECONSTRUCTORS: OrderedDict = OrderedDict()  # (class, store, projection, ...) -> Reconstruct
_ROWS: dict = {}  # (plan token, "epoch_rows") -> the epoch's thin rows in its order
# reconstructors a process keeps: each holds its arena of decoded row groups (up to the Reconstructor's
# cache_bytes, 1 GiB by default) for as long as Ray keeps the idle process
_KEEP = 2


def reconstructor(actor_cls, ref, projection, batch_size, extra, device, stats_column, batch_column):
    """This process's ``actor_cls`` for these arguments, made on first use."""
    key = (actor_cls, _hashable(ref), repr(projection), batch_size, tuple(extra), device, stats_column, batch_column)
    if key not in _RECONSTRUCTORS:
        _RECONSTRUCTORS[key] = actor_cls(ref, projection, batch_size, extra=extra, device=device,
                                         stats_column=stats_column, batch_column=batch_column)
        while len(_RECONSTRUCTORS) > _KEEP:
            _RECONSTRUCTORS.popitem(last=False)[1].store.close()
    _RECONSTRUCTORS.move_to_end(key)
    return _RECONSTRUCTORS[key]


def reconstruct_parts(parts: pa.Table, *, plan, block_rows, ref, projection, actor_cls, extra, device, num_threads,
                      stats_column, batch_column):
    """``map_batches`` function: the blocks of each part named in ``parts["part"]``, ``block_rows`` rows each."""
    if num_threads:  # the task's CPU share, not the host's cores
        import numba

        numba.set_num_threads(max(1, min(int(num_threads), numba.config.NUMBA_NUM_THREADS)))
    actor = reconstructor(actor_cls, ref, projection, block_rows, extra, device, stats_column, batch_column)
    if _ROWS and next(iter(_ROWS))[0] != plan.token:  # one epoch's rows at a time
        _ROWS.clear()
    for index in parts.column("part").to_pylist():
        rows, batches = plan.part(index, actor.rec, _ROWS)
        yield from actor.tables(rows, batches)


def _hashable(ref):
    try:
        hash(ref)
        return ref
    except TypeError:  # a remote root holding its filesystem: its pickled bytes name it
        return pickle.dumps(ref)
