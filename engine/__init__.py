"""uih-latemat: versioned late materialization of user interaction histories for recommendation training.

The front door: every public name is listed in ``__all__``; everything else lives in underscored modules.
"""

from ._errors import CorruptionError, ImmutableError, SchemaError, UIHError, VersionError
from ._batch import Batch
from ._projection import Projection
from ._reconstruct import Reconstructor
from ._store import UIHStore
from ._thin import shard

__all__ = ["UIHStore", "Projection", "Reconstructor", "Batch", "shard",
           "UIHError", "SchemaError", "ImmutableError", "VersionError", "CorruptionError"]
__version__ = "0.1.0"
