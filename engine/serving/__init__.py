"""The serving side: the UIH store, written by one process and read by many.

``_store`` (the ``UIHStore`` facade) over: ``_schema`` (declared columns, input validation), ``_log``
(the durable append log), ``_mutable`` (the in-memory mutable tier), ``_segments`` and
``_segment_index`` (immutable Parquet segments and their per-user index), ``_manifest`` (one per
version, the commit point), ``_snapshot`` (thin and fat rows), ``_compaction`` (which segments merge),
``_immutable`` (a version's segments and index: per-user row lookups, counts, fat-row ``gather``) and
``_group_cache`` (decoded row groups ``gather`` reuses), ``_durable`` (fsync'd
writes), ``_lock`` (the writer lock), ``_retention`` (what ``expire`` may delete, live vs reclaimable bytes),
``_fs`` (local paths or ``pyarrow.fs`` URIs: every read of a store file), ``_publish`` (copy a store to
object storage for remote readers). Reconstruction's reads of the segments live with the training side
(``engine.training._reads``), which imports this package, never the reverse.
"""

from ._publish import publish
from ._segment_info import SegmentInfo, SegmentPart
from ._segments import write_parquet
from ._store import UIHStore

__all__ = ["UIHStore", "publish", "SegmentInfo", "SegmentPart", "write_parquet"]
