"""The Ray adapter's thin-row shards without a cluster: scattered parts gather into exactly the rows and order
of a shard read on its own, a part fetches only its row groups from S3, and ``local_shard`` resumes a share."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import engine
from uih.workload import COLUMNS
from uih.workload import random_events as make_events

pytest.importorskip("ray")
from ray_plugin import local_shard  # noqa: E402
from ray_plugin._shards import ShardPlan, gather, read_shard, split_part, split_parts  # noqa: E402

N = 3000
PROJ = engine.Projection(["item_id", "action", "ts"], max_len=24, align="right", pad_value=-1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A store and ``N`` thin rows with ids, labels and dense features, in two files of row groups of 250
    (users interleaved across every row group, as a request log writes them)."""
    d = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(11)
    store = engine.UIHStore.create(d / "s", columns=COLUMNS)
    store.append(make_events(rng, range(50), 4000))
    store.seal(600_000)
    store.append(make_events(rng, range(50), 400, t0=2_000_000))
    thin = store.snapshot({"user_id": rng.integers(0, 54, N), "request_ts": rng.integers(1_000_000, 3_500_000, N),
                           "example_id": np.arange(N, dtype=np.int64) * 7 + 3,
                           "label": rng.random(N).astype(np.float32),
                           "dense": pa.array(list(rng.random((N, 8)).astype(np.float32)), pa.list_(pa.float32()))})
    (d / "thin").mkdir()
    pq.write_table(thin.slice(0, 1300), d / "thin" / "day0.parquet", row_group_size=250)
    pq.write_table(thin.slice(1300), d / "thin" / "day1.parquet", row_group_size=250)
    yield store, thin, d / "thin"
    store.close()


def _columns(store):
    return (*engine.Reconstructor(store, PROJ, device="cpu").thin_columns, "example_id", "label", "dense")


def _scattered(source, columns, num_shards, num_parts, by_user=True, order=None):
    """Every shard gathered from in-process ``split_part`` pieces, as the scattered plan's tasks make them."""
    total, schema, parts = split_parts(source, columns, num_parts)
    pieces = [split_part(src, start, total, schema, num_shards, by_user, order) for src, start in parts]
    return [gather([p[i] for p in pieces], order is not None) for i in range(num_shards)]


@pytest.mark.parametrize("num_shards,num_parts", [(1, 3), (4, 7), (5, 2), (8, 100)])
def test_scattered_user_shards_are_the_shards_read_whole(setup, num_shards, num_parts):
    store, thin, folder = setup
    cols = list(_columns(store))
    for source in (str(folder), thin):
        got = _scattered(source, cols, num_shards, num_parts)
        for i in range(num_shards):
            assert got[i].equals(read_shard(str(folder), cols, num_shards, i)), (source, i)
    ranges = _scattered(str(folder), cols, num_shards, num_parts, by_user=False)
    assert [t.equals(read_shard(str(folder), cols, num_shards, i, by_user=False)) for i, t in enumerate(ranges)] \
        == [True] * num_shards


@pytest.mark.parametrize("num_shards,num_parts,batch_size,window", [(1, 4, 64, None), (4, 6, 100, 333),
                                                                    (7, 2, 32, 5000)])
def test_scattered_shuffle_shares_are_the_epochs_shares(setup, num_shards, num_parts, batch_size, window):
    store, thin, folder = setup
    cols = _columns(store)
    rec = engine.Reconstructor(store, PROJ, device="cpu")
    for epoch in (0, 1):
        kw = dict(batch_size=batch_size, order="shuffle", seed=5, epoch=epoch, shuffle_window=window)
        got = _scattered(str(folder), cols, num_shards, num_parts, order=kw)
        for i in range(num_shards):
            want = rec.epoch_rows(str(folder), share=(i, num_shards), extra_columns=list(cols[-3:]), **kw)
            assert got[i].equals(want), (epoch, i)
            assert got[i].equals(ShardPlan(str(folder), cols, num_shards, order=kw).read(i, rec))


def test_scattered_plan_checks_columns_on_the_driver(setup):
    store, thin, folder = setup
    with pytest.raises(engine.SchemaError, match="nope"):
        ShardPlan(str(folder), (*_columns(store), "nope"), 3).scatter()


