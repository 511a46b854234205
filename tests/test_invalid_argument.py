"""A bad argument is an ``engine.InvalidArgument`` in the engine and in every adapter: a ``UIHError`` that
is also a ``ValueError``, so both a UIH-aware caller and plain Python code can catch it.

Schema problems (columns, dtypes, the projection) stay ``SchemaError`` (SPEC §4); these cases are
arguments of the wrong type or value, or a combination of them that cannot work.
"""

import numpy as np
import pytest

import engine
from uih.workload import COLUMNS
from uih.workload import random_events as make_events


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    store = engine.UIHStore.create(tmp_path_factory.mktemp("args") / "store", columns=COLUMNS,
                                   event_type_column="action")
    store.append(make_events(np.random.default_rng(0), range(4), 20))
    store.seal(1 << 60)
    thin = store.snapshot({"user_id": [0, 1, 2, 3], "request_ts": [1 << 61] * 4})
    yield store, thin
    store.close()


def invalid(call, match):
    """``call()`` raises an InvalidArgument matching ``match``; it is a UIHError and a ValueError too."""
    with pytest.raises(engine.InvalidArgument, match=match) as info:
        call()
    assert isinstance(info.value, engine.UIHError) and isinstance(info.value, ValueError)
    assert not isinstance(info.value, engine.SchemaError)


def test_engine_keyword_arguments(setup, tmp_path):
    store, thin = setup
    invalid(lambda: engine.Reconstructor(store, engine.Projection(["item_id"]), device="tpu"), "device must be")
    invalid(lambda: store.expire(keep_versions=0), "keep_versions")
    invalid(lambda: store.expire(grace_s=-1), "grace_s")
    invalid(lambda: engine.UIHStore.create(tmp_path / "s", columns=COLUMNS, retention={"keep": 1}), "retention")
    invalid(lambda: engine.UIHStore.create("s3://bucket/new", columns=COLUMNS), "local")
    (tmp_path / "file").write_text("x")
    invalid(lambda: engine.UIHStore.create(tmp_path / "file", columns=COLUMNS), "not a directory")
    invalid(lambda: engine.UIHStore.open(store.root, filesystem="s3"), "filesystem")
    invalid(lambda: engine.publish("s3://bucket/store", str(tmp_path / "x")), "not a local path")
    invalid(lambda: engine.shard(thin, 0, 0), "num_shards")
    invalid(lambda: engine.shard(thin, 2, 2), "index")


def test_dali_adapter(setup):
    pytest.importorskip("nvidia.dali")
    from dali_plugin import UIHIterator, uih_pipeline
    from dali_plugin._options import PipelineOptions
    store, thin = setup
    rec = engine.Reconstructor(store, engine.Projection(["item_id"], max_len=8), device="cpu")
    invalid(lambda: PipelineOptions(padding="later"), "padding must be one of")
    invalid(lambda: PipelineOptions(batches_per_iteration=0), "batches_per_iteration")
    invalid(lambda: uih_pipeline(rec, thin, batch_size=2, device_id="gpu"), "device_id must be")
    invalid(lambda: uih_pipeline(rec, thin, batch_size=2, device_id=0), "device='cuda'")
    invalid(lambda: uih_pipeline(rec, thin, batch_size=2, workers=1, batches_per_iteration=2),
            "in-process CPU pipeline")
    invalid(lambda: UIHIterator(object()), "UIHPipeline")


def test_torch_adapter(setup):
    pytest.importorskip("torch")
    from torch_plugin import UIHDataset
    store, thin = setup
    proj = engine.Projection(["item_id"], max_len=8)
    invalid(lambda: UIHDataset(5, thin, proj), "store must be")
    invalid(lambda: UIHDataset(store, thin, ["item_id"]), "projection must be")
    invalid(lambda: UIHDataset(store, thin, proj, rank=2, world_size=2), "rank")


def test_ray_adapter(setup):
    pytest.importorskip("ray")
    from ray_plugin import local_shard, uih_dataset
    store, thin = setup
    proj = engine.Projection(["item_id"], max_len=8)
    for bad in (0, 1.5, "8", True):
        invalid(lambda: uih_dataset(store, thin, proj, batch_size=bad), "batch_size")  # before Ray starts
    invalid(lambda: local_shard(5, thin, proj, rank=0, world_size=1), "store must be")
    invalid(lambda: local_shard(store, thin, proj, rank=0, world_size=1, order="shuffle"), "batch_size")


def test_app_output_folder(tmp_path):
    from uih.replay import prepare_out
    (tmp_path / "f").write_text("x")
    invalid(lambda: prepare_out(tmp_path / "f"), "is a file")
