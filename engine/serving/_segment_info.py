"""Read-only descriptions of a version's segments (``UIHStore.segments``): what tools that measure a store
(bytes per part, which part a tenant reads) need, without the manifest's layout."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from . import _segments


@dataclass(frozen=True)
class SegmentPart:
    """One Parquet file of a segment: ``"main"`` (every event) or a sidecar holding only ``event_types``."""

    name: str
    file: str  # store-relative
    rows: int
    bytes: int
    index_bytes: int  # of its user index file
    footer_bytes: int  # Parquet metadata a reader fetches before any page (0 where the manifest predates it)
    event_types: tuple[int, ...] | None  # None: every type


@dataclass(frozen=True)
class SegmentInfo:
    """One immutable segment of a version: its id and the parts written for it, by name."""

    id: str
    parts: Mapping[str, SegmentPart]  # read-only (a MappingProxyType): name -> SegmentPart, "main" first
    _entry: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def of(cls, entry: dict[str, Any]) -> SegmentInfo:
        parts: dict[str, SegmentPart] = {}
        for name in _segments.PARTS:
            meta = entry.get(name)
            if meta:
                types = None if name == "main" else tuple(entry[f"{name}_types"])
                parts[name] = SegmentPart(name, meta["file"], meta["rows"], meta["bytes"], meta["index_bytes"],
                                          meta.get("footer_bytes", 0), types)
        return cls(entry["id"], MappingProxyType(parts), entry)

    def part_for(self, event_types: Iterable[int] | None = None) -> SegmentPart:
        """The part a tenant asking for ``event_types`` (a projection's ``actions``; None: all) reads: the
        smallest sidecar holding all of them, else the main file."""
        return self.parts[_segments.part_for(self._entry, event_types)]
