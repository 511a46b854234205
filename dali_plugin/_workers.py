"""Disaggregated preprocessing on one host: N worker processes, each owning a user shard.

Each worker opens the store read-only, pinned at the caller's version, and reconstructs the thin rows
of its shard: in ``order="stream"`` a user shard (``engine.shard``: users never overlap, so each user's
rows are read by one worker only; batches interleave round-robin, same rows, other order); in
``order="shuffle"`` a share of the epoch's global batches (worker ``i`` of ``N`` takes ``i, i + N, ...``),
which the round robin hands out in the global order: the batches of ``iter_batches``.
Batches travel through shared memory: each worker owns a small ring of blocks, writes a batch into a free
one and sends only its name and layout; the consumer maps it without a copy and hands the block back once
DALI has copied the batch in. The ring bounds memory and gives back-pressure. Batches interleave
round-robin; a worker's exception is re-raised in the consumer with the worker's traceback, and a worker
that dies is reported, never waited on forever.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import traceback
from dataclasses import dataclass
from multiprocessing import shared_memory
from multiprocessing.synchronize import Event as EventLike
from typing import Any

import numpy as np

import engine
from engine import UIHError

from ._progress import STREAM
from ._source import EpochSource, _packed, output_names


class _Ring:
    """The worker's shared-memory blocks; a block is reused only after the consumer hands it back."""

    def __init__(self, slots, freed):
        self.slots, self.freed, self.blocks, self.idle = slots, freed, [], []

    def send(self, out, blob, layout):
        """One packed batch (``Batch.packed``): its buffer into a free block in one copy, then its name."""
        nbytes = blob.nbytes
        if not self.blocks:  # sized by the first (largest) batch
            self.blocks = [shared_memory.SharedMemory(create=True, size=max(nbytes, 1)) for _ in range(self.slots)]
            self.idle = list(range(self.slots))
        if nbytes > self.blocks[0].size:  # cannot happen for fixed batch sizes; stay correct anyway
            out.put(("batch", (blob, layout)))
            return
        slot = self.idle.pop() if self.idle else self.freed.get()
        np.ndarray(nbytes, np.uint8, buffer=self.blocks[slot].buf)[...] = blob
        out.put(("shm", (slot, self.blocks[slot].name, nbytes, layout)))

    def close(self):
        for b in self.blocks:
            b.close()
            b.unlink()


@dataclass(frozen=True)
class _Job:
    """What one worker process reconstructs: its user shard of the thin rows, at the caller's version."""

    root: Any  # a local path or a remote root (pickles with its filesystem)
    version: int
    projection: engine.Projection
    thin_source: object  # path(s) or a Table
    extra: tuple
    batch_size: int
    num: int
    index: int
    slots: int


@dataclass(frozen=True)
class _Channels:
    """The worker's queues and events: epochs in, batches out, freed ring slots back, abort."""

    ctrl: mp.Queue
    out: mp.Queue
    abort: EventLike
    freed: mp.Queue


def _worker(job: _Job, ch: _Channels):
    ring = _Ring(job.slots, ch.freed)
    try:
        import numba

        # the workers share the host's cores: split them instead of oversubscribing
        numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, (os.cpu_count() or 1) // job.num)))
        store = engine.UIHStore.open(job.root, version=job.version)
        rec = engine.Reconstructor(store, job.projection, device="cpu", prefetch=1)
        thin = rec.read_thin(job.thin_source, job.extra)
        mine = None
        while (msg := ch.ctrl.get()) != "stop":
            kwargs, resume = msg
            if kwargs["order"] == "shuffle":
                # this worker's share of the epoch's global batches: the consumer's round robin over the
                # workers hands them out in the global order, the order of iter_batches
                batches = rec.iter_batches(thin, job.batch_size, extra_columns=job.extra, resume=resume,
                                           share=(job.index, job.num), **kwargs)
            else:
                mine = engine.shard(thin, job.num, job.index) if mine is None else mine
                batches = rec.iter_batches(mine, job.batch_size, extra_columns=job.extra)
            for b in batches:
                if ch.abort.is_set():
                    break
                ring.send(ch.out, *_packed(b))
            ch.out.put(("done", None))
    except BaseException as e:  # noqa: BLE001 - shipped to the consumer
        ch.out.put(("error", f"{type(e).__name__}: {e}\n--- worker {job.index} traceback ---\n"
                             f"{traceback.format_exc()}"))
    finally:
        ring.close()


