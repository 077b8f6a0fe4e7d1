"""Experiment specs: one TOML file per experiment, validated whole before any work starts.

A spec has six sections whose keys map 1:1 onto the arguments of the objects an experiment
builds (`kerasml.data`, `kerasml.models.backbones.get`, `kerasml.models.HDMLModel`, a
`kerasml.losses` loss, the optimizers and the evaluation)::

    [experiment]
    name = "cub_npair_hdml"

    [data]
    path = "data/cub20.h5"          # a store written by `kerasml ingest cub --classes 20`

    [model]
    backbone = "googlenet"

    [loss]
    type = "npair"
    l2_reg = 0.0015

    [train]
    batch_size = 16
    max_steps = 8000

`load_spec` / `parse_spec` read a spec, apply ``--set key.path=value`` overrides, fill every
default and check everything at once: a `SpecError` lists *every* problem (the key path, the
value received, what was expected and how to fix it), one per line. The result is a plain
nested dict in which every key is present and every value has its normalised type (ints,
floats, lists; the backbone and loss names in their canonical spelling), so that
``parse_spec(dump_spec(spec)) == spec``.

Schema (``*`` = required; "-" = no default):

==================================  =============================  ==================================================
key                                 default                        accepted values
==================================  =============================  ==================================================
``experiment.name`` *               -                              ``[A-Za-z0-9_.-]+`` (the run folder's prefix)
``experiment.seed``                 ``0``                          int >= 0
``experiment.output_dir``           ``"runs"``                     str: where run folders are written
``data.path`` / ``data.builtin``    ``""``                         exactly one: a store path (``kerasml ingest``), or
                                                                   ``"digits"`` / ``"procedural"`` (offline, ingested
                                                                   on the fly by the experiment)
``data.classes``                    ``100`` (procedural), ``0``    int in [2, 44352], procedural only; ``0`` = not
                                                                   applicable (a store or digits fixes the classes)
``data.image_size``                 227 (store), 32 (digits),      int in [8, 4096]: the model's input side
                                    64 (procedural)
``data.augment``                    ``true``                       bool: random crop + horizontal flip in training
``data.crop``                       ``"random"``                   ``"random"`` (plain ``image_size`` crop of the
                                                                   stored image: the HDML authors' 227 of 256) or
                                                                   ``"resized"`` (random resized crop)
``data.normalization``              ``"auto"``                     ``"auto"`` (the backbone's own preprocessing),
                                                                   ``"imagenet"``, ``"caffe"``, ``"tf"``, ``"unit"``,
                                                                   ``"none"`` or a backbone name
``data.workers``                    ``0``                          int >= 0 (``keras.utils.PyDataset`` workers)
``data.use_multiprocessing``        ``false``                      bool
``model.backbone`` *                -                              a `kerasml.models.backbones` name
``model.backbone_options``          ``{}``                         table of builder arguments (``variant``,
                                                                   ``feature_dim``, ``alpha``...)
``model.weights``                   ``""``                         ``""`` (random init), ``"imagenet"``
                                                                   (keras.applications only) or a ``.keras`` /
                                                                   ``.weights.h5`` / ``.h5`` / ``.mat`` / ``.npz`` file
``model.embedding_dim``             ``128``                        int >= 1
``model.hdml``                      ``true``                       bool: HDML on (`HDMLModel`) or the plain model
``model.alpha``                     ``90.0``                       float > 0 (eq. 1)
``model.beta``                      ``5000.0``                     float > 0 (eq. 2)
``model.soft_weight``               ``0.5``                        float in [0, 1] (λ in J_gen)
``model.softmax_factor``            ``10000.0``                    float >= 0 (c_soft)
``model.block_size``                ``64``                         int >= 1 (steps per J_avg block)
``model.generator_units``           ``512``                        int >= 1
``model.synthetic_statistics``      ``"batch"``                    ``"batch"`` or ``"update"``
``loss.type``                       ``"npair"``                    a `kerasml.losses` name; the loss's own
                                                                   arguments are further keys of ``[loss]``
                                                                   (``margin``, ``mining``, ``l2_reg``...), their
                                                                   defaults filled
``train.batch_size`` *              -                              int >= 2; even for N-pair/angular, a multiple of 3
                                                                   for ``mining = "structured"`` triplets
``train.max_steps`` *               -                              int >= 1
``train.learning_rate``             ``7e-05``                      float > 0 (backbone + projector)
``train.generator_learning_rate``   ``0.01``                       float > 0 (HDML generator)
``train.classifier_learning_rate``  ``0.001``                      float > 0 (HDML softmax classifier)
``train.weight_decay``              ``0.0``                        float >= 0 (``r · Σ ½‖W‖²``)
``train.lr_decay_steps``            ``[]``                         strictly increasing ints in [1, max_steps)
``train.lr_decay_factor``           ``0.5``                        float in (0, 1]: every learning rate is multiplied
                                                                   by it at each of ``lr_decay_steps``
``train.eval_every``                ``[[max_steps,                 ``[[until_step, every], ...]`` or one int ``every``
                                    max(1, max_steps // 10)]]``    (normalised to ``[[max_steps, every]]``)
``train.log_every``                 ``50``                         int >= 1
``train.checkpoint_every``          ``500``                        int >= 1: steps between ``last.keras`` saves
                                                                   (a resume restarts from the last one)
``train.checkpoint_metric``         ``"recall@1"`` (else the       a key the evaluation produces: ``"recall@K"`` (K
                                    first evaluation key)          in ``eval.ks``), ``"nmi"``, ``"f1"``, ``"map@r"``,
                                                                   ``"r_precision"`` (among ``eval.metrics``)
``eval.ks``                         ``[1, 2, 4, 8, 16, 32]``       distinct ints >= 1, each < the evaluated images
``eval.metrics``                    ``["recall", "nmi", "f1"]``    distinct names among ``"recall"``, ``"nmi"``,
                                                                   ``"f1"``, ``"map@r"``, ``"r_precision"``
``eval.split``                      ``"test"``                     ``"test"`` or ``"train"``
``eval.batch_size``                 ``64``                         int >= 1
==================================  =============================  ==================================================

``train.eval_every = [[5000, 500], [8000, 64]]`` evaluates at every multiple of 500 up to step
5000, then at every multiple of 64 up to 8000 (the HDML authors' schedule); after the last
``until_step`` the last ``every`` goes on until ``max_steps`` (see `evaluation_steps`).

Cross-field rules: N-pair and angular losses need an even ``train.batch_size`` (N = batch/2
pairs of N distinct classes), ``TripletLoss(mining="structured")`` a multiple of 3 and 2·batch/3
distinct classes (each anchor class with 2 or more images); ``model.hdml = true`` needs a loss
HDML can synthesise for (`kerasml.hdml.synthesis_layout`); every K in ``eval.ks`` must be
smaller than the number of images of the evaluated split. For builtin data these are checked
from the known sizes (digits: 5 train classes of 901 images, 5 test classes of 896;
procedural: ``classes // 2`` classes per split of 20 images each); for a store, with
``check_files=True``, from the store itself. Relative paths (``data.path``, ``model.weights``,
``experiment.output_dir``) are relative to the working directory, as for ``kerasml ingest``.

Overrides are ``key.path=value`` strings whose value is read as a TOML value
(``train.max_steps=100``, ``model.hdml=false``, ``eval.ks=[1,2,4]``); a bare word, or any
value given to a string key, is taken as a string (``data.builtin=digits``,
``data.path=data/cub20.h5``, ``experiment.name=2024``).

The study's command-line flags (``reference/hdml-study.txt``) map onto spec keys
(`STUDY_FLAGS`):

=========================  ========================  =============================================
study flag                 spec key                  notes
=========================  ========================  =============================================
``-LossType``              ``loss.type``             the study's ``Triplet`` / ``NpairLoss`` are
                                                     accepted; its triplets are ``mining =
                                                     "structured"``
``-dataSet``               ``data.path``             the HDF5 store written by ``kerasml ingest``
``-batch_size``            ``train.batch_size``
``-batch_per_epoch``       ``train.eval_every``      the authors evaluate once per "epoch":
                                                     ``[[5000, init_batch_per_epoch], [max_steps,
                                                     batch_per_epoch]]``
``-max_steps``             ``train.max_steps``
``-init_learning_rate``    ``train.learning_rate``   backbone + projector
``-regular_factor``        ``train.weight_decay``    ``r · Σ ½‖W‖²``, the authors' ``Regular_factor``
``-Apply_HDML``            ``model.hdml``
=========================  ========================  =============================================

Example:

>>> spec = parse_spec('''
... [experiment]
... name = "demo"
... [data]
... builtin = "digits"
... [model]
... backbone = "small_cnn"
... [train]
... batch_size = 10
... max_steps = 300
... ''', overrides=["train.max_steps=100"])
>>> spec["train"]["max_steps"], spec["train"]["eval_every"], spec["data"]["image_size"]
(100, [[100, 10]], 32)
>>> spec["loss"]
{'type': 'npair', 'l2_reg': 0.002}
"""

