"""Experiment specs: one TOML file per experiment, validated whole before any work starts.

A spec has seven tables whose keys map 1:1 onto the arguments of the objects an experiment
builds (`kerasml.data`, `kerasml.models.backbones.get`, `kerasml.models.MetricModel` or
`kerasml.hdml.HDMLModel`, a `kerasml.losses` loss, the optimizers and the evaluation)::

    [experiment]
    name = "cub_npair_hdml"

    [data]
    path = "data/cub-20.h5"          # a store written by `kerasml ingest cub --classes 20`

    [model]
    backbone = "googlenet"
    hdml = true                     # HDMLModel; its own arguments are the [hdml] table

    [hdml]
    beta = 5000.0

    [loss]
    type = "npair"
    l2_reg = 0.0015                 # the loss's own arguments sit next to its type

    [train]
    batch_size = 16
    max_steps = 8000

`load_spec` / `parse_spec` read a spec, apply ``--set key.path=value`` overrides, fill every
default and check everything at once: a `SpecError` lists *every* problem (the key path, the
value received, what was expected, the closest known key or how to fix it), one per line.
The result is a `Spec`, a pydantic model with one attribute per table
(``spec.train.batch_size``, ``spec.loss.params``...) in which every key is present with its
normalised type and spelling (the backbone's and the loss's canonical names), and
``parse_spec(dump_spec(spec)) == spec``.

The package, by concern: `kerasml.spec.schema` (one pydantic model per table: types,
bounds, defaults, descriptions), `kerasml.spec.fields` (a table checked key by key against its
model, pydantic's errors in the spec's words), `kerasml.spec.draft` and `kerasml.spec.rules`
(the defaults that depend on other keys and the cross-key rules: the loss's batch layout,
HDML's support, the data's classes and images), `kerasml.spec.overrides` (``--set``),
`kerasml.spec.io` (TOML in and out) and `kerasml.spec.errors` (`Problem`, `SpecError`).

Defaults that depend on other keys: ``data.image_size`` (227 for a store, else the builtin
source's own: 32 for digits, 64 for procedural), ``data.classes`` (100 for builtin procedural,
0 = not applicable otherwise), ``train.eval_every`` (``[[max_steps, max(1, max_steps // 10)]]``;
one int ``every`` means ``[[max_steps, every]]``) and ``train.checkpoint_metric``
(``"recall@1"``, else the first key the evaluation produces). ``train.eval_every = [[5000,
500], [8000, 64]]`` evaluates at every multiple of 500 up to step 5000, then at every
multiple of 64 up to 8000 (see `evaluation_steps`).

Cross-key rules: the train batch must have the loss's layout (even for N-pair and angular,
a multiple of 3 for structured triplets: the loss says so) and draw no more classes than the
train split has; ``model.hdml = true`` needs a loss HDML can synthesise for; every K in
``eval.ks`` must be smaller than the evaluated split's images. The data's classes and images
come from the builtin source, or, with ``check_files=True``, from the store itself. Relative
paths (``data.path``, ``model.weights``, ``experiment.output_dir``) start from the working
directory, as for ``kerasml ingest``.

The study's command-line flags (docs/study.md) map onto spec keys
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
>>> spec.train.max_steps, spec.train.eval_every, spec.data.image_size
(100, [[100, 10]], 32)
>>> spec.loss.type, spec.loss.params
('npair', {'l2_reg': 0.002})
"""

import dataclasses
from collections.abc import Mapping

from kerasml.spec import io, rules, schema
from kerasml.spec.errors import MISSING, Problem, SpecError, format_value
from kerasml.spec.io import dump_spec, read_spec
from kerasml.spec.overrides import apply_overrides
from kerasml.spec.schema import SECTIONS, Spec, evaluation_steps

__all__ = [
    "MISSING",
    "SECTIONS",
    "STUDY_FLAGS",
    "Problem",
    "Spec",
    "SpecError",
    "dump_spec",
    "evaluation_steps",
    "format_value",
    "load_spec",
    "parse_spec",
    "read_spec",
    "resolve_spec",
]

#: The study's flags and the spec keys that replace them (see the table above).
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


def _problem_order(problem):
    """File-level problems first, then table by table (the table itself, then key by key in schema order)."""
    section, _, key = problem.key.partition(".")
    if section not in SECTIONS:
        return (-1, 0)
    keys, name = schema.KEYS[section], key.split(".", 1)[0]  # model.backbone_options.x sorts as backbone_options
    if not name:
        return (SECTIONS.index(section), -1)  # the table itself
    return (SECTIONS.index(section), keys.index(name) if name in keys else len(keys))


def resolve_spec(text, overrides=(), source="<string>", check_files=True):
    """Validate a spec and say where each of its values comes from.

    Args:
        text: TOML text, or a dict of the same shape (tuples and paths are accepted).
        overrides: ``"key.path=value"`` strings applied first (``--set``), or one such string.
        source: the name used in messages (the file name).
        check_files: open ``data.path`` (a store: its classes and images are checked against
            the batch and ``eval.ks``) and check that ``model.weights`` exists. ``False`` on
            machines without the data (CI).

    Returns:
        ``(spec, provenance)``: the `Spec`, and ``{"section.key": "spec" | "default" |
        "--set KEY=VALUE"}`` for every key of ``spec.model_dump()``.

    Raises:
        SpecError: listing every problem at once.
    """
    if isinstance(text, str):
        raw = io.parse_toml(text, source)
    elif isinstance(text, Mapping):
        raw = io.plain(text)
    else:
        raise SpecError([Problem("(spec)", text, "TOML text or a dict")], source)
    problems, origins = apply_overrides(raw, overrides)
    draft = rules.Draft(raw, check_files)
    rules.resolve(draft)
    problems += draft.problems
    if problems:
        problems.sort(key=_problem_order)
        marked = []
        for problem in problems:
            if problem.key in origins:
                note = f"(from --set {origins[problem.key]})"
                problem = dataclasses.replace(problem, hint=f"{problem.hint} {note}".strip())
            marked.append(problem)
        raise SpecError(marked, source)
    spec = Spec.model_validate(draft.values)
    provenance = {}
    for section, table in spec.model_dump().items():
        given = raw.get(section) if isinstance(raw.get(section), dict) else {}
        for key in table:
            path = f"{section}.{key}"
            nested = [text for name, text in origins.items() if name == path or name.startswith(path + ".")]
            provenance[path] = f"--set {nested[-1]}" if nested else "spec" if key in given else "default"
    return spec, provenance


def parse_spec(text, overrides=(), source="<string>", check_files=True):
    """Validate a spec given as TOML text or a dict; return it resolved (see `resolve_spec`).

    Args:
        text: TOML text, or a dict of the same shape.
        overrides: ``"key.path=value"`` strings applied first (``--set``).
        source: the name used in messages (the file name).
        check_files: open ``data.path`` and check ``model.weights`` (see `resolve_spec`).

    Returns:
        A `Spec`: every key present, defaults filled, types and names normalised.

    Raises:
        SpecError: listing every problem at once.
    """
    return resolve_spec(text, overrides, source, check_files)[0]


def load_spec(path, overrides=(), check_files=True):
    """Read and validate a TOML spec file (see `resolve_spec`).

    Args:
        path: the ``.toml`` file.
        overrides: ``"key.path=value"`` strings (``--set``).
        check_files: see `resolve_spec`.

    Returns:
        The resolved `Spec`.

    Raises:
        SpecError: for a missing or unreadable file, a TOML syntax error (with line and
            column) or any number of problems in the spec.
    """
    text, source = read_spec(path)
    return parse_spec(text, overrides, source=source, check_files=check_files)
