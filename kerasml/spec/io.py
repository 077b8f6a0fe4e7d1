"""Spec files: reading TOML (syntax errors with line and column) and writing it back (`tomli_w`)."""

import os
import re
from collections.abc import Mapping
from pathlib import Path

import tomli_w

from kerasml.spec.errors import Problem, SpecError

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

__all__ = ["dump_spec", "parse_toml", "plain", "read_spec"]


def read_spec(path):
    """Read a spec file.

    Args:
        path: the ``.toml`` file.

    Returns:
        ``(text, source)``: the file's text and its name for messages.

    Raises:
        SpecError: for a missing, unreadable or non-UTF-8 file.
    """
    path = Path(path)
    source = str(path)
    try:
        return path.read_text(encoding="utf-8"), source
    except FileNotFoundError:
        problem = Problem(
            "(file)",
            source,
            "an existing TOML spec file",
            f"{source} does not exist (in the working directory {Path.cwd()}). Check the path (specs/ has examples).",
        )
    except IsADirectoryError:
        problem = Problem("(file)", source, "a TOML spec file, not a folder")
    except UnicodeDecodeError as error:
        problem = Problem("(file)", source, "a UTF-8 text file", str(error))
    except OSError as error:
        problem = Problem("(file)", source, "a readable TOML spec file", str(error))
    raise SpecError([problem], source)


def parse_toml(text, source="<string>"):
    """TOML text as a nested dict.

    Args:
        text: the spec's text.
        source: its name for messages.

    Returns:
        A dict.

    Raises:
        SpecError: for a syntax error, naming its line and column and showing the line.
    """
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
    match = re.search(r"at line (\d+), column (\d+)", message)
    lines = text.splitlines() or [""]
    if match:
        line, column = int(match.group(1)), int(match.group(2))
        shown = lines[line - 1] if 0 < line <= len(lines) else ""
        where = f"line {line}, column {column}"
    elif "end of document" in message:
        shown, where = lines[-1], f"line {len(lines)} (end of file)"
    else:
        shown, where = "", "TOML syntax"
    hint = f"TOML says: {message}."
    if re.search(r"=\s*[A-Za-z_]", shown) and '"' not in shown:
        hint += ' Strings need double quotes: key = "value".'
    raise SpecError([Problem(where, shown, "valid TOML", hint)], source)


def plain(value):
    """A copy of a spec given in Python, as TOML would have given it: tuples as lists, paths as strings."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def dump_spec(spec):
    """Write a spec as TOML text; ``parse_spec(dump_spec(spec)) == spec``.

    Args:
        spec: a resolved `kerasml.spec.Spec`, or a nested dict of strings, numbers, booleans,
            lists and dicts (one table per section).

    Returns:
        TOML text, one ``[table]`` per section in the spec's order.

    Raises:
        TypeError: for a value TOML cannot hold.
    """
    table = spec.model_dump() if hasattr(spec, "model_dump") else plain(spec)
    try:
        return tomli_w.dumps(table)
    except TypeError as error:
        raise TypeError(f"dump_spec cannot write this value to TOML: {error}") from None
