"""``python -m kerasml``: the same as the ``kerasml`` command."""

import sys

from kerasml.cli import main

if __name__ == "__main__":
    sys.exit(main())
