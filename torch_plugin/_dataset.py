"""``UIHDataset``: reconstructed batches as a ``torch.utils.data.IterableDataset`` (docs/training-order.md).

Each reader (a DataLoader worker of a rank) opens the store read-only in its own process, builds its own
``Reconstructor`` and reads its share of the epoch's global batches: global batch ``g`` goes to rank
``g % world_size`` and, within the rank, to worker ``(g // world_size) % num_workers``, which is the order
in which the DataLoader hands its workers' batches to the training loop. So a rank sees its batches in
the global order, and an epoch's order depends only on ``(seed, epoch)``, never on the world.

Resume: ``state_dict()`` / ``load_state_dict()`` where the dataset is iterated: the dataset itself with
``num_workers=0``; each worker's copy under ``torchdata.stateful_dataloader.StatefulDataLoader``, whose own
``state_dict()`` gathers them (the torchdata convention). A state resumes exactly with the same world and
workers, and elastically (each remaining batch once) at another world, from the batches all ranks
consumed in lockstep.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

import engine

if TYPE_CHECKING:
    from engine._types import StorePath, ThinSource


def _world(rank, world_size) -> tuple:
    if (rank is None) != (world_size is None):
        raise engine.InvalidArgument(f"give rank and world_size together, or neither (got {rank!r}, {world_size!r})")
    if rank is not None:
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1 or \
                isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise engine.InvalidArgument(f"need 0 <= rank < world_size, got rank {rank!r}, world_size {world_size!r}")
        return rank, world_size
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class UIHDataset(torch.utils.data.IterableDataset):
    """Batches of a projection over thin rows, as dicts of torch tensors, sharded over ranks and workers.

    Parameters
    ----------
    store : path, URI or UIHStore
        The store the thin rows point into; each reader opens it read-only (an open ``UIHStore`` is
        reopened at its version from its root).
    thin_source : Parquet path(s), folder, URI or pyarrow.Table
    projection : engine.Projection
    batch_size, order, seed, shuffle_window
        As ``Reconstructor.iter_batches``; ``epoch`` is set with ``set_epoch``.
    rank, world_size : int or None
        This process's rank; None: from ``torch.distributed`` when initialized, else 0 and 1.
    extra_columns : list of str or None
        Pass-through columns carried into each batch (None: all of them: ids, labels...).
    device : str
        The reconstructor's device in each reader ("cpu" by default: readers are usually worker processes).
    **options
        More ``Reconstructor`` keywords (``prefetch``, ``chunk_batches``, ``cache_bytes``).
    """

    def __init__(self, store: StorePath | engine.UIHStore, thin_source: ThinSource, projection: engine.Projection,
                 batch_size: int = 1024, order: Literal["stream", "shuffle"] = "stream", seed: int = 0,
                 shuffle_window: int | None = None, rank: int | None = None, world_size: int | None = None,
                 extra_columns: Sequence[str] | None = None, device: str = "cpu", epoch: int = 0,
                 **options: Any) -> None:
        super().__init__()
        self._version: int | None
        if isinstance(store, engine.UIHStore):
            self._store, self._version = store.root, int(store.version)
        elif isinstance(store, (str, Path)):
            self._store, self._version = str(store), None
        else:
            raise engine.InvalidArgument(f"store must be a path, a URI or an open UIHStore, got {type(store).__name__}")
        if not isinstance(projection, engine.Projection):
            raise engine.InvalidArgument(f"projection must be an engine.Projection, got {type(projection).__name__}")
        self._thin = thin_source if not isinstance(thin_source, Path) else str(thin_source)
        self.projection, self.batch_size, self.device, self._options = projection, batch_size, device, options
        self._order = engine.Order(order, seed, epoch, shuffle_window)  # checks the keywords now, not in a worker
        self._rank, self._world = _world(rank, world_size)
        self.extra_columns = (list(engine.Reconstructor.pass_through_columns(thin_source))
                              if extra_columns is None else list(extra_columns))
        # the epoch lives in shared memory so that set_epoch reaches persistent workers (forked or spawned)
        self._epoch = multiprocessing.get_context("spawn").Value("q", int(epoch), lock=False)
        self._resume: dict | None = None
        # this process's batch iterator (the dataset's in the main process, a worker's copy)
        self._it: engine.BatchIterator | None = None

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        """The epoch to read next (as ``DistributedSampler.set_epoch``); a pending resume state is dropped
        when it belongs to another epoch."""
        engine.Order(self._order.order, self._order.seed, epoch, self._order.shuffle_window)
        self._epoch.value = int(epoch)
        if self._resume is not None and self._resume.get("epoch") != int(epoch):
            self._resume = None

    def _share(self) -> tuple:
        info = torch.utils.data.get_worker_info()
        wid, nw = (0, 1) if info is None else (info.id, info.num_workers)
        return self._rank + self._world * wid, self._world * nw

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        store = engine.UIHStore.open(self._store, version=self._version, read_only=self._version is None)
        rec = engine.Reconstructor(store, self.projection, device=self.device, **self._options)
        o = self._order
        it = rec.iter_batches(self._thin, self.batch_size, order=o.order, seed=o.seed, epoch=self.epoch,
                              shuffle_window=o.shuffle_window, resume=self._resume, share=self._share(),
                              extra_columns=self.extra_columns)
        self._it, self._resume = it, None
        try:
            for batch in it:
                yield batch.to_torch()
        finally:
            it.close()
            store.close()

    def state_dict(self) -> dict:
        """A JSON-serializable state of the batches this process's iteration handed out (between batches)."""
        if self._it is not None:
            return self._it.state_dict()
        if self._resume is not None:
            return dict(self._resume)
        return {"format": "uih-order/1", "epoch": self.epoch, "next_batch": 0, "fresh": True}

    def load_state_dict(self, state: dict) -> None:
        """Resume from ``state`` at the next iteration (and read its epoch)."""
        if not isinstance(state, dict) or "epoch" not in state:
            raise engine.InvalidArgument(f"load_state_dict needs a UIHDataset.state_dict(), got {str(state)[:80]!r}")
        self._epoch.value = int(state["epoch"])
        self._it = None
        self._resume = None if state.get("fresh") else dict(state)

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_it"] = None  # a live iterator (threads, a store) never travels to a worker
        return d

    def __repr__(self) -> str:
        return (f"UIHDataset({self._store!r}, {self.projection!r}, batch_size={self.batch_size}, "
                f"order={self._order.order!r}, seed={self._order.seed}, epoch={self.epoch}, "
                f"rank={self._rank}/{self._world}, pid={os.getpid()})")