import copy
import dataclasses
import difflib
import inspect
import itertools
import math
import os
import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

__all__ = [
    "DEFAULTS",
    "MISSING",
    "STUDY_FLAGS",
    "Problem",
    "SpecError",
    "dump_spec",
    "evaluation_steps",
    "load_spec",
    "parse_spec",
]

#: The study's flags and the spec keys that replace them (see the table in the module docstring).
STUDY_FLAGS = {
    "-LossType": "loss.type",
    "-dataSet": "data.path",
    "-batch_size": "train.batch_size",
    "-batch_per_epoch": "train.eval_every",
    "-max_steps": "train.max_steps",
    "-init_learning_rate": "train.learning_rate",
    "-regular_factor": "train.weight_decay",
    "-Apply_HDML": "model.hdml",
}

BUILTINS = ("digits", "procedural")
EVAL_METRICS = ("recall", "nmi", "f1", "map@r", "r_precision")
#: ``data.image_size`` when the spec does not set it: per builtin dataset, else for a store.
IMAGE_SIZE_DEFAULTS = {"store": 227, "digits": 32, "procedural": 64}
# The builtin digits (scikit-learn's load_digits, classes 0-4 train, 5-9 test).
_DIGITS = {"train": {"classes": 5, "images": 901, "min_per_class": 177}, "test": {"classes": 5, "images": 896}}
_MAX_IMAGE_SIZE = 4096
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]+")
_WEIGHT_SUFFIXES = (".keras", ".weights.h5", ".h5", ".mat", ".npz")
# Loss constructor arguments that kerasml sets itself.
_LOSS_RESERVED = ("self", "name", "reduction", "dtype")
# Backbone builder arguments that other keys (or kerasml) set.
_BACKBONE_RESERVED = {
    "input_shape": "it is set from data.image_size",
    "weights": "use model.weights",
    "include_top": "kerasml sets include_top=False",
    "pooling": 'kerasml sets pooling="avg"',
    "input_tensor": "kerasml builds the input",
    "classes": "kerasml builds no classification head",
    "classifier_activation": "kerasml builds no classification head",
}


# ----------------------------------------------------------------------------------------------
# Problems


class _Missing:
    def __repr__(self):
        return "<missing>"

    def __reduce__(self):
        return "MISSING"  # unpickles as the module's singleton


#: The ``value`` of a `Problem` about a required key that is absent.
MISSING = _Missing()


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
        received = "nothing (the key is missing)" if self.value is MISSING else _show(self.value)
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


class _Invalid(Exception):
    def __init__(self, expected, hint=""):
        super().__init__(expected)
        self.expected = expected
        self.hint = hint


def _suggest(word, candidates, prefix="Did you mean "):
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"{prefix}{close[0]!r}?" if close else ""


def _quoted(choices):
    return ", ".join(f'"{c}"' for c in choices)


# ----------------------------------------------------------------------------------------------
# Value kinds


class _Required:
    def __repr__(self):
        return "<required>"


_REQUIRED = _Required()
_DYNAMIC = object()  # default computed from other keys


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Kind:
    default = _REQUIRED

    def __init__(self, default=_REQUIRED):
        self.default = default

    def check(self, value):  # pragma: no cover - abstract
        raise NotImplementedError


class _Int(_Kind):
    def __init__(self, default=_REQUIRED, low=None, high=None):
        super().__init__(default)
        self.low, self.high = low, high

    @property
    def expected(self):
        if self.low is not None and self.high is not None:
            return f"an int in [{self.low}, {self.high}]"
        if self.low is not None:
            return f"an int >= {self.low}"
        return "an int"

    def check(self, value):
        if not _is_int(value):
            hint = ""
            if isinstance(value, float) and math.isfinite(value) and value == int(value):
                hint = f"Write it without a decimal point or exponent: {int(value)}."
            elif isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
                hint = f"Remove the quotes: {value.strip()}."
            raise _Invalid(self.expected, hint)
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise _Invalid(self.expected)
        return value


