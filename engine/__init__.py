"""uih-latemat: versioned late materialization of user interaction histories for recommendation training.

The front door: every public name is listed in ``__all__``. Behind it, two sides of one store:

- ``engine.serving``: the store (schema, durable log, mutable tier, segments and their index, manifests,
  snapshots, compaction policy, the immutable-tier reader);
- ``engine.training``: reconstruction (projection, reconstructor, batch, thin-row sources, prefetch,
  the CPU/GPU backends).

Their modules are private (underscored); import the names below from ``engine``.

The engine logs (seals, compactions, publishes) to the ``uih`` logger and its children (``uih.engine.store``,
``uih.engine.publish``); as a library it adds only a ``NullHandler``, so an application that wants the
records configures logging itself (``logging.basicConfig(level=logging.INFO)``).
"""

import logging

import kernels  # noqa: F401  first: its import sets how Numba's disk cache is checked (kernels._cache)

from ._errors import (
    CorruptionError,
    ImmutableError,
    InvalidArgument,
    MissingDependency,
    SchemaError,
    UIHError,
    VersionError,
)
from .serving import SegmentInfo, SegmentPart, UIHStore, publish, write_parquet
from .training import Batch, BatchIterator, Order, Projection, Reconstructor, parquet_files, shard

__all__ = ["UIHStore", "publish", "Projection", "Reconstructor", "Batch", "BatchIterator", "Order", "shard",
           "UIHError", "InvalidArgument", "SchemaError", "ImmutableError", "VersionError", "CorruptionError",
           "MissingDependency",
           # for tools that measure a store: its segments' files, Parquet written like them, thin sources' files
           "SegmentInfo", "SegmentPart", "write_parquet", "parquet_files"]
__version__ = "0.1.0"

logging.getLogger("uih").addHandler(logging.NullHandler())
