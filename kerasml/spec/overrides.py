"""``--set key.path=value`` overrides: the value is read as a TOML value, then set in the spec.

``train.max_steps=100``, ``model.hdml=false``, ``eval.ks=[1,2,4]`` and
``model.backbone_options={feature_dim=32}`` are TOML values; a bare word, or any value given
to a string key, is taken as the string itself (``data.builtin=digits``,
``data.path=data/cub-20.h5``, ``experiment.name=2024``). Setting one data source
(``data.path`` / ``data.builtin``) drops the other one of the file.
"""

from typing import Literal, get_args, get_origin

from kerasml._validation import did_you_mean
from kerasml.spec import schema
from kerasml.spec.errors import Problem

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

__all__ = ["apply_overrides", "parse_value"]

_ALL_KEYS = [f"{section}.{key}" for section, keys in schema.KEYS.items() for key in keys]


def _takes_text(parts):
    """Whether a key path is a string key (its value is the text as written), or None for an unknown key."""
    section = parts[0]
    if len(parts) == 2 and section in schema.KEYS and parts[1] in schema.KEYS[section]:
        kind = schema.SECTION_MODELS[section].model_fields[parts[1]].annotation
        return kind is str or (get_origin(kind) is Literal and all(isinstance(c, str) for c in get_args(kind)))
    # the loss's arguments, and the backbone's (at any depth), are checked against their constructors
    if (section == "loss" and len(parts) == 2) or (parts[:2] == ["model", "backbone_options"] and len(parts) > 2):
        return False
    return None


def parse_value(text, takes_text=False):
    """The value of ``--set KEY=TEXT``: ``TEXT`` read as a TOML value, else the text itself.

    Args:
        text: what follows ``=``.
        takes_text: the key is a string key: anything but a TOML string is kept as text.

    Returns:
        The value.

    Example:

    >>> parse_value("[1, 2]"), parse_value("digits"), parse_value("2024", takes_text=True)
    ([1, 2], 'digits', '2024')
    """
    value = text
    try:
        parsed = tomllib.loads(f"v = {text}")
        if list(parsed) == ["v"]:
            value = parsed["v"]
    except tomllib.TOMLDecodeError:
        pass
    return text if takes_text and not isinstance(value, str) else value


def apply_overrides(raw, overrides):
    """Set each ``KEY=VALUE`` of ``overrides`` in ``raw`` (a nested dict, changed in place).

    Args:
        raw: the spec as read.
        overrides: ``"key.path=value"`` strings, or one such string.

    Returns:
        ``(problems, origins)``: a `Problem` per override that cannot apply (no ``=``, an
        unknown key), and ``{key path: "KEY=VALUE"}`` for those that did.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    problems, origins = [], {}
    for item in overrides or ():
        text = str(item)
        key, sep, value_text = text.partition("=")
        key = key.strip()
        where = f"--set {text}"
        if not sep or not key:
            problems.append(Problem(key or "--set", text, "KEY=VALUE, e.g. train.batch_size=32", f"In {where}."))
            continue
        parts = key.split(".")
        takes_text = None if any(not part for part in parts) else _takes_text(parts)
        if takes_text is None:
            if parts[0] in schema.KEYS and len(parts) == 1:
                expected = f"a key inside [{key}], e.g. {key}.{schema.KEYS[key][0]}"
                hint = f"Set one key at a time (in {where})."
            else:
                expected = "a known spec key"
                moved = f"{key} has moved: use {schema.MOVED[key]}." if key in schema.MOVED else ""
                hint = f"{moved or did_you_mean(key, _ALL_KEYS).strip()} (in {where})".strip()
            problems.append(Problem(key, value_text, expected, hint))
            continue
        table = raw
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(table.setdefault(part, {}), dict):
                problems.append(Problem(".".join(parts[: depth + 1]), table[part], "a table", f"Cannot apply {where}."))
                break
            table = table[part]
        else:
            value = parse_value(value_text.strip(), takes_text)
            table[parts[-1]] = value
            origins[key] = text
            # setting one data source replaces the other one of the file (not one set by --set)
            other = {"data.path": "builtin", "data.builtin": "path"}.get(key)
            if other and value and f"data.{other}" not in origins:
                raw["data"].pop(other, None)
    return problems, origins
