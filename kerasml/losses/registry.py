"""The registry of kerasml's losses: one list behind `get`, the spec, the CLI and the docs.

Each loss class declares its names (``names``: the spec name first, then
aliases), its layout and whether HDML applies; this module only collects them.
A new loss is one file plus one entry in `LOSSES` (``kerasml/losses/__init__.py``).
"""

import dataclasses
import re

import keras

from kerasml._validation import did_you_mean


@dataclasses.dataclass(frozen=True)
class LossEntry:
    """One loss as the docs, ``kerasml losses`` and error messages list it.

    Attributes:
        name: the canonical spec name (``loss.type``), e.g. ``"npair"``.
        cls: the `MetricLoss` subclass.
        aliases: the other accepted spellings (the class name is always accepted).
        layout: the batch layout in one line.
        hdml: when HDML can synthesise for it, in one line (``""``: never).
    """

    name: str
    cls: type
    aliases: tuple
    layout: str
    hdml: str


def _key(name):
    """Names compare lower-cased, without ``_``, ``-``, spaces or a trailing ``loss``."""
    key = re.sub(r"[\s_\-]", "", str(name)).lower()
    return key[: -len("loss")] if key.endswith("loss") and len(key) > 4 else key


class Registry:
    """Name → loss class lookups over an ordered list of loss classes."""

    def __init__(self, classes):
        self.classes = tuple(classes)
        self._by_key = {}
        for cls in self.classes:
            for spelling in (*cls.names, cls.__name__):
                owner = self._by_key.setdefault(_key(spelling), cls)
                if owner is not cls:
                    raise ValueError(f"Loss name {spelling!r} of {cls.__name__} is taken by {owner.__name__}.")

    def catalog(self):
        """Every loss as a `LossEntry`, in registry order."""
        return [
            LossEntry(
                name=cls.names[0],
                cls=cls,
                aliases=tuple(cls.names[1:]),
                layout=cls.layout_summary or cls.batch_layout.description,
                hdml=cls.hdml_summary,
            )
            for cls in self.classes
        ]

    def names(self):
        """The canonical spec names."""
        return [cls.names[0] for cls in self.classes]

    def loss_class(self, name):
        """The loss class for a name or alias (case- and separator-insensitive, ``Loss`` suffix optional).

        Raises:
            ValueError: for an unknown name, listing the known ones and the closest.
        """
        cls = self._by_key.get(_key(name))
        if cls is not None:
            return cls
        spellings = [spelling for cls in self.classes for spelling in (*cls.names, cls.__name__)]
        hint = did_you_mean(name, spellings, key=_key)
        raise ValueError(f"Unknown kerasml loss {name!r}. Known names: {', '.join(self.names())}.{hint}")

    def get(self, identifier):
        """A loss from a name, a config dict or an instance (see `kerasml.losses.get`)."""
        if isinstance(identifier, keras.losses.Loss):
            return identifier
        if isinstance(identifier, str):
            return self.loss_class(identifier)()
        if isinstance(identifier, dict):
            if "type" in identifier:
                params = {k: v for k, v in identifier.items() if k != "type"}
                return self.loss_class(identifier["type"])(**params)
            if "class_name" in identifier:
                cls = self.loss_class(identifier["class_name"])
                return cls.from_config(dict(identifier.get("config", {})))
        raise ValueError(
            "Invalid value for argument `identifier`. Expected a loss name, a config "
            "dict with 'class_name' or 'type', or a keras.losses.Loss. "
            f"Received: identifier={identifier!r}"
        )


_DEFAULT = []


def set_default(registry):
    """Make ``registry`` the one `get_loss` reads (``kerasml/losses/__init__.py`` sets `LOSSES`' registry)."""
    _DEFAULT[:] = [registry]


def get_loss(identifier):
    """`Registry.get` of the default registry: for losses that wrap another (`CrossBatchMemory`).

    Raises:
        ValueError: for an unknown name (listing the known ones), or before a default registry is set.
    """
    if isinstance(identifier, keras.losses.Loss):
        return identifier
    if not _DEFAULT:
        raise ValueError("No loss registry is set: import kerasml.losses first.")
    return _DEFAULT[0].get(identifier)
