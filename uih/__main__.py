"""``python -m uih``: the same as the ``uih`` command."""

import sys

from .cli import main

sys.exit(main())
