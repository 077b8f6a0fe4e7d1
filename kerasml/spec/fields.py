"""Checking a TOML table against a pydantic model, key by key, in the spec's words.

`check_table` validates each key of a table on its own (pydantic's strict types and bounds,
and the validators in the field's ``Annotated`` metadata), so that one bad key leaves the
others usable, and turns pydantic's errors into `Problem` lines: the key path, the value,
what the field accepts (`expected`: from its `Expect`, else from its type and bounds) and a
hint (a validator's own, the field's, or one for the value's type: quotes around a number, a
decimal point in an int, a scalar for a list, a choice in the wrong case...).
`options_model` types a constructor's keyword arguments by their defaults, for the loss's and
the backbone's options.
"""

import dataclasses
import functools
import inspect
import math
import re
import types
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model
from pydantic_core import PydanticCustomError

from kerasml._validation import did_you_mean
from kerasml.spec.errors import MISSING, Problem, format_value, quoted

__all__ = ["Expect", "Section", "check_table", "expected", "options_model", "refuse"]


@dataclasses.dataclass(frozen=True)
class Expect:
    """How problems describe a field (pydantic keeps it in the field's metadata).

    Attributes:
        text: what the key accepts, in words; ``""`` derives it from the type and bounds.
        hint: a function of a refused value returning how to fix it (``""`` when it has none).
    """

    text: str = ""
    hint: Callable[[object], str] | None = None


def refuse(hint=""):
    """Reject a value from a validator; the problem's hint is ``hint``."""
    raise PydanticCustomError("spec", "{hint}", {"hint": hint})


