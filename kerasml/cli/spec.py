"""``kerasml validate``: check an experiment spec without running it.

``kerasml validate SPEC [--set KEY=VALUE ...]`` reads a TOML experiment spec, applies the
overrides, fills the defaults and checks everything (`kerasml.spec`). A valid spec prints a
summary of the resolved values and where each came from (the file, a default or ``--set``)
and exits 0; otherwise every problem is printed at once (to stderr) and the exit status is 2.
"""

from pathlib import Path

from kerasml.cli._base import CLIError, add_set_argument

__all__ = ["register"]


def _headline(spec):
    from kerasml.spec import evaluation_steps

    data, model, train = spec.data, spec.model, spec.train
    source = str(data.path) if data.path else f'builtin "{data.builtin}"'
    if data.builtin == "procedural":
        source += f" ({data.classes} classes)"
    method = f"{spec.loss.type} loss{' + HDML' if model.hdml else ''}"
    evaluations = len(evaluation_steps(spec))
    return (
        f"{method} · {model.backbone} → {model.embedding_dim}-d · {source} at {data.image_size} px · "
        f"batch {train.batch_size} × {train.max_steps} steps · {evaluations} evaluation"
        f"{'s' if evaluations != 1 else ''} · best by {train.checkpoint_metric}"
    )


def _rows(spec, provenance):
    """``(section, [(key path, value, origin)...])`` for every resolved key, in the spec's order."""
    for section, values in spec.model_dump().items():
        rows = []
        for key, value in values.items():
            path = f"{section}.{key}"
            origin = provenance.get(path, "spec").split(" ", 1)[0]  # "--set KEY=VALUE" -> "--set"
            rows.append((path, value, origin))
        yield section, rows


def _summary(spec, provenance, source, check_files, console):
    from rich.markup import escape
    from rich.table import Table

    from kerasml.spec import format_value

    checked = "files checked" if check_files else "files not checked (--no-check-files)"
    console.print(f"[bold green]valid:[/] {escape(source)} ({checked})", highlight=False)
    console.print(escape(_headline(spec)), highlight=False)
    table = Table(show_header=True, header_style="bold")
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("from", no_wrap=True)
    styles = {"spec": "", "default": "dim"}
    for index, (_, rows) in enumerate(_rows(spec, provenance)):
        if index:
            table.add_section()
        for path, value, origin in rows:
            table.add_row(path, escape(format_value(value)), escape(origin), style=styles.get(origin, "bold yellow"))
    console.print(table)


def _cmd_validate(args, console):
    from kerasml.spec import SpecError, dump_spec, read_spec, resolve_spec

    check_files = not args.no_check_files
    try:
        text, source = read_spec(args.spec)
        spec, provenance = resolve_spec(text, args.set, source=source, check_files=check_files)
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
        "resolved values and where each came from.",
    )
    validate.add_argument("spec", type=Path, help="the spec file, e.g. specs/quickstart.toml")
    add_set_argument(validate)
    validate.add_argument(
        "--no-check-files",
        action="store_true",
        help="do not open data.path or model.weights (for machines without the data, e.g. CI)",
    )
    validate.add_argument("--toml", action="store_true", help="print the resolved spec as TOML instead of a summary")
    validate.set_defaults(handler=_cmd_validate, framework=True)
