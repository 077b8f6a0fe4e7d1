"""What can be wrong with a spec: `Problem`, `SpecError`, and how values are shown in messages."""

import dataclasses

import tomli_w

__all__ = ["MISSING", "Problem", "SpecError", "format_value", "quoted"]


class _Missing:
    def __repr__(self):
        return "<missing>"

    def __reduce__(self):
        return "MISSING"  # unpickles as the module's singleton


#: The ``value`` of a `Problem` about a required key that is absent.
MISSING = _Missing()


def format_value(value):
    """A value as a spec would write it, on one line (``[1, 2]``, ``"text"``, ``{ a = 1 }``, ``inf``).

    Args:
        value: any value; one TOML cannot hold is shown with `repr`.

    Returns:
        A string.

    Example:

    >>> format_value([[5000, 500], [8000, 64]]), format_value("a b"), format_value({"variant": "caffe"})
    ('[[5000, 500], [8000, 64]]', '"a b"', '{ variant = "caffe" }')
    """
    if isinstance(value, dict):
        items = ", ".join(f"{_key(key)} = {format_value(item)}" for key, item in value.items())
        return f"{{ {items} }}" if items else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    try:
        return tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")
    except TypeError:
        return repr(value)


def quoted(choices):
    """``'"a", "b"'``: choices as a problem lists them."""
    return ", ".join(f'"{choice}"' for choice in choices)


def _key(key):
    return tomli_w.dumps({str(key): 0}).rsplit(" = ", 1)[0]


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a spec.

    Attributes:
        key: the key path (``"train.batch_size"``), or where in the file for a syntax error.
        value: the value received (`MISSING` for an absent key).
        expected: what is accepted, in words.
        hint: how to fix it (may be empty).
    """

    key: str
    value: object
    expected: str
    hint: str = ""

    def __str__(self):
        received = "nothing (the key is missing)" if self.value is MISSING else format_value(self.value)
        text = f"{self.key}: expected {self.expected}; received {received}."
        return f"{text} {self.hint}" if self.hint else text


class SpecError(ValueError):
    """A spec with one or more problems; ``str(error)`` lists them all, one per line.

    Attributes:
        problems: the `Problem` list, in file order (section by section).
        source: the spec's file name (or ``"<string>"``).
    """

    def __init__(self, problems, source="<string>"):
        self.problems = list(problems)
        self.source = str(source)
        super().__init__(self._message())

    def __reduce__(self):
        return (type(self), (self.problems, self.source))

    def _message(self):
        count = len(self.problems)
        lines = [f"{self.source}: {count} problem{'s' if count != 1 else ''} in the spec:"]
        lines += [f"  {self.source}: {problem}" for problem in self.problems]
        return "\n".join(lines)

    def __str__(self):
        return self._message()