class _Float(_Kind):
    def __init__(self, default=_REQUIRED, low=None, high=None, low_open=False, high_open=False):
        super().__init__(default)
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    @property
    def expected(self):
        if self.low is not None and self.high is not None:
            return f"a number in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"a number {'>' if self.low_open else '>='} {self.low}"
        return "a finite number"

    def check(self, value):
        if not _is_number(value) or not math.isfinite(value):
            hint = ""
            if isinstance(value, str):
                try:
                    float(value)
                    hint = f"Remove the quotes: {value.strip()}."
                except ValueError:
                    pass
            raise _Invalid(self.expected, hint)
        value = float(value)
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise _Invalid(self.expected)
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            raise _Invalid(self.expected)
        return value


class _Bool(_Kind):
    expected = "true or false"

    def check(self, value):
        if not isinstance(value, bool):
            hint = ""
            if isinstance(value, str) and value.strip().lower() in ("true", "false"):
                hint = f"Write it unquoted and lower-case: {value.strip().lower()}."
            elif _is_int(value) and value in (0, 1):
                hint = f"Write {'true' if value else 'false'}."
            raise _Invalid(self.expected, hint)
        return value


class _Str(_Kind):
    def __init__(self, default=_REQUIRED, choices=None, pattern=None, allow_empty=True, describe=None):
        super().__init__(default)
        self.choices, self.pattern, self.allow_empty, self.describe = choices, pattern, allow_empty, describe

    @property
    def expected(self):
        if self.describe:
            return self.describe
        if self.choices:
            return f"one of {_quoted(self.choices)}"
        return "a string" if self.allow_empty else "a non-empty string"

    def check(self, value):
        if not isinstance(value, str):
            raise _Invalid(self.expected, 'Strings need double quotes in TOML: key = "value".')
        if self.choices is not None and value not in self.choices:
            folded = {c.lower(): c for c in self.choices}
            if value.lower() in folded:
                raise _Invalid(self.expected, f"Write {folded[value.lower()]!r}.")
            raise _Invalid(self.expected, _suggest(value, self.choices))
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise _Invalid(self.expected)
        if not self.allow_empty and not value:
            raise _Invalid(self.expected)
        return value


class _IntList(_Kind):
    expected = "a list of distinct ints >= 1, e.g. [1, 2, 4, 8]"

    def __init__(self, default=_REQUIRED, nonempty=True, increasing=False, expected=None):
        super().__init__(default)
        self.nonempty, self.increasing = nonempty, increasing
        if expected:
            self.expected = expected

    def check(self, value):
        if _is_int(value):
            raise _Invalid(self.expected, f"Write a list: [{value}].")
        if not isinstance(value, list) or not all(_is_int(v) and v >= 1 for v in value):
            raise _Invalid(self.expected)
        if self.nonempty and not value:
            raise _Invalid(self.expected)
        if len(set(value)) != len(value):
            raise _Invalid(self.expected, "Remove the repeated values.")
        if self.increasing and any(b <= a for a, b in itertools.pairwise(value)):
            raise _Invalid(self.expected, f"Sort them: {sorted(value)}.")
        return list(value)


class _StrList(_Kind):
    def __init__(self, default=_REQUIRED, choices=()):
        super().__init__(default)
        self.choices = choices

    @property
    def expected(self):
        return f"a non-empty list of distinct names among {_quoted(self.choices)}"

    def check(self, value):
        if isinstance(value, str):
            raise _Invalid(self.expected, f'Write a list: ["{value}"].')
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise _Invalid(self.expected)
        unknown = [v for v in value if v not in self.choices]
        if unknown:
            raise _Invalid(self.expected, f"Unknown: {_quoted(unknown)}. {_suggest(unknown[0], self.choices)}".strip())
        if len(set(value)) != len(value):
            raise _Invalid(self.expected, "Remove the repeated names.")
        return list(value)


class _Table(_Kind):
    expected = 'a table, e.g. { variant = "caffe" }'

    def check(self, value):
        if not isinstance(value, dict):
            raise _Invalid(self.expected)
        return copy.deepcopy(value)


class _Schedule(_Kind):
    """``train.eval_every``: checked here for shape, against ``max_steps`` later."""

    expected = "an int >= 1, or a list of [until_step, every] pairs of ints >= 1, e.g. [[5000, 500], [8000, 64]]"

    def check(self, value):
        if _is_int(value):
            if value < 1:
                raise _Invalid(self.expected)
            return value
        pairs = value if isinstance(value, list) else None
        if not pairs or not all(
            isinstance(p, list) and len(p) == 2 and all(_is_int(v) and v >= 1 for v in p) for p in pairs
        ):
            hint = ""
            if isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value):
                hint = f"For one pair write [[{value[0]}, {value[1]}]]."
            raise _Invalid(self.expected, hint)
        untils = [p[0] for p in pairs]
        if any(b <= a for a, b in itertools.pairwise(untils)):
            raise _Invalid(self.expected, "The until_steps must increase strictly from one pair to the next.")
        return [list(p) for p in pairs]


# ----------------------------------------------------------------------------------------------
# The schema

_SCHEMA = {
    "experiment": {
        "name": _Str(
            pattern=_NAME_PATTERN, describe="a name made of letters, digits, '_', '.' and '-' (e.g. \"cub_npair\")"
        ),
        "seed": _Int(0, low=0),
        "output_dir": _Str("runs", allow_empty=False),
    },
    "data": {
        "path": _Str("", describe="the path of a kerasml store (a .h5 file written by `kerasml ingest`)"),
        "builtin": _Str("", choices=("", *BUILTINS), describe=f"one of {_quoted(BUILTINS)}"),
        "classes": _Int(_DYNAMIC, low=0),
        "image_size": _Int(_DYNAMIC, low=8, high=_MAX_IMAGE_SIZE),
        "augment": _Bool(True),
        "crop": _Str("random", choices=("random", "resized")),
        "normalization": _Str("auto", allow_empty=False),
        "workers": _Int(0, low=0),
        "use_multiprocessing": _Bool(False),
    },
    "model": {
        "backbone": _Str(describe="a backbone name (see kerasml.models.backbones.available())"),
        "backbone_options": _Table({}),
        "weights": _Str("", describe='"", "imagenet" or the path of a .keras, .weights.h5, .h5, .mat or .npz file'),
        "embedding_dim": _Int(128, low=1),
        "hdml": _Bool(True),
        "alpha": _Float(90.0, low=0, low_open=True),
        "beta": _Float(5000.0, low=0, low_open=True),
        "soft_weight": _Float(0.5, low=0, high=1),
        "softmax_factor": _Float(1e4, low=0),
        "block_size": _Int(64, low=1),
        "generator_units": _Int(512, low=1),
        "synthetic_statistics": _Str("batch", choices=("batch", "update")),
    },
    "loss": {
        "type": _Str("npair", allow_empty=False, describe="a kerasml loss name (see `kerasml losses`)"),
    },
    "train": {
        "batch_size": _Int(low=2),
        "max_steps": _Int(low=1),
        "learning_rate": _Float(7e-5, low=0, low_open=True),
        "generator_learning_rate": _Float(1e-2, low=0, low_open=True),
        "classifier_learning_rate": _Float(1e-3, low=0, low_open=True),
        "weight_decay": _Float(0.0, low=0),
        "lr_decay_steps": _IntList(
            [], nonempty=False, increasing=True, expected="a list of strictly increasing ints >= 1, e.g. [5632, 6848]"
        ),
        "lr_decay_factor": _Float(0.5, low=0, high=1, low_open=True),
        "eval_every": _Schedule(_DYNAMIC),
        "log_every": _Int(50, low=1),
        "checkpoint_every": _Int(500, low=1),
        "checkpoint_metric": _Str(_DYNAMIC, allow_empty=False),
    },
    "eval": {
        "ks": _IntList([1, 2, 4, 8, 16, 32]),
        "metrics": _StrList(["recall", "nmi", "f1"], choices=EVAL_METRICS),
        "split": _Str("test", choices=("test", "train")),
        "batch_size": _Int(64, low=1),
    },
}
SECTIONS = tuple(_SCHEMA)


