"""The spec's sections as pydantic models: one model per TOML table, one field per key.

Each field carries its type and bounds (pydantic checks them, strictly: ``"10"`` is not an
int, ``1`` is not ``true``), a description (the docs' schema table), and, where the words
derived from its type are not enough, an `Expect` saying what it accepts
(`kerasml.spec.fields` checks tables against these models). Defaults that depend on other
keys are ``None`` here and filled by the rules (`kerasml.spec.rules`).

The ``[hdml]`` keys are `kerasml.hdml.HDMLModel`'s own arguments (`kerasml.hdml.HDML_ARGUMENTS`)
with its defaults; ``model.embedding_dim`` and ``train.weight_decay`` default as
`kerasml.models.MetricModel` does; the loss's and the backbone's options are checked against
their constructors' signatures (`kerasml.spec.fields.options_model`).
"""

import inspect
import itertools
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_serializer, model_validator

from kerasml import evaluation, losses
from kerasml._backend import COMPILE_MODES, PRECISIONS
from kerasml._validation import did_you_mean
from kerasml.data.augment import CROPS
from kerasml.data.sources import SOURCES
from kerasml.hdml import HDML_ARGUMENTS, HDMLModel
from kerasml.hdml.conventions import CONVENTIONS
from kerasml.hdml.model import SYNTHETIC_STATISTICS
from kerasml.models import MetricModel, backbones
from kerasml.models.backbones.weights import weights_kind
from kerasml.preprocessing import NORMALIZATIONS
from kerasml.spec.errors import format_value, quoted
from kerasml.spec.fields import Expect, Section, refuse

__all__ = [
    "BUILTINS",
    "KEYS",
    "MOVED",
    "SECTIONS",
    "SECTION_MODELS",
    "STORE_IMAGE_SIZE",
    "DataSection",
    "DistributionSection",
    "EvalSection",
    "ExperimentSection",
    "HDMLSection",
    "LossSection",
    "ModelSection",
    "Spec",
    "TrainSection",
    "evaluation_steps",
]

#: ``data.builtin`` values: the sources that need no files (ingested on the fly by the experiment).
BUILTINS = tuple(name for name, source in SOURCES.items() if not source.needs_path)
#: ``data.image_size`` for a store: the HDML authors' random 227-pixel crop of the 256-pixel images.
STORE_IMAGE_SIZE = 227
_METRIC_DEFAULTS = inspect.signature(MetricModel).parameters
_HDML_DEFAULTS = {name: inspect.signature(HDMLModel).parameters[name].default for name in HDML_ARGUMENTS}


def _distinct(values):
    if len(set(values)) != len(values):
        refuse("Remove the repeated values.")
    return values


def _increasing(values):
    _distinct(values)
    if values != sorted(values):
        refuse(f"Sort them: {format_value(sorted(values))}.")
    return values


def _increasing_untils(schedule):
    if isinstance(schedule, list) and any(b[0] <= a[0] for a, b in itertools.pairwise(schedule)):
        refuse("The until_steps must increase strictly from one pair to the next.")
    return schedule


def _one_pair(value):
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"For one pair write [[{value[0]}, {value[1]}]]."
    return ""


def _backbone(name):
    try:
        return backbones.canonical_name(name)
    except ValueError as error:
        refuse(str(error))


def _loss_type(name):
    try:
        cls = losses.loss_class(name)
    except ValueError as error:
        refuse(str(error))
    return next(entry.name for entry in losses.catalog() if entry.cls is cls)


def _normalization(value):
    if value.lower() in ("auto", *NORMALIZATIONS):
        return value.lower()
    try:
        backbones.canonical_name(value)
    except ValueError:
        refuse(did_you_mean(value, ["auto", *NORMALIZATIONS]).strip())
    return value


def _weights(value):
    if value in ("", "imagenet"):
        return value
    try:
        weights_kind(value)
    except ValueError:
        refuse()
    except FileNotFoundError:
        pass  # whether the file exists is checked with the other files (check_files)
    return value


PositiveInt = Annotated[int, Field(ge=1)]
_Pair = Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]


class ExperimentSection(Section):
    """``[experiment]``: what the run is called and where it goes."""

    name: Annotated[
        str,
        Field(pattern=r"^[A-Za-z0-9_.\-]+$", description="the run folder's prefix"),
        Expect("a name made of letters, digits, '_', '.' and '-' (e.g. \"cub_npair\")"),
    ]
    seed: int = Field(0, ge=0, description="seeds the weights, the batch plan, the augmentation and the data")
    output_dir: str = Field("runs", min_length=1, description="where run folders are written")


