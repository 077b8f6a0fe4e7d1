"""``python -m kerasml``: the same as the ``kerasml`` command."""

import sys

from kerasml.cli import main

sys.exit(main())
