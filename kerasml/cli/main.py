"""The ``kerasml`` command: the parser of every command and the error handling around them.

Known bad input exits with status 2 and a message on stderr; ``--verbose`` shows the
traceback as well. Building the parser imports no command's dependencies: each handler
imports what it needs when it runs, and commands that need Keras (``set_defaults(framework=True)``)
get it imported quietly first (`load_framework`) and, on JAX or PyTorch, run with TensorFlow
kept out of the process (`tensorflow_hidden`).
"""

import argparse
import sys

from kerasml.cli._base import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CLIError,
    load_framework,
    make_console,
    tensorflow_hidden,
    tolerate_any_encoding,
)
from kerasml.cli.compare import register as register_compare
from kerasml.cli.data import register as register_data
from kerasml.cli.experiment import register as register_experiment
from kerasml.cli.losses import register as register_losses
from kerasml.cli.spec import register as register_spec
from kerasml.cli.weights import register as register_weights

__all__ = ["build_parser", "main"]

# One `register(commands)` per command module, in the order of `kerasml --help`.
COMMAND_GROUPS = (
    register_losses,
    register_data,
    register_weights,
    register_spec,
    register_experiment,
    register_compare,
)


def _versions():
    load_framework()
    import keras

    from kerasml._version import __version__

    return f"kerasml {__version__} (keras {keras.__version__}, backend {keras.backend.backend()})"


def build_parser():
    """The argument parser of the ``kerasml`` command.

    Returns:
        An `argparse.ArgumentParser` whose sub-commands set ``handler(args, console) -> int``.
    """
    parser = argparse.ArgumentParser(
        prog="kerasml",
        description="Deep metric learning for Keras 3: data, experiment specs, training runs.",
        epilog="Run `kerasml COMMAND --help` for a command's arguments. The backend is Keras' "
        "(KERAS_BACKEND=tensorflow|jax|torch; TensorFlow when unset).",
    )
    parser.add_argument("--version", action="store_true", help="print the kerasml, Keras and backend versions")
    parser.add_argument("--verbose", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in COMMAND_GROUPS:
        register(commands)
    for subparser in commands.choices.values():
        subparser.add_argument(
            "--verbose", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error"
        )
    return parser


def main(argv=None):
    """Run the command line.

    Args:
        argv: the arguments after ``kerasml``. Defaults to ``sys.argv[1:]``.

    Returns:
        The exit status: 0, 2 for a known bad input (the message is on stderr), 130 when
        interrupted, 1 for an unexpected failure.
    """
    for stream in (sys.stdout, sys.stderr):  # help and errors too, before any console exists
        tolerate_any_encoding(stream)
    parser = build_parser()
    args = parser.parse_args(argv)
    from rich.markup import escape

    errors = make_console(stderr=True)
    if args.version:
        make_console().print(_versions(), highlight=False)
        return 0
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if not getattr(args, "framework", False):
            return handler(args, make_console())
        load_framework()
        with tensorflow_hidden():
            return handler(args, make_console())
    except CLIError as error:
        if args.verbose:
            errors.print_exception()
        errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        errors.print("interrupted", highlight=False)
        return EXIT_INTERRUPTED
    except Exception as error:  # an unexpected failure: say what and how to see more
        if args.verbose:
            errors.print_exception()
        else:
            errors.print(
                f"[bold red]internal error:[/] {type(error).__name__}: {escape(str(error))}\n"
                "Run again with --verbose for the traceback, and report it if the input was valid.",
                highlight=False,
            )
        return 1