class DataSection(Section):
    """``[data]``: a store written by ``kerasml ingest``, or a builtin dataset; the input pipeline."""

    path: Annotated[
        str,
        Field(description="a store (`kerasml ingest`); exactly one of path and builtin"),
        Expect("the path of a kerasml store (a .h5 file written by `kerasml ingest`)"),
    ] = ""
    builtin: Annotated[
        Literal[("", *BUILTINS)],
        Field(description="an offline dataset, ingested on the fly by the experiment"),
        Expect(f"one of {quoted(BUILTINS)}"),
    ] = ""
    classes: int | None = Field(
        None, ge=0, description='builtin "procedural": its number of classes (default 100); else 0 (not applicable)'
    )
    image_size: int | None = Field(
        None,
        ge=8,
        le=4096,
        description=f"the model's input side; default {STORE_IMAGE_SIZE} for a store, else the builtin's",
    )
    augment: bool = Field(True, description="random crop + horizontal flip in training")
    crop: Literal[tuple(sorted(CROPS))] = Field(
        "random", description='"random" (the HDML authors\' 227 of 256) or "resized" (random resized crop)'
    )
    normalization: Annotated[
        str,
        AfterValidator(_normalization),
        Field(description='"auto" (the backbone\'s own preprocessing), a normalisation or a backbone name'),
        Expect(
            f'one of {quoted(["auto", *NORMALIZATIONS])} or a backbone name ("auto" = the backbone\'s own '
            "preprocessing)"
        ),
    ] = "auto"
    workers: int = Field(0, ge=0, description="`keras.utils.PyDataset` workers")
    use_multiprocessing: bool = Field(False, description="workers are processes, not threads")


class ModelSection(Section):
    """``[model]``: the backbone, the embedding and whether HDML trains it."""

    backbone: Annotated[
        str,
        AfterValidator(_backbone),
        Field(description="a `kerasml.models.backbones` name"),
        Expect("a backbone name (see kerasml.models.backbones.available())"),
    ]
    backbone_options: Annotated[
        dict[str, Any],
        Field(default_factory=dict, description="the backbone builder's arguments (variant, feature_dim, ...)"),
        Expect('a table, e.g. { variant = "caffe" }'),
    ]
    weights: Annotated[
        str,
        AfterValidator(_weights),
        Field(description='"" (random init), "imagenet" (keras.applications only) or a weights file'),
        Expect('"", "imagenet" or the path of a .keras, .weights.h5, .h5, .mat or .npz file'),
    ] = ""
    embedding_dim: int = Field(_METRIC_DEFAULTS["embedding_dim"].default, ge=1, description="the embedding's size")
    hdml: bool = Field(True, description="HDML on (`kerasml.hdml.HDMLModel`, keys in [hdml]) or the plain model")


class HDMLSection(Section):
    """``[hdml]``: `kerasml.hdml.HDMLModel`'s own arguments (used when ``model.hdml = true``)."""

    alpha: float = Field(_HDML_DEFAULTS["alpha"], gt=0, description="α of eq. (1)")
    beta: float = Field(_HDML_DEFAULTS["beta"], gt=0, description="β of eq. (2)")
    soft_weight: float = Field(_HDML_DEFAULTS["soft_weight"], ge=0, le=1, description="λ in J_gen")
    softmax_factor: float = Field(_HDML_DEFAULTS["softmax_factor"], ge=0, description="c_soft in J_gen")
    block_size: int = Field(_HDML_DEFAULTS["block_size"], ge=1, description="steps per J_avg block")
    initial_mean: float = Field(_HDML_DEFAULTS["initial_mean"], gt=0, description="J_avg before the first block")
    generator_units: int = Field(_HDML_DEFAULTS["generator_units"], ge=1, description="the generator's width")
    synthetic_statistics: Literal[SYNTHETIC_STATISTICS] = Field(
        _HDML_DEFAULTS["synthetic_statistics"], description="batch statistics for synthetic features"
    )
    generator_learning_rate: float = Field(
        _HDML_DEFAULTS["generator_learning_rate"], gt=0, description="the generator's learning rate"
    )
    classifier_learning_rate: float = Field(
        _HDML_DEFAULTS["classifier_learning_rate"], gt=0, description="the softmax classifier's learning rate"
    )
    convention: Literal[CONVENTIONS] = Field(
        _HDML_DEFAULTS["convention"], description='"kerasml" (the paper\'s step) or "authors" (the authors\' code)'
    )


