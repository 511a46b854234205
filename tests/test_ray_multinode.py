"""The Ray adapter on a multi-node cluster (``ray.cluster_utils.Cluster``, one CPU a node) with the store and
the thin rows both on S3 (moto): every example once per epoch, thin rows read once in parts, trainer-local
shards on two nodes, and (slow) a node removed mid-epoch."""

import sys
from collections import Counter

import numpy as np
import pytest

import engine
from uih.workload import COLUMNS
from uih.workload import random_events as make_events

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from ray_plugin import local_shard, uih_dataset  # noqa: E402
from ray_plugin._actor import Reconstruct  # noqa: E402
from ray_plugin._shards import ShardPlan, read_shard  # noqa: E402

# Ray's workers cannot import this test module: its classes and functions travel to them by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

N = 400
PROJ = engine.Projection(["item_id", "action", "ts"], max_len=32, align="right", pad_value=-1)
WIDE = engine.Projection(["item_id", "action", "ts"], max_len=512)


@pytest.fixture(scope="module")
def data(tmp_path_factory, counted_s3):
    """A store published to S3, and ``N`` thin rows on S3 in two objects of row groups of 50."""
    d = tmp_path_factory.mktemp("multinode")
    rng = np.random.default_rng(5)
    store = engine.UIHStore.create(d / "s", columns=COLUMNS)
    store.append(make_events(rng, range(40), 3000))
    store.seal(600_000)
    store.append(make_events(rng, range(40), 300, t0=2_000_000))
    thin = store.snapshot({"user_id": rng.integers(0, 44, N), "request_ts": rng.integers(1_000_000, 3_500_000, N),
                           "example_id": np.arange(N, dtype=np.int64) * 3 + 1,
                           "label": rng.random(N).astype(np.float32)})
    store.close()
    engine.publish(d / "s", "s3://uih/mn-store", filesystem=counted_s3.fs)
    counted_s3.put_thin(thin, "mn-thin", files=2, row_group_size=50)
    remote = engine.UIHStore.open("s3://uih/mn-store", read_only=True, filesystem=counted_s3.fs)
    yield remote, thin, counted_s3.uri("mn-thin"), counted_s3
    remote.close()


def start_cluster(nodes: int, head_cpus: int = 1, **system_config) -> Cluster:
    """A local cluster of ``nodes`` nodes of one CPU each (the head: ``head_cpus``), the driver connected."""
    head = {"num_cpus": head_cpus, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={**head, "_system_config": system_config} if system_config
                      else head)
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.wait_for_nodes()
    ray.data.DataContext.get_current().enable_progress_bars = False
    return cluster


@pytest.fixture(scope="module")
def two_nodes(data):
    cluster = start_cluster(2)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def reference(store, thin, proj=PROJ):
    """example_id -> its arrays, from one in-process Reconstructor."""
    rec = engine.Reconstructor(store, proj, device="cpu")
    return by_id(b.to_numpy() for b in rec.iter_batches(thin, 32, extra_columns=["example_id"]))


def by_id(batches, column_names=(*PROJ.columns, "lengths")) -> dict:
    """example_id -> tuple of that example's arrays; fails on a duplicate."""
    out = {}
    for b in batches:
        for i, e in enumerate(b["example_id"]):
            assert int(e) not in out, f"example {e} delivered twice"
            out[int(e)] = tuple(np.asarray(b[c][i]).tobytes() for c in column_names)
    return out


class Tagged(Reconstruct):
    """Adds the id of the node that reconstructed each example (a ``node`` column)."""

    def examples(self, block):
        node = ray.get_runtime_context().get_node_id()
        for out in super().examples(block):
            yield {**out, "node": np.array([node] * len(out["lengths"]))}


def test_two_nodes_every_example_once_from_s3(data, two_nodes):
    """Actors on both nodes reopen the store from S3 and read their shards of the thin rows from S3: the
    epoch's examples are the thin rows' example ids, each once, bit-exact with in-process reconstruction."""
    store, thin, uri, _ = data
    ds = uih_dataset(store, uri, PROJ, batch_size=16, num_actors=2, num_shards=4, extra_columns=["example_id"],
                     actor_cls=Tagged)
    batches = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    assert by_id(batches) == reference(store, thin)
    assert len({n for b in batches for n in b["node"]}) == 2  # both nodes reconstructed


@pytest.mark.slow
def test_scattered_plan_reads_the_thin_rows_once_across_nodes(data, two_nodes):
    """A scattered plan's tasks read the thin rows from S3 once in all, however many shards; each node
    gathers a shard equal to the same shard read alone from S3, which fetches the whole source."""
    store, thin, uri, s3 = data
    cols = (*engine.Reconstructor(store, PROJ, device="cpu").thin_columns, "example_id", "label")
    before = s3.fetched("mn-thin")
    alone = read_shard(uri, list(cols), 4, 0)
    one_shard = s3.fetched("mn-thin") - before
    plan = ShardPlan(uri, cols, 4).scatter()
    assert len(plan.pieces) == 2 and plan.source == uri  # by default a part per CPU of the cluster
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]

    @ray.remote(num_cpus=0)
    def read(p, i):
        return p.read(i)

    got = ray.get([read.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[i % 2], soft=False))
                   .remote(plan, i) for i in range(4)])
    all_shards = s3.fetched("mn-thin") - before - one_shard
    assert got[0].equals(alone)
    for i in range(1, 4):
        assert got[i].equals(read_shard(uri, list(cols), 4, i))
    # one pass over the source (plus the parts' footer reads: 64 KiB each, much of these small objects), where
    # reading each shard alone fetches the source once per shard
    print(f"\nthin rows on S3: one shard read alone {one_shard} B, all 4 shards scattered {all_shards} B")
    assert 0 < all_shards < 2 * one_shard


