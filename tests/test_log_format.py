"""Log payloads: sorted Parquet now, zstd Arrow IPC before; both replay to the same rows."""

import numpy as np
import pyarrow as pa

from engine.serving import _log


def _ipc(table):
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(table)
    return sink.getvalue()


def test_earlier_ipc_payloads_and_new_parquet_payloads_replay_alike(tmp_path, rng):
    n = 5000
    t = pa.table({"user_id": rng.integers(0, 50, n), "seq": np.arange(n, dtype=np.int64),
                  "ts": np.sort(rng.integers(0, 10**12, n)), "item_id": rng.integers(0, 1 << 40, n)})
    path = tmp_path / "a.log"
    with open(path, "wb") as f:  # an earlier log: the same framing around an IPC stream
        for part in _log._frame(_log.APPEND, _ipc(t)):
            f.write(part)
    log = _log.AppendLog(path)
    log.append(_log.UPDATE, t.select(["user_id", "seq", "item_id"]))
    log.close()
    (k1, a), (k2, b) = _log.AppendLog.replay(path)
    assert (k1, k2) == (_log.APPEND, _log.UPDATE) and a.equals(t)
    key = np.lexsort((t["seq"].to_numpy(), t["user_id"].to_numpy()))  # the new payload is key-sorted
    assert b.equals(t.select(["user_id", "seq", "item_id"]).take(key))
    assert _log._encode(t).size < _ipc(t).size
