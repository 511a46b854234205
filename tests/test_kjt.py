"""to_kjt: a jagged batch as TorchRec's KeyedJaggedTensor, and the MissingDependency without TorchRec.

The KeyedJaggedTensor tests need TorchRec whose fbgemm-gpu loads beside this torch; `make test-torchrec`
installs that pairing (fbgemm-gpu-cpu 1.8.0 and torchrec 1.8.0 for torch 2.13) and runs this file.
"""

import importlib
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import engine
import torch_plugin
from torch_plugin import _deps, to_kjt
from uih.workload import DAY_US, synthetic_store


def _torchrec_or_skip():
    try:
        return importlib.import_module("torchrec.sparse.jagged_tensor")
    except (ImportError, OSError) as e:  # OSError: an fbgemm-gpu built for another torch release
        pytest.skip(f"torchrec is not importable here ({type(e).__name__}: {str(e)[:120]}); `make test-torchrec` "
                    "installs fbgemm-gpu-cpu 1.8.0 and torchrec 1.8.0 (the pairing that loads beside torch 2.13)")


@pytest.fixture(scope="module")
def uih(tmp_path_factory):
    """A store of 6 users with 40 events each, and thin rows of 5 of them plus user 99, who has none."""
    store = synthetic_store(tmp_path_factory.mktemp("kjt") / "store", users=6, history=40)
    users = np.array([0, 3, 99, 5, 3, 1])
    thin = store.snapshot({"user_id": users, "request_ts": np.full(len(users), 31 * DAY_US),
                           "label": np.arange(len(users), dtype=np.float32)})
    yield store, thin
    store.close()


PROJECTIONS = {
    "item": dict(columns=["item_id"], max_len=16),
    "three columns, rare types": dict(columns=["item_id", "action", "ts"], max_len=8, actions=[2, 3, 4]),
    "int32 only": dict(columns=["action", "surface"], max_len=5),
}


@pytest.mark.parametrize("name", list(PROJECTIONS))
def test_kjt_equals_the_jagged_batch(uih, name):
    kjt_module = _torchrec_or_skip()
    store, thin = uih
    p = engine.Projection(**PROJECTIONS[name], layout="jagged")
    batch = engine.Reconstructor(store, p, device="cpu").reconstruct(thin, extra_columns=["label"])
    lengths, offsets = batch["lengths"].astype(np.int64), batch["offsets"]
    assert (lengths == 0).any() and (lengths > 0).any(), "the rows must include an empty one"
    as_dict = batch.to_torch()  # what a DataLoader yields: a dict of tensors, pass-through columns last
    assert "label" in as_dict
    for kjt in (to_kjt(batch), to_kjt(as_dict)):
        assert isinstance(kjt, kjt_module.KeyedJaggedTensor)
        assert kjt.keys() == p.columns  # not the pass-through label
        assert kjt.stride() == batch.size
        assert kjt.values().dtype == (torch.int32 if name == "int32 only" else torch.int64)
        for c in p.columns:
            jt = kjt[c]
            assert np.array_equal(jt.values().numpy(), batch[c])
            assert np.array_equal(jt.lengths().numpy(), lengths)
            assert np.array_equal(jt.offsets().numpy(), offsets)
        # the whole KJT: the columns' values end to end, the lengths once per key
        assert np.array_equal(kjt.values().numpy(), np.concatenate([batch[c] for c in p.columns]))
        assert np.array_equal(kjt.lengths().numpy(), np.tile(lengths, len(p.columns)))
        assert np.array_equal(kjt.offsets().numpy(), np.concatenate([[0], np.cumsum(np.tile(lengths, len(p.columns)))]))


def test_keys_choose_columns_and_ids_must_be_integers(uih):
    _torchrec_or_skip()
    store, thin = uih
    p = engine.Projection(["item_id", "action"], max_len=8, layout="jagged")
    batch = engine.Reconstructor(store, p, device="cpu").reconstruct(thin).to_torch()
    kjt = to_kjt(batch, keys=["action"])
    assert kjt.keys() == ["action"] and kjt.values().dtype == torch.int32
    assert torch.equal(kjt["action"].values(), batch["action"])
    with pytest.raises(engine.SchemaError, match="integer ids"):
        to_kjt({**batch, "item_id": batch["item_id"].to(torch.float32)})
    with pytest.raises(engine.SchemaError, match="pass-through"):
        to_kjt({**batch, "label": torch.zeros(batch["lengths"].shape[0] + 1)}, keys=["item_id", "label"])
    with pytest.raises(engine.SchemaError, match="steps are the lengths"):
        to_kjt({**batch, "lengths": batch["lengths"].flip(0)})
    padded = engine.Reconstructor(store, engine.Projection(["item_id"], max_len=8), device="cpu").reconstruct(thin)
    with pytest.raises(engine.SchemaError, match="layout='jagged'"):
        to_kjt(padded)


def test_empty_batch(uih):
    _torchrec_or_skip()
    kjt = to_kjt({"item_id": torch.zeros(0, dtype=torch.int64), "lengths": torch.zeros(0, dtype=torch.int32),
                  "offsets": torch.zeros(1, dtype=torch.int64)})
    assert kjt.keys() == ["item_id"] and kjt.stride() == 0 and kjt.values().numel() == 0


@pytest.mark.parametrize("failure", ["absent", "abi"])
def test_without_torchrec_a_missing_dependency_names_the_fix(monkeypatch, failure):
    if failure == "absent":  # None in sys.modules: an import of it fails as if it were not installed
        for name in [m for m in sys.modules if m == "torchrec" or m.startswith("torchrec.")] + ["torchrec"]:
            monkeypatch.setitem(sys.modules, name, None)
    else:  # fbgemm-gpu's .so built for another torch release fails to load with an OSError
        def broken(name, *a, **k):
            raise OSError("Could not load this library: fbgemm_gpu_config.so")
        monkeypatch.setattr(_deps, "importlib", SimpleNamespace(import_module=broken))
    batch = {"item_id": torch.arange(3), "lengths": torch.tensor([1, 0, 2], dtype=torch.int32),
             "offsets": torch.tensor([0, 1, 1, 3])}
    with pytest.raises(engine.MissingDependency, match=r"uih-latemat\[torchrec\].*make test-torchrec"):
        to_kjt(batch)
    assert torch_plugin.__all__ == ["UIHDataset", "to_kjt"]