def _static_defaults():
    out = {}
    for section, fields in _SCHEMA.items():
        out[section] = {
            key: copy.deepcopy(kind.default)
            for key, kind in fields.items()
            if kind.default is not _REQUIRED and kind.default is not _DYNAMIC
        }
    out["data"]["classes"] = 100
    out["data"]["image_size"] = IMAGE_SIZE_DEFAULTS["store"]
    out["train"]["checkpoint_metric"] = "recall@1"
    return out


#: Every default, section by section (required keys absent). Four depend on other keys:
#: ``data.image_size`` (see `IMAGE_SIZE_DEFAULTS`; 227 here is the default for a store),
#: ``data.classes`` (100 for builtin procedural, 0 = not applicable otherwise),
#: ``train.eval_every`` (``[[max_steps, max(1, max_steps // 10)]]``, absent here) and
#: ``train.checkpoint_metric`` (``"recall@1"``, or the first key the evaluation produces when
#: ``eval`` has no Recall@1); the loss's own arguments default to its constructor's defaults.
DEFAULTS = _static_defaults()

_ALL_KEYS = [f"{section}.{key}" for section, fields in _SCHEMA.items() for key in fields]


# ----------------------------------------------------------------------------------------------
# TOML


def _toml_string(text):
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(key):
    key = str(key)
    return key if re.fullmatch(r"[A-Za-z0-9_\-]+", key) else _toml_string(key)


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"dump_spec cannot write {type(value).__name__} values to TOML: {value!r}")


def _show(value):
    try:
        return _toml_value(value)
    except TypeError:
        return repr(value)


def dump_spec(spec):
    """Write a (resolved) spec as TOML text; ``parse_spec(dump_spec(spec)) == spec``.

    Tables are written in schema order (unknown sections after them); nested tables such as
    ``model.backbone_options`` as inline tables.

    Args:
        spec: a nested dict of str, int, float, bool, lists and dicts.

    Returns:
        TOML text.
    """
    lines = []
    order = [*SECTIONS, *(s for s in spec if s not in _SCHEMA)]
    for section in order:
        if section not in spec:
            continue
        table = spec[section]
        if not isinstance(table, dict):
            lines.insert(0, f"{_toml_key(section)} = {_toml_value(table)}")
            continue
        if lines:
            lines.append("")
        lines.append(f"[{_toml_key(section)}]")
        known = list(_SCHEMA.get(section, {}))
        keys = [k for k in known if k in table] + [k for k in table if k not in known]
        for key in keys:
            lines.append(f"{_toml_key(key)} = {_toml_value(table[key])}")
    return "\n".join(lines) + "\n"


def _parse_toml(text, source):
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        match = re.search(r"at line (\d+), column (\d+)", message)
        if match:
            line, column = int(match.group(1)), int(match.group(2))
            lines = text.splitlines()
            shown = lines[line - 1] if 0 < line <= len(lines) else ""
            where = f"line {line}, column {column}"
        elif "end of document" in message:
            lines = text.splitlines() or [""]
            shown, where = lines[-1], f"line {len(lines)} (end of file)"
        else:
            shown, where = "", "TOML syntax"
        hint = f"TOML says: {message}."
        if re.search(r"=\s*[A-Za-z_]", shown) and '"' not in shown:
            hint += ' Strings need double quotes: key = "value".'
        raise SpecError([Problem(where, shown, "valid TOML", hint)], source) from None


# ----------------------------------------------------------------------------------------------
# Overrides


def _kind_at(parts):
    """The schema kind of a key path, ``"free"`` for keys checked later (loss, backbone options), or None."""
    if len(parts) < 2 or parts[0] not in _SCHEMA:
        return None
    section, key = parts[0], parts[1]
    if section == "loss":
        return _SCHEMA["loss"]["type"] if key == "type" and len(parts) == 2 else ("free" if len(parts) == 2 else None)
    if section == "model" and key == "backbone_options":
        return "free" if len(parts) >= 3 else _SCHEMA["model"]["backbone_options"]
    if len(parts) == 2 and key in _SCHEMA[section]:
        return _SCHEMA[section][key]
    return None


def _parse_override_value(text, kind):
    value = text
    try:
        parsed = tomllib.loads(f"v = {text}")
        if list(parsed) == ["v"]:
            value = parsed["v"]
    except tomllib.TOMLDecodeError:
        pass
    if isinstance(kind, _Str) and not isinstance(value, str):
        value = text  # a string key takes the text verbatim (experiment.name=2024)
    return value


