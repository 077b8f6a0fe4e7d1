"""The ``kerasml`` command line (also ``python -m kerasml``).

Modules, bottom up: `kerasml.cli._base` (the `CLIError` type, exit statuses, consoles and
shared argument helpers), one module per command group (`kerasml.cli.losses`: ``losses``;
`kerasml.cli.data`: ``download``, ``ingest``, ``info``; `kerasml.cli.spec`: ``validate``;
`kerasml.cli.experiment`: ``run``, ``evaluate``, ``embed``), each with a ``register(commands)``,
and `kerasml.cli.main` (the parser and `main`) on top. Importing the package imports neither
Keras nor a framework.
"""

from kerasml.cli._base import EXIT_USAGE, CLIError
from kerasml.cli.main import build_parser, main

__all__ = ["EXIT_USAGE", "CLIError", "build_parser", "main"]