class MemorySection(Section):
    """``loss.memory``: cross-batch memory around the loss (`kerasml.losses.CrossBatchMemory`)."""

    size: int = Field(ge=1, description="embeddings the FIFO holds (memory_size)")
    start_step: int = Field(0, ge=0, description="steps before the memory is read or written (warm-up)")


class LossSection(Section):
    """``[loss]``: ``type`` names the loss, every other key is an argument of its constructor.

    In TOML the arguments sit next to ``type`` (``[loss] type = "triplet"  margin = 0.2``); in
    Python they are ``params``. ``memory = {size = 4096}`` (or a ``[loss.memory]`` table) wraps
    the loss in a cross-batch memory.
    """

    type: Annotated[
        str,
        AfterValidator(_loss_type),
        Field(description="a `kerasml.losses` name; its arguments are further keys of [loss]"),
        Expect("a kerasml loss name (see `kerasml losses`)"),
    ] = "npair"
    params: dict[str, Any] = Field(default_factory=dict, description="the loss's arguments")
    memory: Annotated[
        MemorySection | None,
        Field(description="cross-batch memory around a pair loss (XBM); absent: none"),
        Expect("a table {size = <int >= 1>, start_step = <int >= 0>}, e.g. {size = 4096}"),
    ] = None

    @model_validator(mode="before")
    @classmethod
    def _from_table(cls, data):
        if isinstance(data, Mapping) and "params" not in data:
            params = {k: v for k, v in data.items() if k not in ("type", "memory")}
            data = {"type": data.get("type", "npair"), "memory": data.get("memory"), "params": params}
        return data

    @model_serializer(mode="wrap")
    def _to_table(self, handler):
        table = handler(self)
        memory = {} if table.get("memory") is None else {"memory": table["memory"]}
        return {"type": table["type"], **table["params"], **memory}


class TrainSection(Section):
    """``[train]``: the batch, the schedule, the optimisers and the checkpoints."""

    batch_size: int = Field(ge=2, description="images per batch; its layout is the loss's (even for N-pair)")
    max_steps: int = Field(ge=1, description="training steps")
    learning_rate: float = Field(7e-5, gt=0, description="backbone + projector (the metric group)")
    weight_decay: float = Field(_METRIC_DEFAULTS["weight_decay"].default, ge=0, description="r · Σ ½‖W‖²")
    lr_decay_steps: Annotated[
        list[PositiveInt],
        AfterValidator(_increasing),
        Field(default_factory=list, description="steps at which every learning rate is multiplied by lr_decay_factor"),
        Expect("a list of strictly increasing ints >= 1, e.g. [5632, 6848]"),
    ]
    lr_decay_factor: float = Field(0.5, gt=0, le=1, description="the factor of each decay step")
    eval_every: Annotated[
        PositiveInt | Annotated[list[_Pair], Field(min_length=1)],
        AfterValidator(_increasing_untils),
        Field(description="[[until_step, every], ...] or one int every; default [[max_steps, max_steps // 10]]"),
        Expect(
            "an int >= 1, or a list of [until_step, every] pairs of ints >= 1, e.g. [[5000, 500], [8000, 64]]",
            _one_pair,
        ),
    ] = None
    log_every: int = Field(50, ge=1, description="steps between log lines")
    checkpoint_every: int = Field(500, ge=1, description="steps between last.keras saves (where a resume restarts)")
    checkpoint_metric: str | None = Field(
        None, min_length=1, description='the evaluation key best.keras is kept by; default "recall@1"'
    )
    compile: Literal[COMPILE_MODES] = Field(
        "auto",
        description='what compiles the training step: "auto" (Keras\' choice: jax.jit on JAX, XLA on TensorFlow '
        'with a GPU, PyTorch eager), "off", "xla" (TensorFlow, JAX) or "torch.compile" (PyTorch); one the '
        'backend lacks falls back to "auto" with a warning',
    )
    precision: Literal[PRECISIONS] = Field(
        "float32",
        description='the Keras dtype policy the model is built with: "float32", "mixed_float16" (with loss '
        'scaling) or "mixed_bfloat16"; the losses compute in float32',
    )


