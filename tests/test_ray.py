"""The Ray adapter on a local 2-CPU Ray: the same examples as iter_batches, each exactly once per epoch,
user affinity, the epoch's global batches and resume, streaming_split consumers, workers kept warm across
epochs, trainer-local shards, a killed worker, typed errors."""

import concurrent.futures
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import engine
from uih.workload import COLUMNS
from uih.workload import random_events as make_events

ray = pytest.importorskip("ray")
from ray_plugin import engine_error, local_shard, resume_state, uih_dataset  # noqa: E402
from ray_plugin._actor import Reconstruct  # noqa: E402
from ray_plugin._epoch import EpochPlan  # noqa: E402
from ray_plugin._shards import StoreRef  # noqa: E402
from ray_plugin._tasks import reconstruct_parts  # noqa: E402

N = 240
PROJECTIONS = {
    "right-pad": engine.Projection(["item_id", "action", "ts"], max_len=40, align="right", pad_value=-1),
    "types": engine.Projection(["item_id", "dwell_ms"], max_len=12, actions=[1, 3]),
    "window": engine.Projection(["ts", "surface"], max_len=64, window_us=700_000),
    "jagged": engine.Projection(["item_id", "action", "ts"], max_len=40, actions=[1, 3], layout="jagged"),
}


@pytest.fixture(scope="module")
def cluster():
    # address="local": a Ray of its own, even while another process's cluster runs on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A store with sealed events and a mutable tail, thin rows with ids, labels and dense features, in
    two Parquet files (users interleaved across them, as a day-by-day log writes them)."""
    d = tmp_path_factory.mktemp("ray")
    rng = np.random.default_rng(7)
    store = engine.UIHStore.create(d / "s", columns=COLUMNS)
    store.append(make_events(rng, range(30), 3000))
    store.seal(600_000)
    store.append(make_events(rng, range(30), 300, t0=2_000_000))
    thin = store.snapshot({"user_id": rng.integers(0, 34, N), "request_ts": rng.integers(1_000_000, 3_500_000, N),
                           "example_id": np.arange(N, dtype=np.int64) * 7 + 3,
                           "label": rng.random(N).astype(np.float32),
                           "dense": pa.array(list(rng.random((N, 4)).astype(np.float32)), pa.list_(pa.float32()))})
    (d / "thin").mkdir()
    pq.write_table(thin.slice(0, N // 2), d / "thin" / "day0.parquet")
    pq.write_table(thin.slice(N // 2), d / "thin" / "day1.parquet")
    yield store, thin, d / "thin"
    store.close()


def by_id(batches, names):
    """example_id -> tuple of that example's arrays; fails on a duplicate id."""
    out = {}
    for b in batches:
        for i, e in enumerate(b["example_id"]):
            assert int(e) not in out, f"example {e} delivered twice"
            out[int(e)] = tuple(np.asarray(b[n][i]) for n in names)
    return out


def reference(store, thin, proj):
    rec = engine.Reconstructor(store, proj, device="cpu")
    names = [*proj.columns, "lengths", "example_id", "label"]
    batches = (b.to_numpy() for b in rec.iter_batches(thin, 17, extra_columns=["example_id", "label"]))
    if proj.layout == "jagged":
        batches = (per_row(b, proj.columns) for b in batches)
    return names, by_id(batches, names)


def per_row(jagged, columns):
    """A jagged batch with each projected column split into its rows by ``offsets`` (as a list column reads)."""
    cuts = jagged["offsets"][1:-1]
    return {k: np.split(v, cuts) if k in columns else v for k, v in jagged.items() if k != "offsets"}


def assert_same(got, want):
    assert got.keys() == want.keys()
    for k, w in want.items():
        for g, x in zip(got[k], w):
            assert g.dtype == x.dtype and g.shape == x.shape
            assert g.tobytes() == x.tobytes()  # bit for bit


@pytest.mark.parametrize("tenant,source,actors", [("right-pad", "parquet", 2), ("types", "table", 1),
                                                  ("window", "parquet", 1), ("jagged", "parquet", 2)])
