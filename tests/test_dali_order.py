"""Training order and resume through DALI (SPEC §2): ``uih_pipeline``'s order keywords give ``iter_batches``'
batches bit for bit, ``UIHIterator.state_dict()`` counts the batches handed out (not DALI's prefetching), and
a pipeline resumed from it yields exactly the rest."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_dali_assemble import check_equal
from test_order import BAD_ORDER

import engine
from dali_plugin import UIHIterator, uih_pipeline

DAY = 86_400_000_000
PADDED = engine.Projection(["item_id", "action", "ts"], max_len=24)
JAGGED = engine.Projection(["item_id", "ts"], max_len=24, layout="jagged")
KW = dict(order="shuffle", seed=5, epoch=2, shuffle_window=700)
BATCH = 100
#: the ways a batch crosses DALI: the DALI operator writes it (several batches per iteration), the engine
#: writes it (one or three per iteration), DALI pads unpadded rows, worker processes, a jagged projection
MODES = {
    "operator": (PADDED, dict(assembly="dali_operator")),
    "engine": (PADDED, dict(assembly="engine", padding="assembled", batches_per_iteration=1)),
    "engine-grouped": (PADDED, dict(assembly="engine", padding="assembled", batches_per_iteration=3)),
    "dali-pads": (PADDED, dict(padding="dali_slice")),
    "workers": (PADDED, dict(workers=2)),
    "jagged": (JAGGED, {}),
}


@pytest.fixture
def store(logged):
    with engine.UIHStore.open(logged / "store", read_only=True) as s:
        yield s


def want(store, proj, src, **kw):
    rec = engine.Reconstructor(store, proj, device="cpu")
    return [{k: np.asarray(v).copy() for k, v in b.items()}
            for b in rec.iter_batches(src, BATCH, extra_columns=["example_id"], **kw)]


def pipeline(store, proj, src, options, **kw):
    rec = engine.Reconstructor(store, proj, device="cpu")
    return uih_pipeline(rec, src, BATCH, device_id=None, extra_columns=["example_id"], **options, **kw)


def take(it, n=None) -> list:
    out = []
    for b in it:
        out.append({k: v.numpy().copy() for k, v in b.items()})
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("mode", MODES)
def test_shuffle_through_dali_is_iter_batches_and_set_epoch_reads_the_next(store, logged, mode):
    proj, options = MODES[mode]
    src = logged / "thin.parquet"
    pipe = pipeline(store, proj, src, options, **KW)
    if mode == "operator":
        assert pipe.options.assembly == "dali_operator" and pipe.options.batches_per_iteration > 1
    it = UIHIterator(pipe)
    try:
        first = take(it)
        check_equal(first, want(store, proj, src, **KW))
        ids = np.concatenate([b["example_id"] for b in first])
        assert not np.array_equal(ids, np.arange(len(ids)))
        again = take(it)  # another DALI epoch without set_epoch: the same order (as DistributedSampler)
        check_equal(again, first)
        it.set_epoch(3)
        nxt = take(it)
        check_equal(nxt, want(store, proj, src, **{**KW, "epoch": 3}))
        ids = [np.concatenate([b["example_id"] for b in e]) for e in (first, nxt)]
        assert not np.array_equal(ids[0], ids[1]) and np.array_equal(np.sort(ids[0]), np.sort(ids[1]))
    finally:
        it.close()


@pytest.mark.parametrize("mode", MODES)
def test_resume_mid_epoch_yields_exactly_the_rest(logged, mode):
    """7 batches handed out (DALI prefetched more), the state through JSON, a reopened store, a new
    Reconstructor and pipeline: exactly the batches left, bit for bit, then the next epoch in full."""
    proj, options = MODES[mode]
    src = logged / "thin.parquet"
    with engine.UIHStore.open(logged / "store", read_only=True) as store:
        full = want(store, proj, src, **KW)
        it = UIHIterator(pipeline(store, proj, src, options, **KW))
        head = take(it, 7)
        state = json.loads(json.dumps(it.state_dict()))
        it.close()
    assert state["next_batch"] == 7
    check_equal(head, full[:7])
    with engine.UIHStore.open(logged / "store", read_only=True) as store:
        it = UIHIterator(pipeline(store, proj, src, options, resume=state, **KW))
        try:
            check_equal(take(it), full[7:])
            assert it.state_dict()["next_batch"] == len(full)  # the epoch is done
            it.set_epoch(KW["epoch"] + 1)
            assert it.state_dict()["next_batch"] == 0
            check_equal(take(it), want(store, proj, src, **{**KW, "epoch": KW["epoch"] + 1}))
        finally:
            it.close()
        # the state is iter_batches': it resumes the engine's iterator too
        rec = engine.Reconstructor(store, proj, device="cpu")
        rest = [{k: np.asarray(v) for k, v in b.items()}
                for b in rec.iter_batches(src, BATCH, extra_columns=["example_id"], resume=state, **KW)]
        check_equal(rest, full[7:])


@pytest.mark.parametrize("mode", ["operator", "engine-grouped"])
def test_load_state_dict_mid_epoch_and_resume_inside_a_group(store, logged, mode):
    """``load_state_dict`` abandons the running epoch; a resume point inside a DALI iteration's group of
    batches starts at the exact batch; an iter_batches state resumes the pipeline."""
    proj, options = MODES[mode]
    src = logged / "thin.parquet"
    full = want(store, proj, src, **KW)
    rec = engine.Reconstructor(store, proj, device="cpu")
    ref = rec.iter_batches(src, BATCH, extra_columns=["example_id"], **KW)
    for _ in range(11):
        next(ref)
    state = ref.state_dict()
    ref.close()
    it = UIHIterator(pipeline(store, proj, src, options, **KW))
    try:
        assert it.state_dict()["next_batch"] == 0
        take(it, 3)
        it.load_state_dict(state)
        assert it.state_dict() == state
        check_equal(take(it, 4), full[11:15])
        assert it.state_dict()["next_batch"] == 15
        it.load_state_dict(json.loads(json.dumps(it.state_dict())))
        check_equal(take(it), full[15:])
    finally:
        it.close()


_SAVE = textwrap.dedent("""
    import json, sys
    import engine
    from dali_plugin import UIHIterator, uih_pipeline
    store = engine.UIHStore.open(sys.argv[1], read_only=True)
    rec = engine.Reconstructor(store, engine.Projection(["item_id", "action", "ts"], max_len=24), device="cpu")
    it = UIHIterator(uih_pipeline(rec, sys.argv[2], 100, device_id=None, extra_columns=["example_id"],
                                  order="shuffle", seed=5, epoch=2, shuffle_window=700))
    ids = [next(it)["example_id"].tolist() for _ in range(9)]
    print(json.dumps({"ids": ids, "state": it.state_dict()}), flush=True)
    it.close()