class EvalSection(Section):
    """``[eval]``: what the evaluations compute, on which split."""

    ks: Annotated[
        list[PositiveInt],
        AfterValidator(_distinct),
        Field(default_factory=lambda: [1, 2, 4, 8, 16, 32], min_length=1, description="the K of Recall@K"),
        Expect("a list of distinct ints >= 1, e.g. [1, 2, 4, 8]"),
    ]
    metrics: Annotated[
        list[Literal[evaluation.METRICS]],
        AfterValidator(_distinct),
        Field(default_factory=lambda: ["recall", "nmi", "f1"], min_length=1, description="the metrics computed"),
        Expect(f"a non-empty list of distinct names among {quoted(evaluation.METRICS)}"),
    ]
    split: Literal["test", "train"] = Field("test", description="the split evaluated")
    batch_size: int = Field(64, ge=1, description="images per evaluation batch")


class DistributionSection(Section):
    """``[distribution]``: data-parallel training over devices and processes (`kerasml.distribution`).

    ``train.batch_size`` stays the global batch: each of the ``devices x num_processes`` replicas
    gets an equal shard, and the losses see the whole batch. The multi-host keys default to what
    the launcher sets (torchrun's ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``, ``TF_CONFIG``, JAX's
    cluster detection), else to one process.
    """

    devices: Annotated[
        PositiveInt | Literal["all"],
        Field(
            description='devices per process: 1 (no distribution), N, or "all" (every GPU; 1 without one); on a '
            "CPU, N splits it into N devices (PyTorch: N processes)"
        ),
        Expect('an int >= 1 or "all"'),
    ] = 1
    num_processes: int = Field(0, ge=0, description="processes (hosts) of a multi-host job; 0: the launcher's, else 1")
    process_id: int = Field(-1, ge=-1, description="this process, 0..num_processes-1; -1: the launcher's, else 0")
    coordinator: str = Field(
        "", description='host:port of process 0 (e.g. "10.0.0.1:29500"); "": the launcher\'s, else a local port'
    )


class Spec(BaseModel):
    """A resolved experiment spec: every key present, every default filled (see `kerasml.spec.parse_spec`).

    ``spec.model_dump()`` is the TOML table (`kerasml.spec.dump_spec` writes it).
    """

    model_config = ConfigDict(frozen=True)

    experiment: ExperimentSection
    data: DataSection
    model: ModelSection
    hdml: HDMLSection = Field(default_factory=HDMLSection)
    loss: LossSection = Field(default_factory=LossSection)
    train: TrainSection
    eval: EvalSection = Field(default_factory=EvalSection)
    distribution: DistributionSection = Field(default_factory=DistributionSection)


#: The spec's tables, in file order.
SECTIONS = tuple(Spec.model_fields)
#: Each table's model.
SECTION_MODELS = {name: info.annotation for name, info in Spec.model_fields.items()}
#: The keys each table accepts (``[loss]`` also takes its loss's arguments).
KEYS = {
    name: ("type", "memory") if name == "loss" else tuple(model.model_fields) for name, model in SECTION_MODELS.items()
}
#: Keys of older specs, and where they are now.
MOVED = {
    **{
        f"model.{key}": f"hdml.{key}"
        for key in ("alpha", "beta", "soft_weight", "softmax_factor", "block_size", "generator_units")
    },
    "model.synthetic_statistics": "hdml.synthetic_statistics",
    "train.generator_learning_rate": "hdml.generator_learning_rate",
    "train.classifier_learning_rate": "hdml.classifier_learning_rate",
}


def evaluation_steps(spec):
    """The training steps at which ``train.eval_every`` asks for an evaluation.

    Within each ``[until_step, every]`` pair, the multiples of ``every`` after the previous
    ``until_step`` and up to ``until_step``; after the last pair, its ``every`` continues up
    to ``max_steps``. (An experiment may also evaluate after the last step.)

    Args:
        spec: a `Spec`, its `TrainSection`, or a mapping with ``max_steps`` and ``eval_every``.

    Returns:
        A sorted list of ints in ``[1, max_steps]``.

    Example:

    >>> evaluation_steps({"max_steps": 1200, "eval_every": [[1000, 500], [1100, 40]]})
    [500, 1000, 1040, 1080, 1120, 1160, 1200]
    """
    train = getattr(spec, "train", spec)
    if isinstance(train, Mapping):
        train = train.get("train", train)
        max_steps, schedule = int(train["max_steps"]), train["eval_every"]
    else:
        max_steps, schedule = train.max_steps, train.eval_every
    if isinstance(schedule, int):
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
