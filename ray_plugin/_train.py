"""Trainer-local mode: each Ray Train worker reconstructs its own user shard with its own Reconstructor.

For GPU trainers: the worker's Reconstructor runs on its GPU (``device="cuda"``, or feed ``rec`` and the
shard to ``dali_plugin.uih_pipeline`` with ``device_id``), so examples never cross the network, only
the small thin rows do. Shards come from ``engine.shard``: disjoint users per rank, every row once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import engine

from . import _deps
from ._shards import StoreRef, pass_through_columns, portable, read_shard, thin_schema

if TYPE_CHECKING:
    import pyarrow as pa

    from engine._types import StorePath, ThinSource


def local_shard(store: StorePath | engine.UIHStore, thin_source: ThinSource, projection: engine.Projection, *,
                rank: int | None = None, world_size: int | None = None, version: int | None = None,
                device: str = "auto", extra_columns: Sequence[str] | None = None,
                order: Literal["stream", "shuffle"] = "stream", seed: int = 0, epoch: int = 0,
                shuffle_window: int | None = None, batch_size: int | None = None,
                resume: Mapping[str, Any] | None = None,
                **reconstructor_kwargs: Any) -> tuple[engine.Reconstructor, pa.Table]:
    """This rank's Reconstructor and thin rows: ``rec.iter_batches(rows, batch_size, extra_columns=...)``.

    Parameters
    ----------
    store : str, Path or engine.UIHStore
        Opened read-only here, pinned at ``version`` (default: the store's newest; pass the driver's
        ``store.version`` so every rank sees the same one).
    thin_source : pyarrow.Table, or Parquet file(s) / folder
    projection : engine.Projection
    rank, world_size : int, optional
        Default: this Ray Train worker's (``ray.train.get_context()``).
    device : {"auto", "cpu", "cuda"}
    extra_columns : list of str, optional
        Pass-through columns to keep in the rows; default all of them.
    order, seed, epoch, shuffle_window, batch_size
        ``"stream"``: this rank's user-hash shard, in source order. ``"shuffle"`` (``batch_size`` needed):
        this rank's share of the epoch's global batches (``Reconstructor.iter_batches``), in the epoch's
        order, so ``rec.iter_batches(rows, batch_size)`` yields exactly them; every example once per epoch
        across the ranks, the order fixed by ``(seed, epoch)`` whatever the world size.
    resume : dict, optional
        With ``order="shuffle"``: a ``state_dict()`` of this epoch's iterator of a share (``iter_batches``
        with these keywords and ``share=(rank, world_size)``, a ``"uih-order/1"`` state). The rows are then
        only the batches that share had left; from another world size, this rank's share of the batches
        after the consumed prefix (``next_batch``), so the ranks together yield each remaining batch once.
    **reconstructor_kwargs
        Passed to ``engine.Reconstructor`` (``prefetch``, ``chunk_batches``...).

    Returns
    -------
    (engine.Reconstructor, pyarrow.Table)
    """
    if resume is not None and order == "stream":
        raise engine.InvalidArgument("local_shard(resume=...) needs order='shuffle': a stream-order shard is this "
                                     "rank's users, not a share of the epoch's batches; resume it with "
                                     "rec.iter_batches(rows, batch_size, resume=state) on the same rows")
    if rank is None or world_size is None:
        ctx = _deps.ray().train.get_context()
        rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    rec = engine.Reconstructor(StoreRef.of(store, version).open(), projection, device=device,
                               **reconstructor_kwargs)
    extra = pass_through_columns(thin_schema(thin_source)) if extra_columns is None else list(extra_columns)
    if order != "stream":
        if batch_size is None:
            raise engine.InvalidArgument("local_shard(order='shuffle') needs batch_size: the epoch's order is "
                                         "one of global batches")
        return rec, rec.epoch_rows(portable(thin_source), batch_size, order, seed, epoch, shuffle_window,
                                   share=(int(rank), int(world_size)), extra_columns=extra, resume=resume)
    engine.Order(order, seed, epoch, shuffle_window)
    columns = list(dict.fromkeys([*rec.thin_columns, *extra]))
    return rec, read_shard(portable(thin_source), columns, int(world_size), int(rank))
