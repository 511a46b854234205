"""The training side: rebuilds each thin row's sequence just in time, bit-exact with serving.

``_projection`` (what a tenant reads), ``_reconstructor`` (the ``Reconstructor``), ``_batch`` (its
output), ``_thin_source`` (thin rows from Parquet or tables, sharding), ``_plan`` (a chunk's users and
window starts), ``_reads`` (a chunk's reads of the store's segments: planned once, advised ahead, decoded
into the arena as runs), ``_arena`` (the ``GroupArena`` of decoded row groups the kernels read in place),
``_prefetch`` (the background stage), ``_epoch`` and ``_order`` (an epoch's chunks and their order),
``_unassembled`` (batches staged for a consumer that writes them), ``_backends`` (the one place that
chooses CPU or GPU) and ``_buffer_pool`` (one process-wide reserve of faulted-in host buffers).
"""

from ._batch import Batch
from ._epoch import BatchIterator
from ._order import Order
from ._projection import Projection
from ._reconstructor import Reconstructor
from ._thin_source import parquet_files, shard

__all__ = ["Projection", "Reconstructor", "Batch", "BatchIterator", "Order", "shard", "parquet_files"]
