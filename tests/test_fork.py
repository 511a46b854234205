"""A process forked after the engine ran reconstructs: Numba's threading layer survives fork (kernels._threads).

With GNU OpenMP as the layer, the child is killed at its first parallel kernel ("fork() called from a process
already using GNU OpenMP, this is unsafe"); TBB, which kernels._threads makes Numba find, survives it.
"""

import multiprocessing as mp
import queue

import numba
import numpy as np
import pytest
import torch

import engine
from uih.workload import DAY_US, synthetic_store

WAIT_S = 120


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A reconstructor and thin rows (user 9 has no events: an empty row), and the parent's batch of them:
    the parent's kernels have run, so its threading layer has started."""
    store = synthetic_store(tmp_path_factory.mktemp("fork") / "store", users=8, history=300)
    users = np.array([0, 5, 9, 1, 1, 7, 3, 2])
    thin = store.snapshot({"user_id": users, "request_ts": np.full(len(users), 31 * DAY_US)})
    rec = engine.Reconstructor(store, engine.Projection(["item_id", "action", "ts"], max_len=128), device="cpu")
    batch = rec.reconstruct(thin).to_numpy()
    yield rec, thin, batch, numba.threading_layer()  # raises unless a parallel kernel ran
    store.close()


def _child(rec, thin, out):
    out.put({k: np.array(v) for k, v in rec.reconstruct(thin).to_numpy().items()})


def _result(child, out):
    """The child's batch, or None once it died without one (or after ``WAIT_S``)."""
    for _ in range(WAIT_S * 10):
        try:
            return out.get(timeout=0.1)
        except queue.Empty:
            if not child.is_alive() and out.empty():
                return None
    return None


def _explain(code, layer) -> str:
    return (f"the forked child exited with {code}; Numba's threading layer is {layer!r} (GNU OpenMP does not "
            "survive fork: install tbb, which kernels._threads loads)")


def test_forked_child_reconstructs_after_the_parent(job):
    rec, thin, want, layer = job
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child, args=(rec, thin, out), daemon=True)
    child.start()
    try:
        got = _result(child, out)
    finally:
        child.join(WAIT_S)
        if child.is_alive():
            child.kill()
    assert got is not None and child.exitcode == 0, _explain(child.exitcode, layer)
    assert list(got) == list(want)
    for k in want:
        assert np.array_equal(got[k], want[k]), k


class _Batches(torch.utils.data.IterableDataset):
    """The thin rows in halves, one per DataLoader worker, each reconstructed in its worker."""

    def __init__(self, rec, thin):
        self.rec, self.thin = rec, thin

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        n = self.thin.num_rows
        part = 0 if info is None else info.id
        half = self.thin.slice(part * (n // 2), n // 2)
        yield part, self.rec.reconstruct(half).to_torch()


def test_dataloader_fork_workers_after_the_parent(job):
    rec, thin, want, layer = job
    loader = torch.utils.data.DataLoader(_Batches(rec, thin), batch_size=None, num_workers=2,
                                         multiprocessing_context="fork", timeout=WAIT_S)
    try:
        parts = dict(loader)
    except RuntimeError as e:  # "DataLoader worker (pid ...) is killed by signal"
        pytest.fail(f"{e}; {_explain('a signal', layer)}")
    assert sorted(parts) == [0, 1]
    n = thin.num_rows // 2
    for k in want:
        got = torch.cat([parts[0][k], parts[1][k]]).numpy()
        assert np.array_equal(got, want[k][:2 * n]), k