def test_examples_equal_iter_batches_as_a_set(cluster, setup, tenant, source, actors):
    store, thin, folder = setup
    proj = PROJECTIONS[tenant]
    names, want = reference(store, thin, proj)
    ds = uih_dataset(store, folder if source == "parquet" else thin, proj, batch_size=16, num_actors=actors,
                     num_shards=5)
    batches = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    assert set(batches[0]) == {*proj.columns, "lengths", "example_id", "label", "dense"}
    first = batches[0]["item_id" if "item_id" in proj.columns else "ts"]
    if proj.layout == "jagged":  # one array of the example's events per row, no padding
        assert first.dtype == object and any(len(r) != proj.max_len for r in first)
    else:
        assert first.shape[1] == proj.max_len
    assert_same(by_id(batches, names), want)
    dense = by_id(batches, ["dense"])
    for i, e in enumerate(thin["example_id"].to_pylist()):
        assert np.array_equal(dense[e][0], np.asarray(thin["dense"][i].as_py(), np.float32))


def test_examples_from_a_store_on_s3_equal_iter_batches(cluster, setup, s3):
    """The store published to an S3 server (moto): actors reopen it remotely, pinned; same examples."""
    store, thin, folder = setup
    engine.publish(store.root, "s3://uih/ray", filesystem=s3[1])
    proj = PROJECTIONS["types"]
    names, want = reference(store, thin, proj)
    with engine.UIHStore.open("s3://uih/ray", read_only=True, filesystem=s3[1]) as remote:
        ds = uih_dataset(remote, folder, proj, batch_size=16, num_actors=1, num_shards=3)
        assert_same(by_id(ds.iter_batches(batch_size=None, batch_format="numpy"), names), want)


def test_every_row_once_per_epoch_and_users_read_once(cluster, setup):
    store, thin, folder = setup
    proj = PROJECTIONS["right-pad"]
    ds = uih_dataset(str(store.root), folder, proj, batch_size=32, num_actors=2, num_shards=4,
                     extra_columns=["example_id"], stats_column="events_read")
    names, want = reference(store, thin, proj)
    read = []
    for _ in range(2):
        batches = list(ds.iter_batches(batch_size=50, batch_format="numpy"))
        assert_same(by_id(batches, names[:-1]), {k: v[:-1] for k, v in want.items()})
        read.append(sum(int(b["events_read"].sum()) for b in batches))
    # user affinity: each user's events are read once per epoch, as one in-process chunk of all rows does
    whole = engine.Reconstructor(store, proj, device="cpu")
    whole.reconstruct(thin)
    assert read == [whole.stats["events_read"]] * 2


def in_process_parts(store, source, proj, batch_size, by_user, extra=("example_id",)):
    """``uih_dataset``'s tasks run here on every part, a cold start: their blocks and the Reconstruct's stats."""
    from ray_plugin._tasks import reconstructor

    columns = (*engine.Reconstructor(store, proj, device="cpu").thin_columns, *extra)
    plan = EpochPlan.make(source, columns, batch_size, engine.Order(), 4, by_user)
    kw = dict(ref=StoreRef.of(store), projection=proj, actor_cls=Reconstruct, extra=list(extra), device="cpu",
              stats_column=None, batch_column=None)
    actor = reconstructor(batch_size=batch_size, **kw)
    actor.rec.clear_cache()
    before = dict(actor.rec.stats)
    blocks = list(reconstruct_parts(pa.table({"part": range(4)}), plan=plan, block_rows=batch_size, num_threads=1,
                                    **kw))
    return blocks, {k: actor.rec.stats[k] - before[k] for k in before}


def test_affinity_reads_each_user_once_and_global_batches_do_not(setup):
    store, thin, folder = setup
    proj = PROJECTIONS["right-pad"]
    totals = {}
    for by_user in (True, False):
        blocks, totals[by_user] = in_process_parts(store, str(folder), proj, 32, by_user)
        ids = [e for b in blocks for e in b["example_id"].to_pylist()]
        assert sorted(ids) == sorted(thin["example_id"].to_pylist())
    assert totals[True]["users_read"] == len(np.unique(thin["user_id"]))
    assert totals[False]["users_read"] > totals[True]["users_read"]
    assert totals[False]["events_read"] > totals[True]["events_read"]


