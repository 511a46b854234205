"""``PipelineOptions``: how ``uih_pipeline`` feeds DALI, beyond the reconstructor, batch size and device."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields, replace
from typing import Literal, get_args

from engine import InvalidArgument

Padding = Literal["auto", "assembled", "after_dali", "dali_slice"]
Assembly = Literal["auto", "dali_operator", "engine"]


@dataclass(frozen=True)
class PipelineOptions:
    """Options of ``uih_pipeline``; each "auto" is resolved per pipeline (``UIHPipeline.options`` holds
    the choices made). Every choice gives the same batches; they differ in where the work runs.

    Parameters
    ----------
    workers : int
        0: reconstruct in this process (batches in ``iter_batches`` order). N > 0 (CPU only): N worker
        processes, whose batches interleave round-robin. In ``order="stream"`` each owns a user shard (same
        rows, other order; no ``state_dict``); in ``order="shuffle"`` worker ``i`` makes the epoch's global
        batches ``i, i + N, ...``, so they come out in ``iter_batches`` order.
    extra_columns : tuple of str
        Pass-through thin-row columns (labels, ids) to output too, ``[B]`` each, after ``lengths``.
    num_threads : int
        DALI's threads (with ``assembly="dali_operator"``, also the shares each batch's rows are cut into).
    prefetch_queue_depth : int
        DALI iterations run ahead of the one handed out.
    padding : "auto", "assembled", "after_dali" or "dali_slice"
        Where a padded projection's rows get their padding. "assembled": the assembly kernels write padded
        rows (by the engine before DALI, or inside DALI's operator with ``assembly="dali_operator"``).
        In-process CPU pipelines only: "after_dali": the rows cross DALI unpadded and ``UIHIterator`` pads
        them with the engine's kernel (``Reconstructor.pad``); "dali_slice": each row is a DALI sample and
        DALI's ``slice`` pads it (pad values a float32 carries exactly). "auto": "after_dali" for long rows
        (``_jagged``) that the engine writes, else "assembled".
    batches_per_iteration : "auto" or int
        Batches one DALI iteration carries, made by the engine at once and copied by DALI in one piece;
        ``UIHIterator`` hands them out one by one, the same batches in the same order. In-process CPU
        pipelines of padded rows padded as assembled only. "auto": as many as fit ``ITERATION_BYTES``
        (``ASSEMBLED_ITERATION_BYTES`` with the DALI operator), at most 8 and at most
        ``rec.chunk_batches``, else 1; more than ``rec.chunk_batches`` makes the engine's chunks hold one
        group. Prefetching (``prefetch_queue_depth``) counts iterations, and a batch the caller keeps
        keeps its iteration's whole buffer alive.
    assembly : "auto", "dali_operator" or "engine"
        Who writes each batch. "dali_operator": the engine's kernels run as a DALI operator
        (``_assemble_op``) and write it straight into DALI's output buffers, ``num_threads`` shares of its
        rows at once; the engine only plans and decodes, and nothing is copied. In-process CPU pipelines
        of padded projections with at most 5 outputs (columns, lengths, one more for all extra columns)
        and ``padding`` "assembled" or "auto". "engine": the engine writes each batch and DALI copies it.
        "auto": "dali_operator" where it applies.
    """

    workers: int = 0
    extra_columns: tuple = ()
    num_threads: int = 2
    prefetch_queue_depth: int = 2
    padding: Padding = "auto"
    batches_per_iteration: Literal["auto"] | int = "auto"
    assembly: Assembly = "auto"

    def __post_init__(self):
        for name, modes in (("padding", Padding), ("assembly", Assembly)):
            value = getattr(self, name)
            if not isinstance(value, str) or value not in get_args(modes):
                raise InvalidArgument(f"{name} must be one of {', '.join(map(repr, get_args(modes)))}, got {value!r}")
        n = self.batches_per_iteration
        auto = isinstance(n, str) and n == "auto"
        if not auto and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
            raise InvalidArgument(f"batches_per_iteration must be 'auto' or an int >= 1, got {n!r}")
        # a frozen dataclass sets its own normalized fields through object.__setattr__
        object.__setattr__(self, "extra_columns", tuple(self.extra_columns))
        if not auto:
            object.__setattr__(self, "batches_per_iteration", int(n))

    @classmethod
    def of(cls, options: PipelineOptions | None, changes: dict) -> PipelineOptions:
        """``options`` (default: all defaults) with the fields named in ``changes`` replaced."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"uih_pipeline() got unknown option(s) {unknown}: its options are PipelineOptions' "
                            f"fields ({', '.join(sorted(known))})")
        return replace(options if options is not None else cls(), **changes)
