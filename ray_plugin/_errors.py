"""Typed engine errors through Ray: find the ``engine.UIHError`` that a Ray exception wraps."""

from __future__ import annotations

import engine


def engine_error(exc: BaseException | None) -> engine.UIHError | None:
    """The ``engine.UIHError`` (``VersionError``, ``SchemaError``...) raised in an actor, or None.

    Ray raises an actor's exception in the driver wrapped (Ray Data: ``UserCodeException`` whose cause is
    a ``RayTaskError`` subclassing the original type); walk the causes to the engine's own error.
    """
    seen: set[int] = set()
    found: engine.UIHError | None = None
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, engine.UIHError):
            found = exc  # keep walking: the deepest one is the actor's original, not Ray's copy
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return found
