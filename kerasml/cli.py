"""The ``kerasml`` command line (also ``python -m kerasml``).

Commands:
    kerasml --version      print the kerasml, Keras and backend versions
    kerasml losses         list the losses, their spec names, layouts and defaults

Known bad input exits with status 2 and a one-paragraph message; ``--verbose``
shows the traceback as well.
"""

import argparse
import inspect
import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

EXIT_USAGE = 2


class CLIError(Exception):
    """A known bad input: printed as a message, exit status 2, no traceback."""


def _versions():
    import keras

    import kerasml

    return f"kerasml {kerasml.__version__} (keras {keras.__version__}, backend {keras.backend.backend()})"


def _defaults(cls):
    skip = {"self", "name", "reduction", "dtype"}
    params = inspect.signature(cls.__init__).parameters.values()
    return "\n".join(f"{p.name}={p.default!r}" for p in params if p.name not in skip)


def _cmd_losses(args, console):
    from kerasml import losses

    layouts = {
        "NPairLoss": "[a_1..a_N; p_1..p_N]",
        "AngularLoss": "[a_1..a_N; p_1..p_N]",
        "DivergenceLoss": "y_pred [B, M, D]",
        "TripletLoss": "any; [a; p; n] if structured",
    }
    table = Table(title="kerasml.losses")
    for column in ("class", "spec names", "batch layout", "defaults"):
        table.add_column(column)
    for cls_name, cls in sorted(losses._CLASSES.items()):
        names = sorted(alias for alias, target in losses._ALIASES.items() if target is cls)
        layout = layouts.get(cls_name, "any labelled batch")
        table.add_row(cls_name, ", ".join(names), escape(layout), escape(_defaults(cls)))
    console.print(table)
    return 0


def build_parser():
    """The argument parser of the ``kerasml`` command."""
    parser = argparse.ArgumentParser(prog="kerasml", description="Deep metric learning for Keras 3.")
    parser.add_argument("--version", action="store_true", help="print versions and exit")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    losses = commands.add_parser("losses", help="list the available losses")
    losses.set_defaults(handler=_cmd_losses)
    from kerasml.data.commands import register as register_data

    register_data(commands)
    from kerasml.spec_commands import register as register_spec

    register_spec(commands)
    from kerasml.experiment_commands import register as register_experiment

    register_experiment(commands)
    for subparser in commands.choices.values():
        subparser.add_argument(
            "--verbose", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors"
        )
    return parser


def main(argv=None):
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console()
    if args.version:
        console.print(_versions(), highlight=False)
        return 0
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return handler(args, console)
    except CLIError as error:
        if args.verbose:
            console.print_exception()
        console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.print("interrupted", highlight=False)
        return 130
    except Exception as error:  # an unexpected failure: say what and how to see more
        if args.verbose:
            console.print_exception()
        else:
            console.print(
                f"[bold red]internal error:[/] {type(error).__name__}: {escape(str(error))}\n"
                "Run again with --verbose for the traceback, and report it if the input was valid.",
                highlight=False,
            )
        return 1


if __name__ == "__main__":
    sys.exit(main())