def test_a_scattered_part_fetches_its_share_of_the_bytes(setup, counted_s3):
    """Read alone, every user shard fetches the whole source (its users are in every row group); a part of
    the scattered plan fetches its own row groups only: about 1/parts of the source."""
    store, thin, _ = setup
    s3 = counted_s3
    big = pa.concat_tables([thin] * 4)  # 12,000 rows, ~2 MB a file: footers are a small part of a read
    size = s3.put_thin(big, "bytes", files=2, row_group_size=500)
    source, cols = s3.uri("bytes"), list(_columns(store))
    before = s3.fetched("bytes")
    read_shard(source, cols, 4, 1)
    whole_shard = s3.fetched("bytes") - before
    total, schema, parts = split_parts(source, cols, 4)
    fetched = []
    for src, start in parts:
        before = s3.fetched("bytes")
        split_part(src, start, total, schema, 4)
        fetched.append(s3.fetched("bytes") - before)
    print(f"\nthin source {size} B in 2 objects; one shard read alone: {whole_shard} B; "
          f"each of {len(parts)} scattered parts: {fetched} B (sum {sum(fetched)} B)")
    assert whole_shard >= 0.7 * size
    assert len(parts) == 4 and max(fetched) < 0.3 * size and sum(fetched) < 1.1 * whole_shard


def test_local_shard_resumes_a_shares_remaining_batches(setup):
    """``resume=`` a share iterator's state: the rank's rows are exactly the batches it had left; from
    another world size, the ranks together get every batch after the consumed prefix once."""
    store, thin, folder = setup
    bs, kw = 64, dict(order="shuffle", seed=9, epoch=1, shuffle_window=700)
    rec = engine.Reconstructor(store, PROJ, device="cpu")
    extra = ["example_id"]

    def ids(batches):
        return [b["example_id"].tolist() for b in batches]

    states, left = {}, {}
    for rank in range(2):
        it = rec.iter_batches(str(folder), bs, extra_columns=extra, share=(rank, 2), **kw)
        for _ in range(5 + rank):
            next(it)
        states[rank] = it.state_dict()
        left[rank] = ids(it)
    for rank in range(2):
        r2, rows = local_shard(store.root, folder, PROJ, rank=rank, world_size=2, version=store.version,
                               device="cpu", batch_size=bs, resume=states[rank], **kw)
        assert ids(r2.iter_batches(rows, bs, extra_columns=extra)) == left[rank] and len(left[rank]) > 3
    # elastic: rank 0's state (5 batches each consumed in lockstep) resumed by 3 ranks
    glob = ids(rec.iter_batches(str(folder), bs, extra_columns=extra, **kw))
    got = []
    for rank in range(3):
        r3, rows = local_shard(store.root, folder, PROJ, rank=rank, world_size=3, version=store.version,
                               device="cpu", batch_size=bs, resume=states[0], **kw)
        mine = ids(r3.iter_batches(rows, bs, extra_columns=extra))
        assert mine == glob[10:][rank::3]
        got += [e for b in mine for e in b]
    assert sorted(got) == sorted(e for b in glob[10:] for e in b)
    with pytest.raises(engine.InvalidArgument, match="seed"):
        local_shard(store.root, folder, PROJ, rank=0, world_size=2, device="cpu", batch_size=bs,
                    resume=states[0], **{**kw, "seed": 1})
    with pytest.raises(engine.InvalidArgument, match="order='shuffle'"):
        local_shard(store.root, folder, PROJ, rank=0, world_size=2, device="cpu", resume=states[0])


def test_local_shard_of_a_store_opened_with_a_filesystem(setup, counted_s3):
    """A remote store's ``root`` (what a worker gets: it pickles with the store's ``filesystem=``) opens in
    ``local_shard``, and its rows and batches are those of the local store."""
    store, thin, folder = setup
    engine.publish(store.root, "s3://uih/shards-store", filesystem=counted_s3.fs)
    with engine.UIHStore.open("s3://uih/shards-store", read_only=True, filesystem=counted_s3.fs) as remote:
        rec, rows = local_shard(remote.root, folder, PROJ, rank=1, world_size=2, device="cpu")
        ref, want = local_shard(store.root, folder, PROJ, rank=1, world_size=2, device="cpu",
                                version=remote.version)
        assert rows.equals(want) and len(rows)
        got = [b.to_numpy() for b in rec.iter_batches(rows.slice(0, 64), 32)]
        for g, w in zip(got, (b.to_numpy() for b in ref.iter_batches(want.slice(0, 64), 32))):
            assert all(np.array_equal(g[c], w[c]) for c in w)
