import functools
import os
import subprocess
import sys

# CUDA kernels run in Numba's simulator on NumPy arrays; must be set before numba is first imported.
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401
import pyarrow.parquet as pq
import pytest

import engine
from uih.workload import COLUMNS
from uih.workload import random_events as make_events

# The simulator runs a block's threads as Python threads that meet at every syncthreads(); each meeting
# waited out the interpreter's 5 ms switch interval, so a filtered kernel's tile loop spent almost all its
# time idle (one test: 49 s, 5.5 s with 0.2 ms).
sys.setswitchinterval(2e-4)


@functools.cache
def no_real_gpu() -> str | None:
    """Why the ``gpu`` tests cannot run in this process, or None when a real CUDA device is there.

    The simulator answers "available" to everything, so it is ruled out first, by what Numba read when
    it was imported (the environment may have changed since). The device itself is asked for in a child
    process: initialising CUDA here, at collection, would hold a context in every test run.
    """
    from numba.core import config
    if config.ENABLE_CUDASIM:
        return ("Numba's CUDA simulator is on (this conftest's default); on a machine with a GPU run "
                "NUMBA_ENABLE_CUDASIM=0 python -m pytest -m gpu")
    probe = "from numba import cuda; print(len(cuda.gpus) if cuda.is_available() else 0)"
    try:
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0"})
    except subprocess.TimeoutExpired:
        return "asking numba.cuda for a device timed out"
    if r.returncode != 0 or r.stdout.strip() in ("", "0"):
        why = (r.stderr.strip().splitlines() or ["numba.cuda.is_available() is False"])[-1]
        return f"no usable CUDA device: {why}"
    return None


@pytest.hookimpl(trylast=True)  # after -m has deselected: no device probe when no gpu test runs
def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only on a real CUDA device (see ``no_real_gpu``), and are skipped elsewhere."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    why = no_real_gpu() if gpu else None
    for item in gpu if why else ():
        item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(autouse=True)
def small_cuda_blocks(monkeypatch):
    """Simulated blocks of 8 threads: fast in the simulator, and small inputs still span many tiles."""
    from kernels import _common
    monkeypatch.setattr(_common, "CUDA_THREADS", 8)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def store(tmp_path):
    s = engine.UIHStore.create(tmp_path / "store", columns=COLUMNS, event_type_column="action")
    yield s
    s.close()


@pytest.fixture
def filled_store(store, rng):
    """Three days of events for 20 users, sealed daily, with some updates; the last day still mutable."""
    day = 86_400_000_000
    for d in range(3):
        store.append(make_events(rng, range(20), 400, t0=d * day, span=day))
        t = store.to_table().filter(pa.compute.invert(store.to_table()["sealed"]))
        pick = rng.choice(t.num_rows, 20, replace=False)
        store.update({"user_id": t["user_id"].to_numpy()[pick], "seq": t["seq"].to_numpy()[pick],
                      "dwell_ms": rng.integers(0, 100, 20).astype(np.int32)})
        if d < 2:
            store.seal((d + 1) * day)
    return store


BUCKET = "uih"


