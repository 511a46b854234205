"""uih-latemat: versioned late materialization of user interaction histories for recommendation training.

The front door: every public name is listed in ``__all__``; everything else lives in underscored modules.
"""

from ._errors import CorruptionError, ImmutableError, SchemaError, UIHError, VersionError
from ._store import UIHStore

__all__ = ["UIHStore", "UIHError", "SchemaError", "ImmutableError", "VersionError", "CorruptionError"]
__version__ = "0.1.0"