@ray.remote(num_cpus=0)
def _rank(root, version, uri, rank, world, kw):
    rec, rows = local_shard(root, uri, PROJ, rank=rank, world_size=world, version=version, device="cpu",
                            extra_columns=["example_id"], **kw)
    return [b.to_numpy() for b in rec.iter_batches(rows, 16, extra_columns=["example_id"])], \
        ray.get_runtime_context().get_node_id()


@pytest.mark.slow
def test_local_shards_on_two_nodes_cover_every_example_once(data, two_nodes):
    """Two ranks, one a node, each with its own Reconstructor on S3: disjoint, together every example once."""
    store, thin, uri, _ = data
    want = reference(store, thin)
    nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    for kw in ({}, {"order": "shuffle", "seed": 4, "epoch": 1, "batch_size": 16}):
        runs = ray.get([_rank.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[r], soft=False))
                        .remote(store.root, store.version, uri, r, 2, kw) for r in range(2)])
        assert {node for _, node in runs} == set(nodes)
        assert by_id(b for batches, _ in runs for b in batches) == want


@pytest.mark.slow
@pytest.mark.parametrize("scattered", [False, True])
def test_node_removed_mid_epoch_still_gives_every_example_once(data, scattered):
    """Three one-CPU worker nodes (the head has none), two actors: after the first batch, the node of the
    actor that made it is removed; the dead actor's call is redone on the spare node, and the epoch still has
    every example exactly once. ``scattered``: the shards come from a scattered plan, whose pieces on the
    removed node are rebuilt by re-running their tasks."""
    store, thin, uri, _ = data
    want = reference(store, thin, WIDE)
    if ray.is_initialized():
        ray.shutdown()
    cluster = start_cluster(4, head_cpus=0)
    try:
        workers = {n.node_id: n for n in cluster.worker_nodes}
        for order in ("stream", "shuffle"):
            # blocks of 16 x 512 x 3 padded events (~200 KB) live in the object store of the node that made
            # them (Ray inlines objects under 100 KB into their owner): the removed node's blocks are lost too
            ds = uih_dataset(store, uri, WIDE, batch_size=16, num_actors=2, num_shards=6,
                             extra_columns=["example_id"], actor_cls=Tagged, order=order, seed=2,
                             scatter=scattered)
            batches, removed = [], None
            for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
                batches.append(b)
                if removed is None:
                    removed = str(b["node"][0])
                    cluster.remove_node(workers.pop(removed))
            got = Counter(int(e) for b in batches for e in b["example_id"])
            assert got == Counter(want.keys())  # each example exactly once
            assert by_id(batches) == want
            cluster.add_node(num_cpus=1)  # the next order's run has a spare node again
            cluster.wait_for_nodes()
            workers = {n.node_id: n for n in cluster.worker_nodes}
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_scattered_pieces_lost_with_their_node_are_rebuilt(data):
    """Pieces of a scattered plan spread over two worker nodes; one node is removed once they are made: the
    shards read afterwards (on the node left) are still exactly the shards read alone."""
    store, thin, uri, _ = data
    if ray.is_initialized():
        ray.shutdown()
    # every object in the nodes' object stores, as big pieces are (small ones would live in the driver's memory)
    cluster = start_cluster(3, head_cpus=0, max_direct_call_object_size=0)
    try:
        cols = (*engine.Reconstructor(store, PROJ, device="cpu").thin_columns, "example_id")
        order = dict(batch_size=16, order="shuffle", seed=3, epoch=0, shuffle_window=None)
        for kw in ({}, {"order": order}):
            plan = ShardPlan(uri, cols, 4, **kw).scatter(num_parts=4)
            refs = [r for part in plan.pieces for r in part]
            ray.wait(refs, num_returns=len(refs), fetch_local=False)
            held = Counter(n for loc in ray.experimental.get_object_locations(refs).values()
                           for n in loc["node_ids"])
            nodes = sorted(cluster.worker_nodes, key=lambda n: -held[n.node_id])
            victim, spare = nodes[0], nodes[1]
            assert held[victim.node_id] > 0  # pieces are lost with it
            cluster.remove_node(victim)
            read = ray.remote(num_cpus=0)(lambda p, i: p.read(i))
            at = NodeAffinitySchedulingStrategy(spare.node_id, soft=False)
            got = ray.get([read.options(scheduling_strategy=at).remote(plan, i) for i in range(4)])
            rec = engine.Reconstructor(store, PROJ, device="cpu")
            for i in range(4):
                want = (read_shard(uri, list(cols), 4, i) if not kw else
                        rec.epoch_rows(uri, share=(i, 4), extra_columns=["example_id"], **order))
                assert got[i].equals(want)
            cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_three_nodes_shuffled_epochs_each_example_once(data):
    """Three nodes, three actors, shuffled epochs (store and thin rows on S3): each epoch every example once,
    the epochs' orders differ."""
    store, thin, uri, _ = data
    want = reference(store, thin)
    if ray.is_initialized():
        ray.shutdown()
    cluster = start_cluster(3)
    try:
        orders = []
        for epoch in (0, 1):
            ds = uih_dataset(store, uri, PROJ, batch_size=16, num_actors=3, num_shards=6,
                             extra_columns=["example_id"], actor_cls=Tagged, order="shuffle", seed=8, epoch=epoch)
            batches = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
            assert by_id(batches) == want
            # the pool starts on the actors ready first: a late third one may find no shard left
            assert len({n for b in batches for n in b["node"]}) >= 2
            orders.append(sorted(tuple(b["example_id"].tolist()) for b in batches))
        assert orders[0] != orders[1]
    finally:
        ray.shutdown()
        cluster.shutdown()
