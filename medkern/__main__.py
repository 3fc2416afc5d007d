"""``python -m medkern``: the same as the ``medkern`` command."""

import sys

from .cli import main

sys.exit(main())
