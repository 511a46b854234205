"""A bounded background stage: produce the next items while the caller consumes the current one."""

from __future__ import annotations

import queue
import threading

_DONE = object()


class _Failure:
    def __init__(self, exc):
        self.exc = exc


def prefetch(produce, depth: int = 2, name: str = "uih-prefetch", busy: threading.Event | None = None):
    """Iterate ``produce()`` (a generator function) in a thread, at most ``depth`` items ahead.

    An exception in the producer is re-raised in the caller with its original traceback; closing the
    consumer (``break``, garbage collection) stops the producer at its next hand-off. ``busy``, if given,
    is set while the producer is making an item (not while it waits for room in the queue), so the
    consumer can leave it a core.
    """
    if depth <= 0:
        yield from produce()
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    flag = busy if busy is not None else threading.Event()

    def run():
        try:
            it = produce()
            while True:
                flag.set()
                item = next(it, _DONE)
                flag.clear()
                if item is _DONE or not put(item):
                    break
            close = getattr(it, "close", None)  # a generator: closed now, not when collected, since it
            if close is not None:  # may own a stage (a thread) of its own
                close()
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, never swallowed
            flag.clear()
            put(_Failure(e))
            return
        put(_DONE)

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        t.join(timeout=5)
