"""``kerasml losses``: the table of losses, from `kerasml.losses.catalog`."""

import inspect

__all__ = ["register"]

# Constructor arguments every Keras loss has; not worth a line in the table.
_COMMON_ARGUMENTS = {"self", "name", "reduction", "dtype"}


def _defaults(cls):
    parameters = inspect.signature(cls.__init__).parameters.values()
    return "\n".join(
        f"{p.name}={p.default!r}"
        for p in parameters
        if p.name not in _COMMON_ARGUMENTS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    )


def _cmd_losses(args, console):
    from rich.markup import escape
    from rich.table import Table

    from kerasml.losses import catalog

    table = Table(title=escape("kerasml losses (spec: [loss] type = NAME)"))
    table.add_column("name", overflow="fold", no_wrap=True)
    table.add_column("aliases", overflow="fold")
    table.add_column("class", overflow="fold", no_wrap=True)
    table.add_column("batch layout", overflow="fold")
    table.add_column("HDML", overflow="fold")
    table.add_column("defaults", overflow="fold")
    for entry in catalog():
        table.add_row(
            entry.name,
            escape(", ".join(entry.aliases)),
            entry.cls.__name__,
            escape(entry.layout),
            escape(entry.hdml or "-"),
            escape(_defaults(entry.cls)),
        )
    console.print(table)
    return 0


def register(commands):
    """Add ``losses`` to the CLI's subparsers.

    Args:
        commands: the object returned by ``parser.add_subparsers(...)``.
    """
    losses = commands.add_parser(
        "losses",
        help="list the losses: spec names, aliases, batch layouts, HDML support, defaults",
        description="List every kerasml loss: the name to use as [loss] type in a spec, the other spellings "
        "accepted, the class, the batch layout it needs, whether HDML can synthesise for it, and the "
        "defaults of its own arguments (set them under [loss]).",
    )
    losses.set_defaults(handler=_cmd_losses, framework=True)