class Section(BaseModel):
    """A spec table: strict types, no unknown keys, immutable once resolved."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


@functools.cache
def options_model(constructor, reserved=()):
    """A `Section` model of a constructor's keyword arguments, typed by their defaults.

    A ``bool``, ``int``, ``float`` or ``str`` default types its argument (an int is accepted
    for a float); any other default (``None``, a tuple) accepts any value.

    Args:
        constructor: a class or function.
        reserved: argument names left out (those kerasml sets itself).

    Returns:
        A pydantic model class named after the constructor.
    """
    fields = {}
    for name, parameter in inspect.signature(constructor).parameters.items():
        if name in reserved or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = parameter.default
        kind = type(default) if type(default) in (bool, int, float, str) else Any
        fields[name] = (kind, ... if default is parameter.empty else default)
    return create_model(f"{constructor.__name__}Options", __base__=Section, **fields)


# ----------------------------------------------------------------------------------------------
# Per-key validation and the words of a problem


@functools.cache
def _adapter(model, key):
    info = model.model_fields[key]
    strict = ConfigDict(strict=True, allow_inf_nan=False)
    kind = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return TypeAdapter(kind, config=strict)


_UNIONS = (Union, types.UnionType)  # Union[X, Y] and X | Y


def _unwrap(kind):
    """The type under ``Annotated``, and ``X`` for ``X | None``."""
    while get_origin(kind) is Annotated:
        kind = get_args(kind)[0]
    if get_origin(kind) in _UNIONS:
        members = [member for member in get_args(kind) if member is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return kind


def _members(kind):
    kind = _unwrap(kind)
    return [_unwrap(member) for member in get_args(kind)] if get_origin(kind) in _UNIONS else [kind]


_BOUNDS = {
    annotated_types.Ge: "ge",
    annotated_types.Gt: "gt",
    annotated_types.Le: "le",
    annotated_types.Lt: "lt",
    annotated_types.MinLen: "min_length",
}


def _bounds(metadata):
    return {_BOUNDS[type(item)]: getattr(item, _BOUNDS[type(item)]) for item in metadata if type(item) in _BOUNDS}


def _range(noun, bounds):
    low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    high = (bounds["le"], "]") if "le" in bounds else (bounds["lt"], ")") if "lt" in bounds else None
    if low and high:
        return f"{noun} in {low[0]}{low[1]}, {high[0]}{high[1]}"
    if low:
        return f"{noun} {'>=' if low[0] == '[' else '>'} {low[1]}"
    return "a finite number" if noun == "a number" else noun


def _expect(info):
    return next((item for item in info.metadata if isinstance(item, Expect)), Expect())


def expected(info):
    """What a field accepts, in words (``"an int >= 1"``, ``'one of "test", "train"'``...).

    Args:
        info: a pydantic ``FieldInfo`` (``Model.model_fields[key]``).

    Returns:
        A phrase to follow "expected".
    """
    if _expect(info).text:
        return _expect(info).text
    kind = _unwrap(info.annotation)
    if kind is bool:
        return "true or false"
    if kind in (int, float):
        return _range("an int" if kind is int else "a number", _bounds(info.metadata))
    if get_origin(kind) is Literal:
        return f"one of {quoted(get_args(kind))}"
    if kind is str:
        return "a non-empty string" if _bounds(info.metadata).get("min_length") else "a string"
    return "any value"


def _choices(kind):
    kind = _unwrap(kind)
    if get_origin(kind) is Literal:
        return get_args(kind)
    if get_origin(kind) is list:
        return _choices(get_args(kind)[0])
    return None


def _hint(info, value, errors, accepts):
    """How to fix ``value``: a validator's own hint, the field's, or one from the value's type.

    ``accepts(candidate)`` says whether the field takes another value (``[value]``, say).
    """
    for error in errors:
        if error["type"] == "spec":
            return error["ctx"]["hint"]
    own = _expect(info).hint and _expect(info).hint(value)
    if own:
        return own
    kinds = _members(info.annotation)
    choices = _choices(info.annotation)
    if isinstance(value, str) and (int in kinds or float in kinds):
        number = r"[+-]?\d+" if float not in kinds else r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"
        if re.fullmatch(number, value.strip()):
            return f"Remove the quotes: {value.strip()}."
    if int in kinds and isinstance(value, float) and math.isfinite(value) and value == int(value):
        return f"Write it without a decimal point or exponent: {int(value)}."
    if bool in kinds:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return f"Write it unquoted and lower-case: {value.strip().lower()}."
        if type(value) is int and value in (0, 1):
            return f"Write {'true' if value else 'false'}."
    if all(get_origin(kind) is list for kind in kinds) and accepts([value]):
        return f"Write a list: [{format_value(value)}]."
    if choices is not None and isinstance(value, list):
        unknown = [item for item in value if item not in choices]
        if unknown:
            return f"Unknown: {quoted(unknown)}.{did_you_mean(unknown[0], choices)}"
    if choices is not None and isinstance(value, str):
        folded = {str(choice).lower(): choice for choice in choices}
        if value.lower() in folded:
            return f"Write {folded[value.lower()]!r}."
        return did_you_mean(value, [choice for choice in choices if choice]).strip()
    if (str in kinds or choices is not None) and not isinstance(value, str):
        return 'Strings need double quotes in TOML: key = "value".'
    return ""


def _accepts(adapter, value):
    try:
        adapter.validate_python(value)
    except ValidationError:
        return False
    return True


def check_table(model, table, prefix, unknown):
    """Validate a TOML table against a model, key by key.

    Args:
        model: a `Section` subclass.
        table: the table as read (a dict).
        prefix: the key path of the table (``"train"``, ``"model.backbone_options"``).
        unknown: ``unknown(key, value) -> Problem`` for a key the model does not have.

    Returns:
        ``(values, problems)``: the valid keys' typed values plus the defaults of the absent
        keys (not the ``None`` of a default that depends on other keys), and a `Problem` per
        refused, unknown or missing key, in table order.
    """
    values, problems = {}, []
    fields = model.model_fields
    for key, value in table.items():
        if key not in fields:
            problems.append(unknown(key, value))
            continue
        try:
            values[key] = _adapter(model, key).validate_python(value)
        except ValidationError as error:
            info = fields[key]
            hint = _hint(info, value, error.errors(), functools.partial(_accepts, _adapter(model, key)))
            problems.append(Problem(f"{prefix}.{key}", value, expected(info), hint))
    for key, info in fields.items():
        if key in table:
            continue
        if info.is_required():
            problems.append(Problem(f"{prefix}.{key}", MISSING, expected(info), f"Add it under [{prefix}]."))
            continue
        default = info.get_default(call_default_factory=True)
        if default is not None:
            values[key] = default
    return values, problems
