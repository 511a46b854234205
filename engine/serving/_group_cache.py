"""``GroupCache``: decoded row-group columns kept for reuse by ``ImmutableView.gather`` (fat rows,
``to_table``), an LRU of column arrays under a byte budget. Reconstruction keeps its decoded row groups
elsewhere, in the word arenas its kernels read in place (``engine.training._arena``)."""

from __future__ import annotations

from collections import OrderedDict


class GroupCache:
    """Decoded row-group columns, least recently used evicted beyond ``budget`` bytes.

    This is what makes data affinity hold across chunks: a user's rows are decoded once per job (per
    shard) while they fit the budget, however often the user comes back in the thin rows.
    """

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self._d: dict = OrderedDict()

    def get(self, key):
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key, value):
        if key in self._d or self.budget <= 0:
            return
        self._d[key] = value
        self.used += value.nbytes
        while self.used > self.budget and self._d:
            _, old = self._d.popitem(last=False)
            self.used -= old.nbytes

    def clear(self):
        self._d.clear()
        self.used = 0
