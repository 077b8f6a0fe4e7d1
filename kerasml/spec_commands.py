"""The spec commands of the ``kerasml`` CLI: ``validate``.

``kerasml validate SPEC [--set KEY=VALUE ...]`` reads a TOML experiment spec, applies the
overrides, fills the defaults and checks everything (`kerasml.spec`). A valid spec prints a
summary of the resolved values and where each came from (the file, a default or ``--set``)
and exits 0; otherwise every problem is printed at once and the exit status is 2.

``register(commands)`` adds the command to the CLI's subparsers; a `kerasml.spec.SpecError`
is raised as :class:`kerasml.cli.CLIError` (exit status 2, a message, no traceback).
"""

from pathlib import Path

__all__ = ["register"]


def _headline(spec):
    from kerasml.spec import evaluation_steps

    data, model, loss, train = spec["data"], spec["model"], spec["loss"], spec["train"]
    source = data["path"] or f'builtin "{data["builtin"]}"'
    if data["builtin"] == "procedural":
        source += f" ({data['classes']} classes)"
    method = f"{loss['type']} loss{' + HDML' if model['hdml'] else ''}"
    evaluations = len(evaluation_steps(spec))
    return (
        f"{method} · {model['backbone']} → {model['embedding_dim']}-d · {source} at {data['image_size']} px · "
        f"batch {train['batch_size']} × {train['max_steps']} steps · {evaluations} evaluation"
        f"{'s' if evaluations != 1 else ''} · best by {train['checkpoint_metric']}"
    )


def _summary(spec, provenance, source, check_files, console):
    from rich.markup import escape
    from rich.table import Table

    from kerasml.spec import _show

    checked = "files checked" if check_files else "files not checked (--no-check-files)"
    console.print(f"[bold green]valid:[/] {escape(source)} ({checked})", highlight=False)
    console.print(escape(_headline(spec)), highlight=False)
    table = Table(show_header=True, header_style="bold")
    table.add_column("key")
    table.add_column("value")
    table.add_column("from")
    styles = {"spec": "", "default": "dim"}
    for index, (section, values) in enumerate(spec.items()):
        if index:
            table.add_section()
        for key, value in values.items():
            origin = provenance.get(f"{section}.{key}", "spec").split(" ", 1)[0]  # "--set KEY=VALUE" -> "--set"
            style = styles.get(origin, "bold yellow")
            table.add_row(f"{section}.{key}", escape(_show(value)), escape(origin), style=style)
    console.print(table)


def _cmd_validate(args, console):
    from kerasml.cli import CLIError
    from kerasml.spec import SpecError, _read, _resolve, dump_spec

    check_files = not args.no_check_files
    try:
        text, source = _read(args.spec)
        spec, provenance = _resolve(text, args.set or (), source, check_files)
    except SpecError as error:
        raise CLIError(str(error)) from error
    if args.toml:
        console.print(dump_spec(spec), markup=False, highlight=False, end="")
    else:
        _summary(spec, provenance, source, check_files, console)
    return 0


def register(commands):
    """Add ``validate`` to the CLI's subparsers.

    Args:
        commands: the object returned by ``parser.add_subparsers(...)``.
    """
    validate = commands.add_parser(
        "validate",
        help="check an experiment spec (TOML) without running it",
        description="Read a TOML experiment spec, apply --set overrides, fill the defaults and check every key, "
        "the cross-key rules (batch layout of the loss, HDML support, classes and images available in the data) "
        "and the files it names. Every problem is reported at once (exit status 2); a valid spec prints its "
        "resolved values.",
    )
    validate.add_argument("spec", type=Path, help="the spec file, e.g. specs/quickstart.toml")
    validate.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a key, the value read as TOML (train.batch_size=32, model.hdml=false, eval.ks=[1,2,4], "
        "data.path=data/cub20.h5); repeatable",
    )
    validate.add_argument(
        "--no-check-files",
        action="store_true",
        help="do not open data.path or model.weights (for machines without the data, e.g. CI)",
    )
    validate.add_argument("--toml", action="store_true", help="print the resolved spec as TOML instead of a summary")
    validate.set_defaults(handler=_cmd_validate)
