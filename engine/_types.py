"""The argument types of the public API, named once for the annotations of ``engine`` and its adapters."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

#: a local path, a ``file://`` URI, or a URI that ``pyarrow.fs`` reads (``s3://bucket/store``)
StorePath = str | os.PathLike[str]
#: events, requests or thin rows: a Table, a RecordBatch, or a dict of equal-length columns
TableLike = pa.Table | pa.RecordBatch | Mapping[str, Any]
#: thin rows: a Parquet file, a folder of them, a URI, a list of those, or rows in memory
ThinSource = StorePath | Sequence[StorePath] | TableLike