class WorkerPoolSource(EpochSource):
    """Round-robin batches from ``workers`` processes: in stream order the same multiset of rows as
    ``iter_batches``, in shuffle order its batches."""

    def __init__(self, rec, thin_source, batch_size: int, workers: int, queue_depth: int = 2, extra=()):
        super().__init__(output_names(rec, extra))
        if isinstance(thin_source, (list, tuple)):
            thin_source = [str(p) for p in thin_source]
        elif not hasattr(thin_source, "schema"):
            thin_source = str(thin_source)
        ctx = mp.get_context("spawn")  # DALI and numba threads do not survive fork
        self._ctrl = [ctx.Queue() for _ in range(workers)]
        self._out = [ctx.Queue(maxsize=queue_depth) for _ in range(workers)]
        self._stop_events = [ctx.Event() for _ in range(workers)]
        self._freed = [ctx.Queue() for _ in range(workers)]
        self._maps: dict = {}  # block name -> SharedMemory attached here
        jobs = [_Job(rec.store.root, rec.store.version, rec.projection, thin_source, tuple(extra),
                     batch_size, workers, i, queue_depth + 2) for i in range(workers)]
        chans = [_Channels(self._ctrl[i], self._out[i], self._stop_events[i], self._freed[i])
                 for i in range(workers)]
        self._procs = [ctx.Process(target=_worker, args=(jobs[i], chans[i]), daemon=True, name=f"uih-worker-{i}")
                       for i in range(workers)]
        for p in self._procs:
            p.start()

    def _get(self, i):
        while True:
            try:
                return self._out[i].get(timeout=1.0)
            except queue.Empty:
                if not self._procs[i].is_alive():
                    raise UIHError(f"preprocessing worker {i} died (exit code {self._procs[i].exitcode})") from None

    def batches(self, reading=STREAM):
        for e in self._stop_events:
            e.clear()
        for c in self._ctrl:
            c.put((reading.kwargs, reading.resume))
        active = list(range(len(self._procs)))
        pending = None
        try:
            while active:
                for i in list(active):
                    kind, payload = self._get(i)
                    if kind == "shm":
                        slot, name, nbytes, layout = payload
                        pending = (i, slot)
                        yield self._view(name, nbytes), layout
                        self._freed[i].put(slot)  # DALI copied the batch in when it took it
                        pending = None
                    elif kind == "batch":
                        yield payload
                    elif kind == "done":
                        active.remove(i)
                    else:
                        self.close()
                        raise UIHError(f"reconstruction failed in a preprocessing worker: {payload}")
        finally:
            if pending is not None:
                self._freed[pending[0]].put(pending[1])
            if active:  # interrupted mid-epoch: stop the workers' epoch and drain it
                for e in self._stop_events:
                    e.set()
                for i in active:
                    while self._procs[i].is_alive():
                        kind, payload = self._get(i)
                        if kind == "shm":
                            self._freed[i].put(payload[0])
                        elif kind != "batch":
                            break

    def _view(self, name, nbytes):
        shm = self._maps.get(name)
        if shm is None:
            # attaching registers the block with the resource tracker again (Python < 3.13); spawned
            # workers share this process's tracker, which keeps one entry per name, so the worker's
            # unlink removes it. Unregistering here too made the tracker fail on that second removal.
            shm = self._maps[name] = shared_memory.SharedMemory(name=name)
        return np.ndarray(nbytes, np.uint8, buffer=shm.buf)

    def close(self):
        for shm in self._maps.values():
            try:
                shm.close()
            except BufferError:  # a view is still alive somewhere; the OS frees the mapping at exit
                pass
        self._maps.clear()
        for c, p in zip(self._ctrl, self._procs):
            if p.is_alive():
                c.put("stop")
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
