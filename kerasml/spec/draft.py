"""A spec being resolved (`Draft`), and its first pass: every table checked against its model."""

from kerasml._validation import did_you_mean
from kerasml.spec import schema
from kerasml.spec.errors import Problem
from kerasml.spec.fields import check_table

__all__ = ["Draft", "Skip", "check_tables"]


class Skip(Exception):
    """A rule reads a key that is invalid or absent: the rule does not apply."""


class Draft:
    """A spec being resolved: the typed values of the keys that passed, and the problems so far.

    Args:
        raw: the spec as read, overrides applied (a nested dict).
        check_files: whether to open ``data.path`` and check that ``model.weights`` exists.

    Attributes:
        values: ``{section: {key: typed value}}``, defaults included; the loss's arguments
            are ``values["loss"]["params"]``.
        problems: the `Problem` list.
        bad: the key paths that have a problem (rules reading them are skipped).
        loss: the loss instance, once built.
    """

    def __init__(self, raw, check_files=True):
        self.raw = raw
        self.check_files = check_files
        self.values = {section: {} for section in schema.SECTIONS}
        self.problems = []
        self.bad = set()
        self.loss = None
        self.loss_params = {}  # [loss] keys other than type, as read
        self.counts = None  # (split counts of the train data, where they come from, how to get more)

    def problem(self, key, value, expected, hint=""):
        """Record a problem; rules reading ``key`` are skipped from now on."""
        self.problems.append(Problem(key, value, expected, hint))
        self.bad.add(key)

    def get(self, *keys):
        """The values of ``"section.key"`` paths (one value for one key), or `Skip` if one is bad or absent."""
        found = []
        for key in keys:
            section, name = key.split(".", 1)
            if key in self.bad or name not in self.values[section]:
                raise Skip
            found.append(self.values[section][name])
        return found[0] if len(found) == 1 else found

    def set(self, key, value):
        """Set the value of ``"section.key"``."""
        section, name = key.split(".", 1)
        self.values[section][name] = value


def check_tables(draft):
    """Check every table of ``draft.raw`` against its model; unknown sections and keys are problems."""
    for section, value in draft.raw.items():
        if section in schema.SECTIONS:
            continue
        owners = [name for name, keys in schema.KEYS.items() if section in keys]
        if owners and not isinstance(value, dict):
            hint = f"Put it under [{owners[0]}]: {owners[0]}.{section}."
        else:
            hint = did_you_mean(section, schema.SECTIONS).strip()
            hint = hint or f"The sections are {', '.join(f'[{name}]' for name in schema.SECTIONS)}."
        draft.problem(section, section if isinstance(value, dict) else value, "a known section", hint)
    for section in schema.SECTIONS:
        table = draft.raw.get(section, {})
        if not isinstance(table, dict):
            hint = f"Write [{section}] on a line, then key = value lines."
            owners = [name for name, keys in schema.KEYS.items() if section in keys]
            if owners:
                hint += f" (The key is {owners[0]}.{section}.)"
            draft.problem(section, table, f"a table [{section}]", hint)
            table = {}
        if section == "loss":
            draft.loss_params = {key: value for key, value in table.items() if key not in ("type", "memory")}
            table = {key: value for key, value in table.items() if key in ("type", "memory")}
        values, problems = check_table(schema.SECTION_MODELS[section], table, section, _unknown_key(section))
        draft.values[section] = values
        for problem in problems:
            draft.problem(problem.key, problem.value, problem.expected, problem.hint)


def _unknown_key(section):
    def unknown(key, value):
        path = f"{section}.{key}"
        expected = f"a key of [{section}]"
        if path in schema.MOVED:
            return Problem(path, value, expected, f"{path} has moved: use {schema.MOVED[path]}.")
        owners = [name for name, keys in schema.KEYS.items() if key in keys and name != section]
        if owners:
            return Problem(path, value, expected, f"{key} belongs to [{owners[0]}]: {owners[0]}.{key}.")
        known = schema.KEYS[section]
        hint = did_you_mean(key, known).strip()
        if not hint:
            elsewhere = {}
            for owner, keys in schema.KEYS.items():
                for name in keys:
                    elsewhere.setdefault(name, f"{owner}.{name}")
            hint = did_you_mean(key, elsewhere, cutoff=0.75).strip()
        return Problem(path, value, expected, hint or f"Known keys of [{section}]: {', '.join(known)}.")

    return unknown
