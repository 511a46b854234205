"""Device choice: backend resolution, missing GPU packages, the cuDF read path's errors and checksums, and
the one rule that places a DALI pipeline where its reconstructor runs."""

import sys
import types
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import engine
from engine.training import _backends

DAY = 86_400_000_000


# ---- resolve ------------------------------------------------------------------------------------
class FakeCudaBackend:
    name = "cuda"


def test_auto_follows_gpu_availability(monkeypatch):
    monkeypatch.setattr(_backends, "CudaBackend", FakeCudaBackend)
    monkeypatch.setattr(_backends, "cuda_usable", lambda: True)
    assert isinstance(_backends.resolve("auto"), FakeCudaBackend)
    monkeypatch.setattr(_backends, "cuda_usable", lambda: False)
    assert _backends.resolve("auto").name == "cpu"
    monkeypatch.setattr(_backends._deps, "cupy", lambda: None)  # installed, but no GPU
    with pytest.raises(engine.UIHError, match="no usable CUDA GPU"):
        _backends.resolve("cuda")
    with pytest.raises(engine.InvalidArgument, match="device must be"):
        _backends.resolve("tpu")


def test_cuda_usable_is_false_in_the_simulator_and_without_a_device(monkeypatch):
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    assert not _backends.cuda_usable()
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM")
    monkeypatch.setattr(_backends._deps, "numba_cuda", lambda: types.SimpleNamespace(is_available=lambda: False))
    assert not _backends.cuda_usable()
    gpu = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: 1)))
    monkeypatch.setattr(_backends._deps, "numba_cuda", lambda: types.SimpleNamespace(is_available=lambda: True))
    monkeypatch.setattr(_backends._deps, "cupy", lambda: gpu)
    assert _backends.cuda_usable()


@pytest.mark.parametrize("device", ["cuda", "cuda-sim"])
def test_missing_numba_cuda_names_the_fix(monkeypatch, device):
    monkeypatch.setitem(sys.modules, "numba.cuda", None)  # what `import numba.cuda` sees when not installed
    with pytest.raises(engine.MissingDependency, match=r"numba\.cuda.*environment\.yml"):
        _backends.resolve(device)


def test_missing_cupy_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(engine.MissingDependency, match=r"cupy.*environment\.yml"):
        _backends.resolve("cuda")


# ---- the cuDF read path, through the simulator backend ----------------------------------------
def fake_cudf(monkeypatch, fail=None, garbage=False, only=None):
    """A ``cudf`` module whose ``read_parquet`` reads with PyArrow (no checksums, like cuDF), raises
    ``fail``, or returns zeros (what a reader that never checks a checksum may hand back); ``only``:
    misbehave on that file only."""
    mod = types.ModuleType("cudf")
    mod.calls = []

    def read_parquet(path, columns, row_groups):
        mod.calls.append(path)
        misbehave = only is None or Path(path) == only
        if misbehave and fail is not None:
            raise fail
        if misbehave and garbage:
            n = sum(pq.ParquetFile(path).metadata.row_group(g).num_rows for g in row_groups[0])
            return {c: types.SimpleNamespace(values=np.zeros(n, pq.read_schema(path).field(c).type.to_pandas_dtype()))
                    for c in columns}
        t = pq.ParquetFile(path).read_row_groups(row_groups[0], columns=columns)
        return {c: types.SimpleNamespace(values=t.column(c).to_numpy()) for c in columns}
    mod.read_parquet = read_parquet
    monkeypatch.setitem(sys.modules, "cudf", mod)
    return mod


@pytest.fixture
def sealed(filled_store):
    """A fresh read-only view (nothing decoded or cached yet), thin rows over it and a projection."""
    thin = filled_store.snapshot({"user_id": np.arange(0, 20, 3), "request_ts": np.full(7, 3 * DAY)})
    view = engine.UIHStore.open(filled_store.root, version=filled_store.version)
    yield view, thin, engine.Projection(["item_id", "dwell_ms"], max_len=10**6)
    view.close()