def _moto_server():
    """A started moto S3 server on a free local port, and the port (or a skip without moto's server)."""
    import logging
    import socket

    moto_server = pytest.importorskip("moto.server", reason="pip install 'moto[server]' (the test extra)")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, port


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free local port; yields (endpoint, pyarrow S3FileSystem) with bucket ``uih``."""
    from pyarrow import fs as fs_mod

    server, port = _moto_server()
    endpoint = f"127.0.0.1:{port}"
    fs = fs_mod.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key="testing",
                             secret_key="testing", region="us-east-1", allow_bucket_creation=True)
    fs.create_dir(BUCKET)
    yield endpoint, fs
    server.stop()


@pytest.fixture(scope="module")
def cp():
    """CuPy, for the ``gpu`` tests (their arrays are CuPy's: the gpu extra), or a skip."""
    cupy = pytest.importorskip("cupy", reason="the gpu tests' arrays are CuPy's (the gpu extra)")
    if not hasattr(np, "row_stack"):  # numba-cuda <= 0.30 overloads it at its first compilation
        with pytest.MonkeyPatch.context() as m:
            m.setattr(np, "row_stack", np.vstack, raising=False)
            yield cupy
        return
    yield cupy


ORDER_DAY = 86_400_000_000


def log_requests(root, seed: int, days: int, per_snapshot: int):
    """A store in ``root/store`` with sealed and mutable events (40 users), and thin rows logged five times a
    day, numbered by ``example_id``, in ``root/thin.parquet`` (row groups of 700)."""
    rng = np.random.default_rng(seed)
    store = engine.UIHStore.create(root / "store", columns=COLUMNS, event_type_column="action")
    users = np.arange(40)
    thins = []
    for d in range(days):
        store.append(make_events(rng, users, 2000, t0=d * ORDER_DAY, span=ORDER_DAY))
        for k in range(5):
            req = {"user_id": rng.choice(users, per_snapshot),
                   "request_ts": np.full(per_snapshot, d * ORDER_DAY + (k + 1) * ORDER_DAY // 6)}
            thins.append(store.snapshot(req))
        store.seal(d * ORDER_DAY + ORDER_DAY // 2)
    thin = pa.concat_tables(thins)
    thin = thin.append_column("example_id", pa.array(np.arange(thin.num_rows), pa.int64()))
    pq.write_table(thin, root / "thin.parquet", row_group_size=700)
    store.close()
    return root


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """The training-order tests' store and 2,700 thin rows over 3 days (3 shuffle blocks)."""
    return log_requests(tmp_path_factory.mktemp("order"), seed=7, days=3, per_snapshot=180)


class CountedS3:
    """A moto S3 server (bucket ``uih``) that counts the bytes of the objects it serves, whichever process
    reads them (Ray workers included): ``fetched(prefix)`` is the total of GET responses under ``uih/<prefix>/``."""

    def __init__(self, server):
        import threading
        from collections import Counter

        from pyarrow import fs as fs_mod

        self.app, self._got, self._lock = server._server.app, Counter(), threading.Lock()
        server._server.app = self._serve  # werkzeug's handler calls server.app per request
        self.endpoint = "{}:{}".format(*server.get_host_and_port())
        self.fs = fs_mod.S3FileSystem(endpoint_override=self.endpoint, scheme="http", access_key="testing",
                                      secret_key="testing", region="us-east-1", allow_bucket_creation=True)
        self.fs.create_dir(BUCKET)

    def _serve(self, environ, start_response):
        body = self.app(environ, start_response)
        if environ["REQUEST_METHOD"] != "GET":
            return body
        path = environ["PATH_INFO"]

        def counted():
            for chunk in body:
                with self._lock:
                    self._got[path] += len(chunk)
                yield chunk
        return counted()

    def fetched(self, prefix: str) -> int:
        with self._lock:
            return sum(v for k, v in self._got.items() if k.startswith(f"/{BUCKET}/{prefix}/"))

    def uri(self, prefix: str) -> str:
        """A URI of ``uih/<prefix>/`` that carries the endpoint (credentials come from the environment)."""
        return f"s3://{BUCKET}/{prefix}/?endpoint_override={self.endpoint}&scheme=http&region=us-east-1"

    def put_thin(self, thin: pa.Table, prefix: str, files: int = 2, row_group_size: int = 250) -> int:
        """``thin`` as ``files`` Parquet objects under ``uih/<prefix>/``; returns their total size in bytes."""
        step = -(-len(thin) // files)
        names = [f"{BUCKET}/{prefix}/part-{i}.parquet" for i in range(files)]
        for i, name in enumerate(names):
            with self.fs.open_output_stream(name) as f:
                pq.write_table(thin.slice(i * step, step), f, row_group_size=row_group_size)
        return sum(self.fs.get_file_info(n).size for n in names)


@pytest.fixture(scope="module")
def counted_s3():
    """A ``CountedS3`` server on a free local port, and the environment's S3 credentials set for it (Ray
    nodes started in the module inherit them)."""
    server, _ = _moto_server()
    with pytest.MonkeyPatch.context() as m:
        m.setenv("AWS_ACCESS_KEY_ID", "testing")
        m.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        yield CountedS3(server)
    server.stop()