def _apply_overrides(raw, overrides, problems, origins):
    if isinstance(overrides, str):
        overrides = [overrides]
    for item in overrides or ():
        text = str(item)
        key, sep, value_text = text.partition("=")
        key = key.strip()
        where = f"--set {text}"
        if not sep or not key:
            problems.append(Problem(key or "--set", text, "KEY=VALUE, e.g. train.batch_size=32", f"In {where}."))
            continue
        parts = key.split(".")
        kind = None if any(not p for p in parts) else _kind_at(parts)
        if kind is None:
            if parts[0] in _SCHEMA and len(parts) == 1:
                expected = f"a key inside [{parts[0]}], e.g. {parts[0]}.{next(iter(_SCHEMA[parts[0]]))}"
                hint = f"Set one key at a time (in {where})."
            else:
                expected = "a known spec key"
                hint = f"{_suggest(key, _ALL_KEYS)} (in {where})".strip()
            problems.append(Problem(key, value_text, expected, hint))
            continue
        value = _parse_override_value(value_text.strip(), kind)
        table = raw
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(table.setdefault(part, {}), dict):
                prefix = ".".join(parts[: depth + 1])
                problems.append(Problem(prefix, table[part], "a table", f"Cannot apply {where}."))
                break
            table = table[part]
        else:
            table[parts[-1]] = value
            origins[key] = text
            # setting one data source replaces the other one of the file (not one set by --set)
            other = {"data.path": "builtin", "data.builtin": "path"}.get(key)
            if other and value and f"data.{other}" not in origins and isinstance(raw.get("data"), dict):
                raw["data"].pop(other, None)


# ----------------------------------------------------------------------------------------------
# Resolution


