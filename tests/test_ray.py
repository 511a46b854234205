"""The Ray adapter on a local 2-CPU Ray: the same examples as iter_batches, each exactly once per epoch,
user affinity, trainer-local shards, a killed actor, typed errors."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import engine
from uih.workload import COLUMNS
from uih.workload import random_events as make_events

ray = pytest.importorskip("ray")
from ray_plugin import engine_error, local_shard, uih_dataset  # noqa: E402
from ray_plugin._actor import Reconstruct  # noqa: E402
from ray_plugin._shards import ShardPlan, StoreRef  # noqa: E402

N = 240
PROJECTIONS = {
    "right-pad": engine.Projection(["item_id", "action", "ts"], max_len=40, align="right", pad_value=-1),
    "types": engine.Projection(["item_id", "dwell_ms"], max_len=12, actions=[1, 3]),
    "window": engine.Projection(["ts", "surface"], max_len=64, window_us=700_000),
    "jagged": engine.Projection(["item_id", "action", "ts"], max_len=40, actions=[1, 3], layout="jagged"),
}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
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


def test_affinity_reads_each_user_once_and_contiguous_blocks_do_not(setup):
    store, thin, folder = setup
    proj = PROJECTIONS["right-pad"]
    columns = (*engine.Reconstructor(store, proj, device="cpu").thin_columns, "example_id")
    totals = {}
    for by_user in (True, False):
        actor = Reconstruct(StoreRef.of(store), ShardPlan(str(folder), columns, 4, by_user), proj, 32,
                            extra=["example_id"])
        ids = [e for b in actor(pa.table({"shard": range(4)})) for e in b["example_id"].to_pylist()]
        assert sorted(ids) == sorted(thin["example_id"].to_pylist())
        totals[by_user] = actor.rec.stats
    assert totals[True]["users_read"] == len(np.unique(thin["user_id"]))
    assert totals[False]["users_read"] > totals[True]["users_read"]
    assert totals[False]["events_read"] > totals[True]["events_read"]


def test_jagged_columns_are_the_batches_values_and_offsets(setup):
    """The actor's list columns hold the engine's jagged batch as is: its values end to end, its offsets."""
    store, thin, _ = setup
    proj = PROJECTIONS["jagged"]
    columns = (*engine.Reconstructor(store, proj, device="cpu").thin_columns, "example_id")
    actor = Reconstruct(StoreRef.of(store), ShardPlan(thin, columns, 1), proj, 32, extra=["example_id"])
    rec = engine.Reconstructor(store, proj, device="cpu")
    want = [b.to_numpy() for b in rec.iter_batches(thin.select(columns), 32, extra_columns=["example_id"])]
    got = list(actor(pa.table({"shard": [0]})))
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


def test_shuffled_shards_are_shares_of_the_epochs_global_batches(setup):
    store, thin, folder = setup
    proj = PROJECTIONS["right-pad"]
    extra = ["example_id", "label"]
    for epoch in (0, 1):
        glob = _global_ids(store, folder, proj, epoch)
        plan = ShardPlan(str(folder), (*engine.Reconstructor(store, proj).thin_columns, *extra), 3,
                         order=dict(batch_size=16, order="shuffle", seed=3, epoch=epoch, shuffle_window=100))
        actor = Reconstruct(StoreRef.of(store), plan, proj, 16, extra=extra)
        for i in range(3):
            got = [b["example_id"].tolist() for b in actor.examples(plan.read(i, actor.rec))]
            assert got == glob[i::3]
    assert _global_ids(store, folder, proj, 0) != _global_ids(store, folder, proj, 1)


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
