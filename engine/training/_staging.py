"""Batches planned and staged but not written (``Reconstructor.iter_unassembled``), for an adapter that runs
the kernels into memory of its own: ``dali_plugin``'s operator writes each batch into DALI's buffers."""

from __future__ import annotations

from ._unassembled import Column, FilterLanes, Lane, Unassembled


class Stager:
    """Cuts a reconstructor's prepared chunks into ``Unassembled`` batches.

    ``words``: the 8- and 4-byte output columns, in lane order; ``filter_lanes``: per filter input (seq, ts,
    event type), its lane as ``(kind, index)`` (kind 0: 8-byte, 1: 4-byte) or None where it is not read;
    ``kernel_args``: the event filter and the pad words the kernels take.
    """

    def __init__(self, projection, dtypes: dict, words: tuple, filter_lanes: list, kernel_args: tuple):
        cols8, cols4 = words
        self.projection = projection
        self.columns = tuple(Column(c, dtypes[c], Lane(8, cols8.index(c))) if c in cols8 else
                             Column(c, dtypes[c], Lane(4, cols4.index(c))) for c in projection.columns)
        self.lanes = FilterLanes(*(None if lane is None else Lane((8, 4)[lane[0]], lane[1]) for lane in filter_lanes))
        self.event_filter, self.pad_words = kernel_args

    def batches(self, chunks, batch_size: int, first_sizes: list):
        """``Unassembled`` batches of ``chunks``: ``first_sizes`` rows first, then ``batch_size`` rows, each
        cut at the end of its chunk (as every batch is)."""
        p, sizes = self.projection, iter(first_sizes)
        for chunk in chunks:
            a = 0
            while a < chunk.n:
                b = min(a + next(sizes, batch_size), chunk.n)
                yield Unassembled(b - a, chunk.src, chunk.runs, chunk.tail, self.event_filter, chunk.rows(a, b),
                                  self.pad_words, p.max_len, p.align == "right", self.columns, self.lanes,
                                  {c: v[a:b] for c, v in chunk.extras.items()}, chunk)
                a = b