class _Resolver:
    def __init__(self, raw, origins, check_files):
        self.raw = raw
        self.origins = origins
        self.check_files = check_files
        self.problems = []
        self.bad = set()  # key paths whose value was rejected (checks depending on them are skipped)
        self.spec = {}
        self.loss = None  # the loss instance, once built
        self.store_counts = None  # per-split class and image counts of data.path

    # -- helpers
    def problem(self, key, value, expected, hint=""):
        self.problems.append(Problem(key, value, expected, hint))
        self.bad.add(key)

    def ok(self, *keys):
        return not any(k in self.bad for k in keys)

    def get(self, key):
        section, name = key.split(".", 1)
        return self.spec[section][name]

    # -- passes
    def run(self):
        for section in self.raw:
            if section not in _SCHEMA:
                value = self.raw[section]
                if not isinstance(value, dict) and any(section in fields for fields in _SCHEMA.values()):
                    owner = next(s for s, fields in _SCHEMA.items() if section in fields)
                    hint = f"Put it under [{owner}]: {owner}.{section}."
                else:
                    hint = _suggest(section, SECTIONS) or f"The sections are {', '.join(f'[{s}]' for s in SECTIONS)}."
                self.problem(section, value if not isinstance(value, dict) else section, "a known section", hint)
        for section, fields in _SCHEMA.items():
            self.spec[section] = self._section(section, fields)
        self._data()
        self._model()
        self._loss()
        self._train()
        self._eval()
        self._batch_rules()
        if self.check_files:
            self._files()
        self._dataset_rules()
        return self.spec

    def _section(self, section, fields):
        table = self.raw.get(section, {})
        if not isinstance(table, dict):
            self.problem(
                section, table, f"a table [{section}]", f"Write [{section}] on a line, then key = value lines."
            )
            table = {}
        out = {}
        for key, value in table.items():
            path = f"{section}.{key}"
            if section == "loss" and key != "type":
                out[key] = value  # the loss's own arguments, checked in _loss
                continue
            if key not in fields:
                self.problem(path, value, f"a key of [{section}]", self._unknown_hint(section, key))
                continue
            try:
                out[key] = fields[key].check(value)
            except _Invalid as error:
                self.problem(path, value, error.expected, error.hint)
        for key, kind in fields.items():
            path = f"{section}.{key}"
            if key in out or path in self.bad or kind.default is _DYNAMIC:
                continue
            if kind.default is _REQUIRED:
                self.problem(path, MISSING, kind.expected, f"Add it under [{section}].")
            else:
                out[key] = copy.deepcopy(kind.default)
        # schema order, then the loss's own arguments
        ordered = {key: out[key] for key in fields if key in out}
        ordered.update({key: value for key, value in out.items() if key not in ordered})
        return ordered

    def _unknown_hint(self, section, key):
        known = list(_SCHEMA[section])
        owners = [s for s, fields in _SCHEMA.items() if key in fields and s != section]
        if owners:
            return f"{key} belongs to [{owners[0]}]: {owners[0]}.{key}."
        close = _suggest(key, known)
        if close:
            return close
        elsewhere = difflib.get_close_matches(key, [k.split(".", 1)[1] for k in _ALL_KEYS], n=1, cutoff=0.75)
        if elsewhere:
            owner = next(k for k in _ALL_KEYS if k.split(".", 1)[1] == elsewhere[0])
            return f"Did you mean {owner!r}?"
        return f"Known keys of [{section}]: {', '.join(known)}."

    # -- [data]
    def _data(self):
        data = self.spec["data"]
        path, builtin = data.get("path", ""), data.get("builtin", "")
        if self.ok("data.path", "data.builtin"):
            if bool(path) == bool(builtin):
                self.problem(
                    "data",
                    {"path": path, "builtin": builtin},
                    "exactly one of data.path (a store from `kerasml ingest`) or data.builtin "
                    '("digits" or "procedural")',
                    "Remove one of them."
                    if path
                    else 'Add e.g. path = "data/cub20.h5" or builtin = "digits" under [data].',
                )
                self.bad.update(("data.path", "data.builtin"))
        source = builtin or ("store" if path else None)
        classes = data.get("classes")
        if "data.classes" not in self.bad:
            if builtin == "procedural":
                from kerasml.data.sources.procedural import MAX_CLASSES

                if classes is None:
                    classes = 100
                elif not 2 <= classes <= MAX_CLASSES:
                    self.problem(
                        "data.classes",
                        classes,
                        f"an int in [2, {MAX_CLASSES}] (the procedural classes; half train, half test)",
                    )
            elif classes not in (None, 0) and source is not None:
                self.problem(
                    "data.classes",
                    classes,
                    'no value (data.classes applies to builtin = "procedural" only)',
                    "A store's classes are chosen at ingest (`kerasml ingest ... --classes N`); digits has 10. "
                    "Remove the key (or set it to 0).",
                )
            else:
                classes = 0
        data["classes"] = classes if "data.classes" not in self.bad else data.get("classes")
        if "image_size" not in data and "data.image_size" not in self.bad:
            data["image_size"] = IMAGE_SIZE_DEFAULTS.get(source or "store")
        self.spec["data"] = {key: data[key] for key in _SCHEMA["data"] if key in data}
        if "data.normalization" not in self.bad and "normalization" in data:
            self._check_normalization(data["normalization"])

    def _check_normalization(self, value):
        from kerasml.data.augment import NORMALIZATIONS
        from kerasml.models import backbones

        if value == "auto" or value.lower() in NORMALIZATIONS:
            self.spec["data"]["normalization"] = value.lower()
            return
        try:
            backbones.canonical_name(value)
        except ValueError:
            choices = ["auto", *NORMALIZATIONS]
            self.problem(
                "data.normalization",
                value,
                f'one of {_quoted(choices)} or a backbone name ("auto" = the backbone\'s own preprocessing)',
                _suggest(value, choices),
            )

    # -- [model]
    def _model(self):
        from kerasml.models import backbones

        model = self.spec["model"]
        canonical = None
        if "backbone" in model:
            try:
                canonical = backbones.canonical_name(model["backbone"])
                model["backbone"] = canonical
            except ValueError as error:
                self.problem("model.backbone", model["backbone"], "a backbone name", str(error))
        if canonical and "backbone_options" in model:
            self._check_backbone_options(canonical, model["backbone_options"])
        if canonical and "weights" in model and "model.weights" not in self.bad:
            self._check_weights(canonical, model["weights"])
        size = self.spec["data"].get("image_size")
        if canonical == "googlenet" and size is not None and size < 32:
            self.problem(
                "data.image_size",
                size,
                "an int >= 32 for the googlenet backbone (its pooling windows need 32 px)",
                'Use a larger image_size, or backbone = "small_cnn" for tiny images.',
            )

    def _check_backbone_options(self, canonical, options):
        import keras

        from kerasml.models import backbones

        if canonical == "googlenet":
            builder = backbones.googlenet
        elif canonical == "small_cnn":
            builder = backbones.small_cnn
        else:
            builder = getattr(keras.applications, canonical, None)
        if builder is None:
            return
        accepted = [p for p in inspect.signature(builder).parameters if p not in _BACKBONE_RESERVED]
        for key, value in options.items():
            path = f"model.backbone_options.{key}"
            if key in _BACKBONE_RESERVED:
                self.problem(path, value, f"no {key} ({_BACKBONE_RESERVED[key]})", "Remove it.")
            elif key not in accepted:
                hint = _suggest(key, accepted) or f"{canonical} accepts: {', '.join(accepted)}."
                self.problem(path, value, f"an argument of the {canonical} backbone ({', '.join(accepted)})", hint)
        variant = options.get("variant")
        if canonical == "googlenet" and "variant" in options and variant not in backbones.GOOGLENET_VARIANTS:
            self.problem(
                "model.backbone_options.variant",
                variant,
                f"one of {_quoted(backbones.GOOGLENET_VARIANTS)}",
                '"caffe" is the HDML authors\' BVLC GoogLeNet, "bn" adds batch-norm.',
            )

    def _check_weights(self, canonical, weights):
        if weights in ("", "imagenet"):
            if weights == "imagenet" and canonical in ("googlenet", "small_cnn"):
                self.problem(
                    "model.weights",
                    weights,
                    f'"" or a weights file for {canonical} (no ImageNet weights can be downloaded for it)',
                    'For googlenet convert the BVLC Caffe weights to .mat/.npz (variant = "caffe", see '
                    "kerasml.models.backbones.load_caffe_weights), or pick a keras.applications backbone.",
                )
            return
        suffix = next((s for s in _WEIGHT_SUFFIXES if weights.endswith(s)), None)
        if suffix is None:
            self.problem("model.weights", weights, _SCHEMA["model"]["weights"].expected)
        elif suffix in (".mat", ".npz") and canonical != "googlenet":
            expected = "a .keras/.weights.h5 file (Caffe .mat/.npz weights are for googlenet)"
            self.problem("model.weights", weights, expected)

    # -- [loss]
    def _loss(self):
        from kerasml import losses

        table = self.spec["loss"]
        if "type" not in table:
            return
        try:
            cls = type(losses.get(table["type"]))
        except ValueError as error:
            self.problem("loss.type", table["type"], "a kerasml loss name (see `kerasml losses`)", str(error))
            for key in table:
                if key != "type":
                    self.bad.add(f"loss.{key}")
            return
        signature = inspect.signature(cls.__init__).parameters
        params = {name: p.default for name, p in signature.items() if name not in _LOSS_RESERVED}
        canonical = signature["name"].default.removesuffix("_loss") if "name" in signature else table["type"]
        resolved = {"type": canonical}
        ok = True
        for key, value in table.items():
            if key == "type":
                continue
            path = f"loss.{key}"
            if key not in params:
                accepted = ", ".join(params) or "none"
                hint = _suggest(key, params) or f"{cls.__name__} takes: {accepted}."
                if key in _LOSS_RESERVED:
                    hint = "kerasml sets it."
                self.problem(path, value, f"an argument of {cls.__name__} ({accepted})", hint)
                ok = False
                continue
            try:
                resolved[key] = _check_like(value, params[key])
            except _Invalid as error:
                self.problem(path, value, error.expected, error.hint)
                ok = False
        for key, default in params.items():
            if key not in resolved and default is not inspect.Parameter.empty and default is not None:
                resolved[key] = default
        ordered = {"type": canonical, **{k: resolved[k] for k in params if k in resolved}}
        self.spec["loss"] = ordered
        if cls.__name__ == "DivergenceLoss":
            self.problem(
                "loss.type",
                table["type"],
                "a loss on [B, D] embeddings (DivergenceLoss needs multi-head [B, M, D] embeddings, which "
                "experiments do not build)",
                "Use it in your own Keras model; in a spec pick npair, triplet, angular, contrastive or "
                "lifted_structure.",
            )
            return
        if not ok:
            return
        try:
            self.loss = losses.get({"type": canonical, **{k: v for k, v in ordered.items() if k != "type"}})
        except (ValueError, TypeError) as error:
            match = re.search(r"argument `(\w+)`", str(error))
            key = f"loss.{match.group(1)}" if match and match.group(1) in params else "loss.type"
            value = ordered.get(key.split(".", 1)[1], table["type"])
            self.problem(key, value, f"a valid {cls.__name__} argument", str(error))

    # -- [train]
    def _train(self):
        train = self.spec["train"]
        max_steps = train.get("max_steps")
        steps_ok = max_steps is not None
        schedule = train.get("eval_every", _DYNAMIC)
        if "train.eval_every" not in self.bad and steps_ok:
            if schedule is _DYNAMIC:
                schedule = [[max_steps, max(1, max_steps // 10)]]
            elif _is_int(schedule):
                schedule = [[max_steps, schedule]]
            train["eval_every"] = schedule
        elif "train.eval_every" not in self.bad and _is_int(schedule):
            train.pop("eval_every", None)
        if steps_ok and "lr_decay_steps" in train:
            late = [s for s in train["lr_decay_steps"] if s >= max_steps]
            if late:
                self.problem(
                    "train.lr_decay_steps",
                    train["lr_decay_steps"],
                    f"steps < train.max_steps = {max_steps}",
                    f"Remove {_show(late)} or raise train.max_steps.",
                )
        self.spec["train"] = {key: train[key] for key in _SCHEMA["train"] if key in train}

    # -- [eval]
    def _eval(self):
        ev, train = self.spec["eval"], self.spec["train"]
        metric = train.get("checkpoint_metric")
        if "train.checkpoint_metric" in self.bad or not self.ok("eval.ks", "eval.metrics"):
            return
        metrics, ks = ev["metrics"], ev["ks"]
        available = [f"recall@{k}" for k in ks] if "recall" in metrics else []
        available += [m for m in metrics if m != "recall"]
        if metric is None:  # the default: recall@1, else the first key the evaluation produces
            train["checkpoint_metric"] = "recall@1" if "recall@1" in available else available[0]
            self.spec["train"] = {key: train[key] for key in _SCHEMA["train"] if key in train}
            return
        lowered = metric.lower()
        if lowered in available:
            train["checkpoint_metric"] = lowered
            return
        match = re.fullmatch(r"recall@(\d+)", lowered)
        if match and "recall" in metrics:
            hint = f"Add {match.group(1)} to eval.ks, or pick one of the ks."
        elif match:
            hint = 'Add "recall" to eval.metrics.'
        elif lowered in EVAL_METRICS:
            hint = f'Add "{lowered}" to eval.metrics.'
        else:
            hint = _suggest(lowered, available)
        self.problem(
            "train.checkpoint_metric",
            metric,
            f"one of the evaluation's keys: {_quoted(available)}",
            hint,
        )

    # -- cross-field rules that need no files
    def _layout(self):
        """``"npair"``, ``"triplet"`` (structured) or ``"any"`` for the loss; None if unknown."""
        if self.loss is None:
            return None
        name = type(self.loss).__name__
        if name in ("NPairLoss", "AngularLoss"):
            return "npair"
        if name == "TripletLoss" and getattr(self.loss, "mining", None) == "structured":
            return "triplet"
        return "any"

    def _batch_rules(self):
        from kerasml import hdml

        layout = self._layout()
        batch = self.spec["train"].get("batch_size")
        loss_name = type(self.loss).__name__ if self.loss is not None else ""
        if layout == "npair" and batch is not None and batch % 2:
            self.problem(
                "train.batch_size",
                batch,
                f"an even int >= 2 for {self.spec['loss']['type']} ({loss_name} takes batches [a_1..a_N; p_1..p_N] "
                "of N = batch_size/2 pairs)",
                f"Use {batch - 1} or {batch + 1}.",
            )
        if layout == "triplet" and batch is not None and batch % 3:
            lower, upper = 3 * (batch // 3), 3 * (batch // 3 + 1)
            fix = f"Use {upper}" if lower < 3 else f"Use {lower} or {upper}"
            self.problem(
                "train.batch_size",
                batch,
                'a multiple of 3 for triplet with mining = "structured" (batches [anchors; positives; negatives])',
                f"{fix}.",
            )
        if self.spec["model"].get("hdml") and self.loss is not None:
            try:
                hdml.synthesis_layout(self.loss)
            except ValueError as error:
                key = "loss.mining" if loss_name == "TripletLoss" else "loss.type"
                value = self.spec["loss"].get(key.split(".", 1)[1])
                self.problem(key, value, "a loss HDML can synthesise for (model.hdml = true)", str(error))
                self.bad.add("model.hdml")

    # -- files
    def _files(self):
        data, model = self.spec["data"], self.spec["model"]
        path = data.get("path")
        if path and self.ok("data.path", "data.builtin"):
            from kerasml.data import StoreError, open_store

            try:
                with open_store(path) as store:
                    self.store_counts = _store_counts(store)
            except StoreError as error:
                self.problem(
                    "data.path",
                    path,
                    "a kerasml store written by `kerasml ingest`",
                    str(error),
                )
        weights = model.get("weights")
        if weights and weights != "imagenet" and self.ok("model.weights") and not Path(weights).is_file():
            self.problem(
                "model.weights",
                weights,
                "an existing weights file",
                f"No file at {weights} (relative paths start from the working directory {Path.cwd()}).",
            )

    # -- batch and evaluation sizes against the data
    def _dataset_rules(self):
        data = self.spec["data"]
        counts, where = None, None
        if self.ok("data.path", "data.builtin"):
            if data.get("builtin") == "digits":
                counts, where = _DIGITS, 'builtin "digits"'
            elif data.get("builtin") == "procedural" and self.ok("data.classes"):
                counts = _procedural_counts(data["classes"])
                where = f'builtin "procedural" with {data["classes"]} classes'
            elif data.get("path") and self.store_counts is not None:
                counts, where = self.store_counts, data["path"]
        if counts is None:
            return
        train = counts["train"]
        fix_data = (
            "raise data.classes"
            if data.get("builtin") == "procedural"
            else "ingest more classes (`kerasml ingest NAME --classes N`)"
            if data.get("path")
            else 'use builtin = "procedural" with enough data.classes'
        )
        if train["classes"] < 2:
            self.problem(
                "data.path" if data.get("path") else "data.builtin",
                data.get("path") or data.get("builtin"),
                "data whose train split has >= 2 classes",
                f"{where} has {train['classes']} train class(es); {fix_data}.",
            )
        layout = self._layout()
        batch = self.spec["train"].get("batch_size")
        paired = train.get("classes_with_pairs", train["classes"])
        if layout == "npair" and batch is not None and batch % 2 == 0:
            need = batch // 2
            if need > paired:
                self.problem(
                    "train.batch_size",
                    batch,
                    f"an even int <= {2 * paired} for {self.spec['loss']['type']} on {where}: N = batch_size/2 = "
                    f"{need} distinct classes per batch, but the train split has {paired} classes with 2+ images",
                    f"Use train.batch_size <= {2 * paired}, or {fix_data}.",
                )
        if layout == "triplet" and batch is not None and batch % 3 == 0:
            n = batch // 3
            if 2 * n > train["classes"] or n > paired:
                limit = 3 * min(train["classes"] // 2, paired)
                fix = f"Use train.batch_size <= {limit}, or {fix_data}." if limit >= 3 else f"Please {fix_data}."
                self.problem(
                    "train.batch_size",
                    batch,
                    f"a multiple of 3 <= {limit} for structured triplets on {where}: 2*batch_size/3 = {2 * n} "
                    f"distinct classes per batch ({n} anchor classes with 2+ images), but the train split has "
                    f"{train['classes']} classes ({paired} with 2+ images)",
                    fix,
                )
        ev = self.spec["eval"]
        if "ks" in ev and "split" in ev and "recall" in ev.get("metrics", ()):
            images = counts[ev["split"]]["images"]
            large = [k for k in ev["ks"] if k >= images]
            if large:
                self.problem(
                    "eval.ks",
                    ev["ks"],
                    f"every K < {images}, the images of the {ev['split']} split of {where}",
                    f"Remove {_show(large)} from eval.ks.",
                )


def _check_like(value, default):
    """Check a loss argument against the type of its default."""
    if isinstance(default, bool):
        return _Bool().check(value)
    if isinstance(default, float):
        return _Float().check(value)
    if isinstance(default, int):
        return _Int().check(value)
    if isinstance(default, str):
        return _Str().check(value)
    return value


def _store_counts(store):
    import numpy as np

    out = {}
    for split in ("train", "test"):
        labels = np.asarray(store.split_labels(split))
        _, per_class = np.unique(labels, return_counts=True) if labels.size else (None, np.zeros(0, int))
        out[split] = {
            "classes": int(per_class.size),
            "classes_with_pairs": int((per_class >= 2).sum()),
            "images": int(labels.size),
        }
    return out


def _procedural_counts(classes):
    from kerasml.data.sources.procedural import ProceduralSource

    per_class = inspect.signature(ProceduralSource.__init__).parameters["images_per_class"].default
    # the standard split gives classes // 2 to train; a sampled one (N+1) // 2: count the smaller half
    half = classes // 2
    return {
        "train": {"classes": half, "classes_with_pairs": half if per_class >= 2 else 0, "images": half * per_class},
        "test": {"classes": half, "images": half * per_class},
    }


def _plain(value):
    """A deep copy with tuples as lists and paths as strings (what TOML would have given)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return copy.deepcopy(value)


def _problem_order(problem):
    """Sort key: file-level problems first, then section by section and key by key in schema order."""
    parts = problem.key.split(".")
    if parts[0] not in _SCHEMA:
        return (-1, 0)
    keys = list(_SCHEMA[parts[0]])
    return (SECTIONS.index(parts[0]), keys.index(parts[1]) if len(parts) > 1 and parts[1] in keys else len(keys))


def _resolve(spec, overrides, source, check_files):
    """``(resolved spec, {"section.key": "spec" | "default" | "--set KEY=VALUE"})``; raises SpecError."""
    if isinstance(spec, str):
        raw = _parse_toml(spec, source)
    elif isinstance(spec, dict):
        raw = _plain(spec)
    else:
        raise SpecError([Problem("(spec)", spec, "TOML text or a dict")], source)
    problems, origins = [], {}
    _apply_overrides(raw, overrides, problems, origins)
    resolver = _Resolver(raw, origins, check_files)
    resolved = resolver.run()
    problems += resolver.problems
    provenance = {}
    for section, table in resolved.items():
        given = raw.get(section) if isinstance(raw.get(section), dict) else {}
        for key in table:
            path = f"{section}.{key}"
            nested = [text for name, text in origins.items() if name == path or name.startswith(path + ".")]
            provenance[path] = f"--set {nested[-1]}" if nested else "spec" if key in given else "default"
    if problems:
        problems.sort(key=_problem_order)
        marked = []
        for problem in problems:
            if problem.key in origins:
                note = f"(from --set {origins[problem.key]})"
                problem = dataclasses.replace(problem, hint=f"{problem.hint} {note}".strip())
            marked.append(problem)
        raise SpecError(marked, source)
    return resolved, provenance


def parse_spec(spec, overrides=(), source="<string>", check_files=True):
    """Validate a spec given as TOML text or a dict; return it resolved.

    Args:
        spec: TOML text, or a dict of the same shape.
        overrides: ``"key.path=value"`` strings applied before validation (``--set``).
        source: the name used in messages (the file name).
        check_files: open ``data.path`` (a store: its classes and images are checked against
            the batch and ``eval.ks``) and check that ``model.weights`` exists. ``False`` on
            machines without the data (CI).

    Returns:
        A plain nested dict: every key present, defaults filled, types normalised.

    Raises:
        SpecError: listing every problem at once.
    """
    return _resolve(spec, overrides, source, check_files)[0]


def load_spec(path, overrides=(), check_files=True):
    """Read and validate a TOML spec file (see `parse_spec`).

    Args:
        path: the ``.toml`` file.
        overrides: ``"key.path=value"`` strings (``--set``).
        check_files: see `parse_spec`.

    Returns:
        The resolved spec (a plain nested dict).

    Raises:
        SpecError: for a missing or unreadable file, a TOML syntax error (with line and
            column) or any number of problems in the spec.
    """
    text, source = _read(path)
    return parse_spec(text, overrides, source=source, check_files=check_files)


def _read(path):
    path = Path(path)
    source = str(path)
    try:
        return path.read_text(encoding="utf-8"), source
    except FileNotFoundError:
        problem = Problem("(file)", source, "an existing TOML spec file", "Check the path (see specs/ for examples).")
    except IsADirectoryError:
        problem = Problem("(file)", source, "a TOML spec file, not a folder")
    except UnicodeDecodeError as error:
        problem = Problem("(file)", source, "a UTF-8 text file", str(error))
    except OSError as error:
        problem = Problem("(file)", source, "a readable TOML spec file", str(error))
    raise SpecError([problem], source)


def evaluation_steps(spec):
    """The training steps at which ``train.eval_every`` asks for an evaluation.

    Within each ``[until_step, every]`` pair, the multiples of ``every`` after the previous
    ``until_step`` and up to ``until_step``; after the last pair, its ``every`` continues up
    to ``max_steps``. (An experiment may also evaluate after the last step.)

    Args:
        spec: a resolved spec, or its ``train`` section.

    Returns:
        A sorted list of ints in ``[1, max_steps]``.

    Example:

    >>> evaluation_steps({"max_steps": 1200, "eval_every": [[1000, 500], [1100, 40]]})
    [500, 1000, 1040, 1080, 1120, 1160, 1200]
    """
    train = spec.get("train", spec)
    max_steps, schedule = int(train["max_steps"]), train["eval_every"]
    if _is_int(schedule):
        schedule = [[max_steps, schedule]]
    steps, previous = [], 0
    for index, (until, every) in enumerate(schedule):
        stop = max_steps if index == len(schedule) - 1 else min(until, max_steps)
        first = (previous // every + 1) * every
        steps.extend(range(first, stop + 1, every))
        previous = until
        if until >= max_steps:
            break
    return sorted(set(steps))
