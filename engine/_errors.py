"""The error hierarchy (docs/errors.md): one module, every public error derives from UIHError."""

__all__ = ["UIHError", "InvalidArgument", "SchemaError", "ImmutableError", "VersionError", "CorruptionError",
           "MissingDependency"]


class UIHError(Exception):
    """Raised for any failure the engine reports on purpose; catch this to catch them all."""


class InvalidArgument(UIHError, ValueError):
    """Raised when an argument has a wrong type or value (not the data's schema: that is SchemaError)."""


class SchemaError(UIHError, ValueError):
    """Raised when input columns, dtypes or values, or a projection, do not match the store's schema."""


class ImmutableError(UIHError):
    """Raised when an update targets a sealed event or a seq that does not exist."""


class VersionError(UIHError):
    """Raised when a thin row or a store points beyond what this store or this code understands."""


class CorruptionError(UIHError):
    """Raised when a segment, log or manifest fails its checksum or cannot be parsed."""


class MissingDependency(UIHError, ImportError):
    """Raised when an optional package needed for the requested feature is not installed."""
