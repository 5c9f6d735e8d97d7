"""``python -m mailyard.cli`` is the ``mailyard`` command too."""

import sys

from . import main

sys.exit(main())
