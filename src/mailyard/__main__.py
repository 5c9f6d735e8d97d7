"""``python -m mailyard`` is the ``mailyard`` command."""

import sys

from .cli import main

sys.exit(main())
