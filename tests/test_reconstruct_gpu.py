"""Reconstruction on a real GPU against the CPU path, on random projections of one store.

Marked ``gpu``: skipped unless Numba sees a real device (conftest's ``no_real_gpu``); run there with
``NUMBA_ENABLE_CUDASIM=0 python -m pytest -m gpu``. Each case draws a projection (columns of both widths
and float columns, filters, window, alignment, pad value, layout, max_len) and compares every array bit
for bit: ``reconstruct``, ``iter_batches`` (also with recycled arena slots and deep prefetch, so a missing
ordering between the device streams shows), and ``pad`` of the jagged twin.
"""

import numpy as np
import pyarrow as pa
import pytest

import engine
from uih.workload import COLUMNS, random_events

pytestmark = pytest.mark.gpu

DAY = 10**9
FLOATS = {"score": "float32", "weight": "float64"}
NAMES = ["seq", "ts", *COLUMNS, *FLOATS]


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A store moved on by seals, updates and a compaction, and thin rows logged at every step (tails
    included), with one unknown user; yields (store, thin rows)."""
    rng = np.random.default_rng(7)
    store = engine.UIHStore.create(tmp_path_factory.mktemp("gpu") / "store", columns={**COLUMNS, **FLOATS})
    users, thins = np.arange(40), []
    for d in range(5):
        ev = random_events(rng, users, 20_000, t0=d * DAY, span=DAY)
        ev["action"] = np.where(rng.random(20_000) < 0.04, 3, ev["action"] % 3).astype(np.int32)  # 3 is rare
        ev["score"] = rng.standard_normal(20_000).astype(np.float32)
        ev["weight"] = rng.standard_normal(20_000)
        seqs = store.append(ev)
        pick = rng.choice(len(seqs), 200, replace=False)
        store.update({"user_id": ev["user_id"][pick], "seq": seqs[pick], "item_id": rng.integers(0, 99, 200)})
        req = {"user_id": np.r_[rng.integers(0, 40, 99), 1000], "request_ts": rng.integers(d * DAY, (d + 2) * DAY, 100)}
        thins.append(store.snapshot(req))
        if d < 4:  # the last day stays mutable: thin rows carry long tails
            store.seal((d + 1) * DAY)
        if d == 2:
            store.compact()
    yield store, pa.concat_tables(thins)
    store.close()


def random_projection(rng, layout) -> engine.Projection:
    cols = [str(c) for c in rng.choice(NAMES, int(rng.integers(1, 5)), replace=False)]
    floats = all(c in FLOATS for c in cols)  # a pad value must fit every column exactly
    return engine.Projection(
        cols, max_len=int(rng.choice([1, 7, 64, 300, 2500])),
        actions=None if rng.random() < 0.5 else sorted(int(a) for a in rng.choice(4, int(rng.integers(1, 3)),
                                                                                   replace=False)),
        window_us=None if rng.random() < 0.5 else int(rng.integers(DAY // 10, 3 * DAY)),
        align=str(rng.choice(["left", "right"])),
        pad_value=float(rng.choice([-1.5, 0.25])) if floats else int(rng.choice([0, -1, 7])), layout=layout)


def _host(batch) -> dict:
    return {k: np.asarray(v) for k, v in batch.to_numpy().items()}


def _same(got: dict, want: dict, what: str) -> None:
    assert set(got) == set(want), what
    for k in want:
        g, w = got[k], want[k]
        assert (g.dtype, g.shape) == (w.dtype, w.shape), f"{what}: {k}"
        assert g.tobytes() == w.tobytes(), f"{what}: {k} differs (bits compared: NaN-safe)"


def _concat(batches) -> dict:
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


@pytest.mark.parametrize("seed", range(12))
def test_random_projections_match_the_cpu(cp, logged, seed):
    store, thin = logged
    rng = np.random.default_rng(seed)
    p = random_projection(rng, "padded")
    cpu = _host(engine.Reconstructor(store, p, device="cpu").reconstruct(thin))
    rec = engine.Reconstructor(store, p, device="cuda")
    got = rec.reconstruct(thin)
    assert rec.device == "cuda" and all(isinstance(got[k], cp.ndarray) for k in got)  # not a CPU fallback
    _same(_host(got), cpu, f"{p}: reconstruct")
    batch = int(rng.integers(1, 300))
    _same(_concat([_host(b) for b in rec.iter_batches(thin, batch_size=batch)]),
          _concat([_host(b) for b in engine.Reconstructor(store, p, device="cpu").iter_batches(thin, batch)]),
          f"{p}: iter_batches({batch})")
    churn = engine.Reconstructor(store, p, device="cuda", cache_bytes=0, chunk_batches=1, prefetch=3)
    _same(_concat([_host(b) for b in churn.iter_batches(thin, batch_size=batch)]),
          _concat([_host(b) for b in engine.Reconstructor(store, p, device="cpu").iter_batches(thin, batch)]),
          f"{p}: iter_batches with recycled slots")


@pytest.mark.parametrize("seed", range(6))
def test_random_jagged_projections_match_the_cpu_and_pad_on_the_device(cp, logged, seed):
    store, thin = logged
    rng = np.random.default_rng(100 + seed)
    p = random_projection(rng, "jagged")
    cpu = engine.Reconstructor(store, p, device="cpu")
    rec = engine.Reconstructor(store, p, device="cuda")
    jagged = rec.reconstruct(thin)
    _same(_host(jagged), _host(cpu.reconstruct(thin)), f"{p}: jagged reconstruct")
    padded = engine.Projection(p.columns, max_len=p.max_len, actions=p.actions, window_us=p.window_us,
                               align=p.align, pad_value=p.pad_value)
    want = _host(engine.Reconstructor(store, padded, device="cpu").reconstruct(thin))
    _same(_host(engine.Reconstructor(store, padded, device="cuda").pad(jagged)), want,
          f"{p}: pad of the jagged batch on the device")


def test_to_torch_shares_device_memory(cp, logged):
    pytest.importorskip("torch")
    store, thin = logged
    p = engine.Projection(["item_id", "score"], max_len=64)
    got = engine.Reconstructor(store, p, device="cuda").reconstruct(thin)
    t = got.to_torch()
    assert all(t[k].is_cuda and t[k].data_ptr() == got[k].data.ptr for k in got)
