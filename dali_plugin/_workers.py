"""Disaggregated preprocessing on one host: N worker processes, each owning a user shard.

Each worker opens the store read-only, pinned at the caller's version, and reconstructs the thin rows
of its shard (``engine.shard``: users never overlap, so each user's rows are read by one worker only).
Batches come back through bounded queues, interleaved round-robin; a worker's exception is re-raised
in the consumer with the worker's traceback, and a worker that dies is reported, never waited on forever.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import traceback

import engine
from engine._errors import UIHError
from engine._thin import thin_batches

from ._source import EpochSource, output_names


def _worker(root, version, proj, thin_source, columns, batch_size, num, index, ctrl, out, abort, extra):
    try:
        import os

        import numba
        import pyarrow as pa

        # the workers share the host's cores: split them instead of oversubscribing
        numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, (os.cpu_count() or 1) // num)))
        store = engine.UIHStore.open(root, version=version)
        rec = engine.Reconstructor(store, proj, device="cpu", prefetch=1)
        table = pa.Table.from_batches(list(thin_batches(thin_source, columns)))
        mine = engine.shard(table, num, index)
        names = output_names(rec, extra)
        while ctrl.get() == "epoch":
            for b in rec.iter_batches(mine, batch_size, extra_columns=extra):
                if abort.is_set():
                    break
                out.put(("batch", tuple(b[n] for n in names)))
            out.put(("done", None))
    except BaseException as e:  # noqa: BLE001 - shipped to the consumer
        out.put(("error", f"{type(e).__name__}: {e}\n--- worker {index} traceback ---\n{traceback.format_exc()}"))


class WorkerPoolSource(EpochSource):
    """Round-robin batches from ``workers`` processes; same multiset of rows as ``iter_batches``."""

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
        self._procs = [ctx.Process(target=_worker, daemon=True, name=f"uih-worker-{i}",
                                   args=(str(rec.store.root), rec.store.version, rec.projection, thin_source,
                                         rec.thin_columns + list(extra), batch_size, workers, i, self._ctrl[i],
                                         self._out[i], self._stop_events[i], list(extra)))
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

    def batches(self):
        for e in self._stop_events:
            e.clear()
        for c in self._ctrl:
            c.put("epoch")
        active = list(range(len(self._procs)))
        try:
            while active:
                for i in list(active):
                    kind, payload = self._get(i)
                    if kind == "batch":
                        yield payload
                    elif kind == "done":
                        active.remove(i)
                    else:
                        self.close()
                        raise UIHError(f"reconstruction failed in a preprocessing worker: {payload}")
        finally:
            if active:  # interrupted mid-epoch: stop the workers' epoch and drain it
                for e in self._stop_events:
                    e.set()
                for i in active:
                    while self._procs[i].is_alive() and self._get(i)[0] == "batch":
                        pass

    def close(self):
        for c, p in zip(self._ctrl, self._procs):
            if p.is_alive():
                c.put("stop")
        for p in self._procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