def corrupt_newest_segment(store) -> Path:
    """Flip a byte inside the item_id pages of the newest segment (which every request here reads)."""
    seg = Path(store.root) / store.view.segments[-1]["main"]["file"]
    md = pq.ParquetFile(seg).metadata.row_group(0)
    chunk = next(md.column(i) for i in range(md.num_columns) if md.column(i).path_in_schema == "item_id")
    raw = bytearray(seg.read_bytes())
    raw[chunk.data_page_offset + chunk.total_compressed_size // 2] ^= 0xFF
    seg.write_bytes(bytes(raw))
    return seg


def test_cudf_reader_is_used_and_equal(monkeypatch, sealed):
    store, thin, p = sealed
    cudf = fake_cudf(monkeypatch)
    got = engine.Reconstructor(store, p, device="cuda-sim").reconstruct(thin)
    assert cudf.calls, "the device backend did not read through cuDF"
    want = engine.Reconstructor(store, p, device="cpu").reconstruct(thin)
    for c in want:
        np.testing.assert_array_equal(got[c], want[c])


def test_cudf_failure_on_a_sound_file_is_missing_dependency(monkeypatch, sealed):
    store, thin, p = sealed
    fake_cudf(monkeypatch, fail=RuntimeError("CUDA driver version is insufficient"))
    with pytest.raises(engine.MissingDependency, match="page checksums verify.*insufficient"):
        engine.Reconstructor(store, p, device="cuda-sim").reconstruct(thin)


def test_device_out_of_memory_is_not_called_a_missing_library(monkeypatch, sealed):
    store, thin, p = sealed
    fake_cudf(monkeypatch, fail=MemoryError("std::bad_alloc: out of device memory"))
    with pytest.raises(MemoryError, match="device memory") as ei:
        engine.Reconstructor(store, p, device="cuda-sim").reconstruct(thin)
    assert not isinstance(ei.value, engine.UIHError)


@pytest.mark.parametrize("cudf", ["raises", "reads garbage"])
def test_corrupt_segment_is_corruption_on_the_cudf_path(monkeypatch, sealed, cudf):
    store, thin, p = sealed
    seg = corrupt_newest_segment(store)
    fake = fake_cudf(monkeypatch, fail=RuntimeError("parquet decode error") if cudf == "raises" else None,
                     garbage=cudf == "reads garbage", only=seg)
    with pytest.raises(engine.CorruptionError, match=seg.name):
        engine.Reconstructor(store, p, device="cuda-sim").reconstruct(thin)
    assert str(seg) not in fake.calls  # checksums failed before cuDF decoded the damaged file


def test_cudf_that_fails_to_import_means_pyarrow(monkeypatch, sealed):
    store, thin, p = sealed
    monkeypatch.setitem(sys.modules, "cudf", None)
    rec = engine.Reconstructor(store, p, device="cuda-sim")
    assert rec.backend.cudf is None
    np.testing.assert_array_equal(rec.reconstruct(thin)["item_id"],
                                  engine.Reconstructor(store, p, device="cpu").reconstruct(thin)["item_id"])


# ---- DALI placement rule ------------------------------------------------------------------------
def fake_rec(device, gpu=0):
    return types.SimpleNamespace(device=device, device_id=gpu if device == "cuda" else None)


def test_pipeline_placement_follows_the_reconstructor():
    from dali_plugin._pipeline import placement
    assert placement(fake_rec("cpu")) is None
    assert placement(fake_rec("cuda", gpu=1)) == 1
    assert placement(fake_rec("cpu"), None) is None
    assert placement(fake_rec("cuda", gpu=1), 1) == 1


@pytest.mark.parametrize("device, device_id, message", [
    ("cpu", 0, "build it with device='cuda'"),
    ("cuda", None, "copied back to the host"),
    ("cuda", 1, "live on GPU 0"),
    ("cpu", "gpu", "must be 'auto'"),
], ids=["cpu-rec-gpu-pipe", "cuda-rec-cpu-pipe", "other-gpu", "bad-value"])
def test_pipeline_placement_mismatch_is_an_error(device, device_id, message):
    from dali_plugin._pipeline import placement
    with pytest.raises(engine.InvalidArgument, match=message):
        placement(fake_rec(device), device_id)


def test_default_pipeline_of_a_cpu_reconstructor_runs_on_cpu(sealed):
    pytest.importorskip("nvidia.dali")
    from dali_plugin import UIHIterator, uih_pipeline
    store, thin, _ = sealed
    rec = engine.Reconstructor(store, engine.Projection(["item_id"], max_len=8), device="cpu")
    pipe = uih_pipeline(rec, thin, batch_size=4)
    assert pipe.device == "cpu"
    got = list(UIHIterator(pipe))
    assert not any(v.is_cuda for b in got for v in b.values())
    np.testing.assert_array_equal(np.concatenate([b["item_id"].numpy() for b in got]),
                                  rec.reconstruct(thin)["item_id"])
