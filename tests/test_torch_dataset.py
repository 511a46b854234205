"""torch_plugin.UIHDataset (docs/training-order.md): DataLoader workers (fork and spawn), ranks, epochs, resume."""

import json

import numpy as np
import pytest
import torch
from test_order import PROJ

import engine
from torch_plugin import UIHDataset

KW = dict(order="shuffle", seed=4, shuffle_window=900)


def _expected(logged, epoch=0, batch_size=100):
    with engine.UIHStore.open(logged / "store", read_only=True) as store:
        rec = engine.Reconstructor(store, PROJ, device="cpu")
        return [{k: np.array(v) for k, v in b.items()}
                for b in rec.iter_batches(logged / "thin.parquet", batch_size, epoch=epoch,
                                          extra_columns=["example_id"], **KW)]


def _same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert set(g) == set(w)
        for k in w:
            assert np.array_equal(g[k].numpy(), w[k]), k


@pytest.fixture(scope="module")
def used_engine(logged):
    """The parent process has run the engine (its kernels' thread pools exist) before any worker starts."""
    _expected(logged)
    return logged


def test_in_process_batches_equal_iter_batches(used_engine):
    ds = UIHDataset(used_engine / "store", used_engine / "thin.parquet", PROJ, batch_size=100, **KW)
    assert ds.extra_columns == ["example_id"]  # pass-through columns by default
    got = list(torch.utils.data.DataLoader(ds, batch_size=None))
    assert all(isinstance(v, torch.Tensor) for b in got for v in b.values())
    _same(got, _expected(used_engine))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_after_engine_use_give_the_global_order(used_engine, context):
    ds = UIHDataset(used_engine / "store", used_engine / "thin.parquet", PROJ, batch_size=100, **KW)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context=context,
                                         timeout=300)
    _same(list(loader), _expected(used_engine))


def test_ranks_times_workers_take_disjoint_shares(used_engine):
    want = _expected(used_engine)
    got = []
    for rank in range(2):
        ds = UIHDataset(used_engine / "store", used_engine / "thin.parquet", PROJ, batch_size=100, rank=rank,
                        world_size=2, **KW)
        mine = list(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, timeout=300))
        _same(mine, want[rank::2])  # a rank's batches in the global order
        got += [b["example_id"] for b in mine]
    ids = torch.cat(got).numpy()
    assert len(ids) == len(set(ids.tolist())) == sum(len(b["example_id"]) for b in want)


def test_set_epoch_reaches_persistent_workers(used_engine):
    ds = UIHDataset(used_engine / "store", used_engine / "thin.parquet", PROJ, batch_size=100, **KW)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, persistent_workers=True,
                                         pin_memory=True, timeout=300)
    first = list(loader)
    ds.set_epoch(1)
    second = list(loader)
    _same(first, _expected(used_engine, epoch=0))
    _same(second, _expected(used_engine, epoch=1))


def test_state_resumes_exactly_and_elastically(used_engine):
    want = _expected(used_engine)
    ds = UIHDataset(used_engine / "store", used_engine / "thin.parquet", PROJ, batch_size=100, **KW)
    it = iter(ds)
    head = [next(it) for _ in range(6)]
    state = json.loads(json.dumps(ds.state_dict()))
    it.close()
    again = UIHDataset(used_engine / "store", used_engine / "thin.parquet", PROJ, batch_size=100, **KW)
    again.load_state_dict(state)
    _same(head + list(again), want)
    # the same state at world size 2: each remaining batch once, rank r taking every other one
    rest = []
    for rank in range(2):
        r = UIHDataset(used_engine / "store", used_engine / "thin.parquet", PROJ, batch_size=100, rank=rank,
                       world_size=2, **KW)
        r.load_state_dict(state)
        rest.append(list(r))
    _same(rest[0], want[6::2])
    _same(rest[1], want[7::2])


def test_stateful_dataloader_resumes_workers_exactly(used_engine):
    sdl = pytest.importorskip("torchdata.stateful_dataloader")
    want = _expected(used_engine)
    make = lambda: sdl.StatefulDataLoader(  # noqa: E731
        UIHDataset(used_engine / "store", used_engine / "thin.parquet", PROJ, batch_size=100, **KW),
        batch_size=None, num_workers=2, timeout=300)
    loader = make()
    it = iter(loader)
    head = [next(it) for _ in range(5)]
    state = loader.state_dict()
    del it
    resumed = make()
    resumed.load_state_dict(state)
    _same(head + list(resumed), want)


@pytest.mark.parametrize("kwargs, match", [
    (dict(rank=0), "rank and world_size together"),
    (dict(rank=2, world_size=2), "rank < world_size"),
    (dict(order="random"), "order must be"),
])
def test_bad_arguments_are_invalid_argument(used_engine, kwargs, match):
    with pytest.raises(engine.InvalidArgument, match=match):
        UIHDataset(used_engine / "store", used_engine / "thin.parquet", PROJ, **kwargs)