""")


def test_state_saved_in_another_process_resumes_bit_exact(store, logged):
    src = logged / "thin.parquet"
    out = subprocess.run([sys.executable, "-c", _SAVE, str(logged / "store"), str(src)], capture_output=True,
                         text=True, timeout=600, check=True)
    saved = json.loads(out.stdout.strip().splitlines()[-1])
    full = want(store, PADDED, src, **KW)
    assert saved["ids"] == [b["example_id"].tolist() for b in full[:9]]
    it = UIHIterator(pipeline(store, PADDED, src, {}, resume=saved["state"], **KW))
    try:
        check_equal(take(it), full[9:])
    finally:
        it.close()


@pytest.mark.parametrize("kwargs, match", [
    *BAD_ORDER,
    (dict(resume={"format": "x", "epoch": 0}), "state_dict"),
    (dict(resume=[1]), "state_dict"),
    (dict(order="shuffle", seed=6, resume="saved"), "seed 5 there, 6 here"),
    (dict(workers=1, resume="saved-stream"), "workers=0"),
])
def test_bad_order_keywords_are_invalid_argument(store, logged, kwargs, match):
    src = logged / "thin.parquet"
    rec = engine.Reconstructor(store, PADDED, device="cpu")
    if kwargs.get("resume") in ("saved", "saved-stream"):
        shuffled = kwargs["resume"] == "saved"
        ref = rec.iter_batches(src, BATCH, **(dict(order="shuffle", seed=5, epoch=0) if shuffled else {}))
        next(ref)
        kwargs = {**kwargs, "resume": ref.state_dict()}
        ref.close()
    with pytest.raises(engine.InvalidArgument, match=match):
        uih_pipeline(rec, src, BATCH, device_id=None, **kwargs)


def test_stream_order_with_workers_has_no_state_and_set_epoch_checks(store, logged):
    src = logged / "thin.parquet"
    rec = engine.Reconstructor(store, PADDED, device="cpu")
    it = UIHIterator(uih_pipeline(rec, src, BATCH, device_id=None, workers=1))
    try:
        with pytest.raises(engine.InvalidArgument, match="order='shuffle'"):
            it.state_dict()
    finally:
        it.close()
    it = UIHIterator(uih_pipeline(rec, src, BATCH, device_id=None, order="shuffle"))
    try:
        with pytest.raises(engine.InvalidArgument, match="epoch"):
            it.set_epoch(-1)
        with pytest.raises(engine.InvalidArgument, match="seed 9 there"):
            it.load_state_dict({**it.state_dict(), "seed": 9})
    finally:
        it.close()
