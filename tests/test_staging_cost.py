"""The host work of preparing a chunk does not grow with the events it holds (it is O(users + segments + row groups),
checked by counting calls rather than timing them): with 10x the events per user, a warm chunk's preparation makes
no more Python and C-level calls, although it pins more arena blocks (a row group's slice of up to ``slot_rows``
events); the events and blocks only lengthen vectorised work (NumPy calls over blocks, the kernels)."""

import sys

import numpy as np
import pytest

import engine
from uih.speed import COLUMNS, requests
from uih.workload import synthetic_store


def _calls(fn) -> int:
    n = [0]

    def count(frame, event, arg):
        if event in ("call", "c_call"):
            n[0] += 1
    sys.setprofile(count)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return n[0]


@pytest.mark.parametrize("actions", [None, [1, 2]], ids=["all-types", "type-filter"])
def test_chunk_preparation_calls_do_not_grow_with_events(tmp_path, actions):
    counts, events, blocks = [], [], []
    for history in (1_000, 10_000):
        store = synthetic_store(tmp_path / f"h{history}", users=8, history=history)
        thin = store.snapshot(requests(np.random.default_rng(3), 8, 64))
        rec = engine.Reconstructor(store, engine.Projection(COLUMNS, max_len=history, actions=actions),
                                   device="cpu", prefetch=0)
        t = rec._checker.table(thin)
        rec._prepare(rec._plan(t))  # warm: row groups decoded, arena blocks filled
        arena, used = rec._arena, []
        real = arena.acquire
        arena.acquire = lambda keys: used.append(len(keys)) or real(keys)  # noqa: B023
        counts.append(_calls(lambda: rec._prepare(rec._plan(t))))  # noqa: B023
        events.append(rec.stats["events_read"] // 2)  # the warm-up's and the counted chunk's
        blocks.append(sum(used))
        store.close()
    assert events[1] >= 9 * events[0]  # the second chunk really holds ~10x the events
    assert blocks[1] < 10 * blocks[0]
    # the arena's bookkeeping is vectorized over blocks too: not one more call with 10x the events
    assert counts[1] <= counts[0], f"calls {counts} for blocks {blocks}"