def test_jagged_columns_are_the_batches_values_and_offsets(setup):
    """The list columns hold the engine's jagged batch as is: its values end to end, its offsets."""
    store, thin, _ = setup
    proj = PROJECTIONS["jagged"]
    columns = (*engine.Reconstructor(store, proj, device="cpu").thin_columns, "example_id")
    actor = Reconstruct(StoreRef.of(store), proj, 32, extra=["example_id"])
    rec = engine.Reconstructor(store, proj, device="cpu")
    want = [b.to_numpy() for b in rec.iter_batches(thin.select(columns), 32, extra_columns=["example_id"])]
    got = list(actor.tables(thin.select(columns)))
    assert len(got) == len(want) == -(-N // 32)
    for g, w in zip(got, want):
        assert g.column_names == [*proj.columns, "lengths", "example_id"]
        for c in proj.columns:
            col = g[c].combine_chunks()
            assert col.type == pa.large_list(pa.from_numpy_dtype(w[c].dtype))
            assert np.array_equal(col.offsets.to_numpy(), w["offsets"])
            assert col.values.to_numpy().tobytes() == w[c].tobytes()
        assert np.array_equal(g["lengths"].to_numpy(), w["lengths"])
        assert np.array_equal(g["example_id"].to_numpy(), w["example_id"])


def test_killed_actor_is_restarted_without_losing_or_duplicating(cluster, setup, tmp_path):
    store, thin, folder = setup
    proj = PROJECTIONS["types"]
    marker = str(tmp_path / "killed")
    victim = int(thin["example_id"][N // 3].as_py())

    class DiesOnce(Reconstruct):
        """Exits the process after handing out the first batch of the shard holding ``victim``."""

        def examples(self, block):
            for i, out in enumerate(super().examples(block)):
                yield out
                if victim in block["example_id"].to_pylist() and i == 0:
                    try:
                        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                    except FileExistsError:
                        continue
                    os._exit(1)

    # no retry settings passed: Ray Data restarts a dead actor and retries its call by default (and its
    # ``max_restarts``-style pass-through arguments are deprecated, to be removed in Ray 2.64)
    ds = uih_dataset(store, folder, proj, batch_size=8, num_actors=2, num_shards=3, actor_cls=DiesOnce)
    names, want = reference(store, thin, proj)
    assert_same(by_id(ds.iter_batches(batch_size=None, batch_format="numpy"), names), want)
    assert os.path.exists(marker)  # an actor did die mid-shard


def test_bad_thin_row_is_the_engine_error(cluster, setup):
    store, thin, _ = setup
    proj = PROJECTIONS["right-pad"]
    bad = thin.set_column(thin.schema.get_field_index("imm_hw"), "imm_hw", pa.array(np.full(N, 10**6)))
    with pytest.raises(engine.VersionError) as info:  # Ray's RayTaskError(VersionError) subclasses it
        list(uih_dataset(store, bad, proj, batch_size=32, num_actors=1).iter_batches())
    err = engine_error(info.value)
    assert type(err) is engine.VersionError and "imm_hw" in str(err)


def test_schema_errors_on_the_driver(cluster, setup):
    store, thin, _ = setup
    with pytest.raises(engine.SchemaError, match="unknown|column"):
        uih_dataset(store, thin, engine.Projection(["nope"], max_len=4))
    with pytest.raises(engine.SchemaError, match="lack"):
        uih_dataset(store, thin.drop(["tail_seq"]), PROJECTIONS["right-pad"])
    with pytest.raises(engine.SchemaError, match="clash"):
        uih_dataset(store, thin, PROJECTIONS["right-pad"], extra_columns=["lengths"])


def test_local_shards_are_disjoint_users_and_reconstruct_exactly(setup):
    store, thin, folder = setup
    proj = PROJECTIONS["window"]
    names, want = reference(store, thin, proj)
    got, users = {}, []
    for rank in range(3):
        rec, mine = local_shard(store.root, folder, proj, rank=rank, world_size=3, version=store.version,
                                device="cpu")
        users.append(set(mine["user_id"].to_pylist()))
        part = by_id((b.to_numpy() for b in rec.iter_batches(mine, 16, extra_columns=["example_id", "label"])),
                     names)
        assert not got.keys() & part.keys()
        got.update(part)
    assert not (users[0] & users[1] or users[0] & users[2] or users[1] & users[2])
    assert_same(got, want)


def _global_ids(store, thin, proj, epoch):
    rec = engine.Reconstructor(store, proj, device="cpu")
    return [b["example_id"].tolist() for b in rec.iter_batches(thin, 16, order="shuffle", seed=3, epoch=epoch,
                                                                 shuffle_window=100, extra_columns=["example_id"])]


def test_shuffled_dataset_is_each_example_once_in_the_epochs_shares(cluster, setup):
    store, thin, folder = setup
    proj = PROJECTIONS["right-pad"]
    names, want = reference(store, thin, proj)
    kw = dict(batch_size=16, num_actors=2, num_shards=3, order="shuffle", seed=3, shuffle_window=100)
    batches = list(uih_dataset(store, folder, proj, **kw).iter_batches(batch_size=None, batch_format="numpy"))
    assert_same(by_id(batches, names), want)


def test_shuffled_local_shards_are_the_ranks_global_batches(setup):
    store, thin, folder = setup
    proj = PROJECTIONS["window"]
    names, want = reference(store, thin, proj)
    glob = _global_ids(store, folder, proj, 2)
    got = {}
    for rank in range(2):
        rec, mine = local_shard(store.root, folder, proj, rank=rank, world_size=2, version=store.version,
                                device="cpu", order="shuffle", seed=3, epoch=2, shuffle_window=100, batch_size=16)
        batches = [b.to_numpy() for b in rec.iter_batches(mine, 16, extra_columns=["example_id", "label"])]
        assert [b["example_id"].tolist() for b in batches] == glob[rank::2]
        got.update(by_id(batches, names))
    assert_same(got, want)
    with pytest.raises(engine.InvalidArgument, match="batch_size"):
        local_shard(store.root, folder, proj, rank=0, world_size=2, order="shuffle")


def _ids(batches):
    return [b["example_id"].tolist() for b in batches]


def _rows(ds, batch_size=16):
    return _ids(ds.iter_batches(batch_size=batch_size, batch_format="numpy"))


SHUFFLE = dict(order="shuffle", seed=3, epoch=1, shuffle_window=100)


def test_global_order_yields_iter_batches_batches_in_order(cluster, setup):
    """order="shuffle" (and "stream" without affinity): exactly iter_batches' batches, in its order,
    whatever the number of workers and parts."""
    store, thin, folder = setup
    proj = PROJECTIONS["right-pad"]
    rec = engine.Reconstructor(store, proj, device="cpu")
    for kw, actors, shards in ((SHUFFLE, 2, 5), (dict(order="stream"), 1, 3)):
        want = _ids(rec.iter_batches(folder, 16, extra_columns=["example_id"], **kw))
        ds = uih_dataset(store, folder, proj, batch_size=16, num_actors=actors, num_shards=shards, block_batches=2,
                         affinity=False, extra_columns=["example_id"], **kw)
        assert _rows(ds) == want


def test_user_hash_parts_are_the_same_batches_for_the_same_keywords(cluster, setup):
    store, thin, folder = setup
    proj = PROJECTIONS["right-pad"]
    got = [_ids(uih_dataset(store, folder, proj, batch_size=16, num_actors=a, num_shards=4,
                            extra_columns=["example_id"]).iter_batches(batch_size=None)) for a in (1, 2)]
    assert got[0] == got[1]
    assert sorted(sum(got[0], [])) == sorted(thin["example_id"].to_pylist())


def test_blocks_are_whole_batches_as_made(cluster, setup):
    """Each task's block leaves as made (block_batches batches): Ray neither merges nor cuts them."""
    store, thin, folder = setup
    proj = PROJECTIONS["right-pad"]
    ds = uih_dataset(store, folder, proj, batch_size=16, num_actors=2, num_shards=3, block_batches=2,
                     order="shuffle", extra_columns=["example_id"])
    sizes = [len(b["lengths"]) for b in ds.iter_batches(batch_size=None, batch_format="numpy")]
    total = -(-N // 16)
    want = []
    for i in range(3):
        n = total * (i + 1) // 3 - total * i // 3
        want += [32] * (n // 2) + [16] * (n % 2)
    want[-1] -= total * 16 - N  # the epoch's last batch is short
    assert sizes == want


def test_streaming_split_consumers_take_each_example_once(cluster, setup):
    """Two consumers (as two training workers would) of one dataset: every example exactly once, and the
    batch column names each row's global batch."""
    store, thin, folder = setup
    proj = PROJECTIONS["window"]
    names, want = reference(store, thin, proj)
    ds = uih_dataset(store, folder, proj, batch_size=16, num_actors=2, num_shards=4, block_batches=1,
                     batch_column="batch", **SHUFFLE)

    # consumers run at once (streaming_split hands blocks to whichever asks): threads here, training
    # workers in a Ray Train job
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        parts = list(pool.map(lambda it: list(it.iter_batches(batch_size=16, batch_format="numpy")),
                              ds.streaming_split(2)))
    assert all(parts)  # both consumers took batches
    batches = [b for p in parts for b in p]
    assert_same(by_id(batches, names), want)
    glob = _global_ids(store, folder, proj, 1)
    for b in batches:
        assert len(set(b["batch"].tolist())) == 1
        assert b["example_id"].tolist() == glob[int(b["batch"][0])]


def test_resume_yields_exactly_the_batches_left(cluster, setup):
    """A state after 5 consumed batches resumes a dataset with the rest, in order; the state is the one
    iter_batches writes, so each side resumes the other's."""
    store, thin, folder = setup
    proj = PROJECTIONS["right-pad"]
    glob = _global_ids(store, folder, proj, 1)
    kw = dict(batch_size=16, num_actors=2, num_shards=3, block_batches=2, extra_columns=["example_id"],
              **SHUFFLE)
    ds = uih_dataset(store, folder, proj, **kw)
    it = iter(ds.iter_batches(batch_size=16, batch_format="numpy"))
    assert [next(it)["example_id"].tolist() for _ in range(5)] == glob[:5]
    state = resume_state(ds, 5)
    rec = engine.Reconstructor(store, proj, device="cpu")
    mine = rec.iter_batches(folder, 16, extra_columns=["example_id"], **SHUFFLE)
    for _ in range(5):
        next(mine)
    assert state == mine.state_dict()
    assert _rows(uih_dataset(store, folder, proj, resume=state, **kw)) == glob[5:]
    assert _ids(rec.iter_batches(folder, 16, extra_columns=["example_id"], resume=state, **SHUFFLE)) == glob[5:]
    # a resumed dataset's own state after 2 more batches: the first 7 consumed
    again = uih_dataset(store, folder, proj, resume=state, **kw)
    assert resume_state(again, 2)["next_batch"] == 7
    assert _rows(uih_dataset(store, folder, proj, resume=resume_state(ds, len(glob)), **kw)) == []  # all consumed


def test_resume_after_out_of_order_consumers(cluster, setup):
    """Consumers that took batches 0, 2 and 5 (streaming_split): the resumed dataset yields every other
    batch, in order, each once."""
    store, thin, folder = setup
    proj = PROJECTIONS["right-pad"]
    glob = _global_ids(store, folder, proj, 1)
    kw = dict(batch_size=16, num_actors=2, num_shards=3, extra_columns=["example_id"], **SHUFFLE)
    state = resume_state(uih_dataset(store, folder, proj, batch_column="batch", **kw), np.array([0, 2, 5]))
    assert state["next_batch"] == 1 and state["done_after"] == [2, 5]
    rest = uih_dataset(store, folder, proj, resume=state, **kw)
    assert _rows(rest) == [b for g, b in enumerate(glob) if g not in (0, 2, 5)]
    assert resume_state(rest, 1)["next_batch"] == 3  # batch 1 taken: 0, 1, 2 are the consumed prefix


def test_scattered_thin_rows_give_the_same_batches(cluster, setup):
    """Thin rows cut ahead by scatter tasks (the default for Parquet sources) or read by each part: the same
    batches in the same order, user-hash parts and global order alike, a resume with out-of-order
    consumers included."""
    store, thin, folder = setup
    proj = PROJECTIONS["right-pad"]
    state = {"format": "uih-order/1", "batch_size": 16, "num_rows": len(thin), "next_batch": 1,
             "done_after": [3, 4], "share": {"index": 0, "count": 1, "start": 0, "done": 1},
             **{k: v for k, v in SHUFFLE.items()}}
    for kw in (dict(order="stream"), dict(order="stream", affinity=False), SHUFFLE, dict(**SHUFFLE, resume=state)):
        got = [_rows(uih_dataset(store, folder, proj, batch_size=16, num_actors=2, num_shards=3, block_batches=2,
                                 extra_columns=["example_id"], scatter=scatter, **kw)) for scatter in (False, True)]
        assert got[0] == got[1] and got[0]


def test_resume_errors_name_the_fix(cluster, setup):
    store, thin, folder = setup
    proj = PROJECTIONS["right-pad"]
    state = resume_state(uih_dataset(store, folder, proj, batch_size=16, **SHUFFLE), 2)
    with pytest.raises(engine.InvalidArgument, match="seed"):
        uih_dataset(store, folder, proj, batch_size=16, resume=state, **{**SHUFFLE, "seed": 4})
    with pytest.raises(engine.InvalidArgument, match="affinity=False"):
        resume_state(uih_dataset(store, folder, proj, batch_size=16), 1)
    with pytest.raises(engine.InvalidArgument, match="affinity=False"):
        uih_dataset(store, folder, proj, batch_size=16, batch_column="batch")
    with pytest.raises(engine.InvalidArgument, match="not among"):
        resume_state(uih_dataset(store, folder, proj, batch_size=16, resume=state, **SHUFFLE), [0])


def test_workers_stay_warm_across_epochs(cluster, setup, tmp_path):
    """Three epochs (two datasets): each worker process opens the store and builds its Reconstruct once;
    an actor pool builds one per epoch."""
    store, thin, folder = setup
    proj = PROJECTIONS["types"]
    log = str(tmp_path / "made")

    class Counted(Reconstruct):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            with open(log, "a") as f:
                f.write(f"{os.getpid()}\n")

    rows = 0
    for epoch in (0, 1):
        ds = uih_dataset(store, folder, proj, batch_size=16, num_actors=1, num_shards=3, actor_cls=Counted,
                         order="shuffle", epoch=epoch)
        for _ in range(1 + (epoch == 0)):
            rows += sum(len(b["lengths"]) for b in ds.iter_batches(batch_size=None))
    made = open(log).read().split()
    assert rows == 3 * N
    assert len(made) == len(set(made)) <= 2  # once per worker process of the 2-CPU Ray, not once per epoch


@pytest.mark.slow
def test_ray_train_example_runs_both_modes(tmp_path):
    """bench/ray_train_hstu.py end to end: TorchTrainer, 2 workers, from uih_dataset and trainer-local."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for mode in ("dataset", "local"):
        subprocess.run([sys.executable, str(root / "bench" / "ray_train_hstu.py"), "--mode", mode, "--num-cpus", "2",
                        "--users", "60", "--history", "120", "--max-len", "32", "--epochs", "1", "--batch", "16",
                        "--out", str(tmp_path)], check=True, capture_output=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(root)})
        row = json.loads((tmp_path / f"ray_train_hstu_{mode}.json").read_text())["row"]
        assert row["steps_rank0_last_epoch"] >= 1 and 0 < row["heldout_ne"] < 2
