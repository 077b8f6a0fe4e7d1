"""Resolving a spec: each table checked key by key, then the rules that tie keys together.

`resolve` fills a `Draft` in passes: every table through its model (`kerasml.spec.schema`),
then the defaults that depend on other keys and the cross-key rules, each a function of the
draft that runs when the keys it reads are valid and is skipped otherwise (so one bad key
gives one problem, not a cascade). The rules ask the objects that know:

- the loss (`kerasml.losses`): its constructor's arguments, its batch layout
  (``loss.layout.batch_size_problem`` / ``classes_needed``) and whether HDML can synthesise
  for it (``loss.hdml_problem()``);
- the backbone builder: its arguments;
- the data source (`kerasml.data.sources`): its default image size and classes, and the
  classes and images of its splits (``split_counts``); a store is opened and counted when
  ``check_files`` is on, and a missing one is reported with the commands that write it
  (the source's ``commands``, through `kerasml.data.open_store`).
"""

import inspect
import re
from pathlib import Path

from kerasml import distribution, evaluation, losses
from kerasml._validation import did_you_mean
from kerasml.data import StoreError, open_store
from kerasml.data.sources import SOURCES, SplitCounts, parse_store_path
from kerasml.models import backbones
from kerasml.models.backbones.weights import weights_kind
from kerasml.preprocessing import keras_applications
from kerasml.spec import schema
from kerasml.spec.draft import Draft, Skip, check_tables
from kerasml.spec.errors import Problem, format_value, quoted
from kerasml.spec.fields import check_table, options_model

__all__ = ["Draft", "resolve"]

# Loss constructor arguments that kerasml sets itself.
_LOSS_RESERVED = ("name", "reduction", "dtype")
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
# The smallest input side of a backbone whose pooling windows need more than 8 pixels.
_MIN_IMAGE_SIZE = {"googlenet": 32}


def resolve(draft):
    """Check every table of ``draft.raw``, fill the dependent defaults and apply every rule."""
    check_tables(draft)
    for rule in _RULES:
        if rule in _FILE_RULES and not draft.check_files:
            continue
        try:
            rule(draft)
        except Skip:
            pass


# ----------------------------------------------------------------------------------------------
# [data]


def _data_source(draft):
    path, builtin = draft.get("data.path", "data.builtin")
    if bool(path) == bool(builtin):
        draft.problem(
            "data",
            {"path": path, "builtin": builtin},
            f"exactly one of data.path (a store from `kerasml ingest`) or data.builtin ({quoted(schema.BUILTINS)})",
            "Remove one of them." if path else 'Add e.g. path = "data/cub-20.h5" or builtin = "digits" under [data].',
        )
        draft.bad.update(("data.path", "data.builtin"))


def _generated():
    """The builtins that generate any number of classes (``data.classes`` applies to them)."""
    return [name for name in schema.BUILTINS if SOURCES[name].default_classes is not None]


def _data_classes(draft):
    if "data.classes" in draft.bad:
        return
    path, builtin = draft.values["data"].get("path"), draft.values["data"].get("builtin")
    classes = draft.values["data"].get("classes")
    source = SOURCES.get(builtin)
    if source is not None and source.default_classes is not None:
        if classes is None:
            classes = source.default_classes
        elif not 2 <= classes <= source.max_classes:
            draft.problem(
                "data.classes",
                classes,
                f"an int in [2, {source.max_classes}] (the {builtin} classes; half train, half test)",
            )
            return
    elif classes not in (None, 0) and (path or builtin):
        applies = " or ".join(f'builtin = "{name}"' for name in _generated())
        draft.problem(
            "data.classes",
            classes,
            f"no value (data.classes applies to {applies} only)",
            "A store's classes are chosen at ingest (`kerasml ingest ... --classes N`); a builtin dataset fixes "
            "its own. Remove the key (or set it to 0).",
        )
        return
    else:
        classes = 0
    draft.set("data.classes", classes)


def _image_size(draft):
    if "data.image_size" in draft.bad or "image_size" in draft.values["data"]:
        return
    builtin = draft.values["data"].get("builtin")
    draft.set("data.image_size", SOURCES[builtin].default_image_size if builtin else schema.STORE_IMAGE_SIZE)


# ----------------------------------------------------------------------------------------------
# [model]


def _builder(canonical):
    """The function that builds a backbone: kerasml's own (same name) or a keras.applications constructor."""
    return getattr(backbones, canonical, None) or keras_applications()[canonical]


def _backbone_options(draft):
    canonical, options = draft.get("model.backbone", "model.backbone_options")
    builder = _builder(canonical)
    model = options_model(builder, tuple(_BACKBONE_RESERVED))
    accepted = ", ".join(model.model_fields)
    prefix = "model.backbone_options"

    def unknown(key, value):
        hint = did_you_mean(key, list(model.model_fields)).strip() or f"{canonical} accepts: {accepted}."
        return Problem(f"{prefix}.{key}", value, f"an argument of the {canonical} backbone ({accepted})", hint)

    given = {key: value for key, value in options.items() if key not in _BACKBONE_RESERVED}
    for key in options.keys() - given.keys():
        draft.problem(f"{prefix}.{key}", options[key], f"no {key} ({_BACKBONE_RESERVED[key]})", "Remove it.")
    values, problems = check_table(model, given, prefix, unknown)
    for problem in problems:
        draft.problem(problem.key, problem.value, problem.expected, problem.hint)
    variant = values.get("variant")
    if canonical == "googlenet" and "variant" in given and variant not in backbones.GOOGLENET_VARIANTS:
        draft.problem(
            f"{prefix}.variant",
            variant,
            f"one of {quoted(backbones.GOOGLENET_VARIANTS)}",
            '"caffe": the HDML authors\' BVLC GoogLeNet; "bn" adds batch-norm; "torchvision": torchvision\'s.',
        )
    draft.set(prefix, {key: values[key] for key in given if key in values})


def _weights(draft):
    canonical, weights = draft.get("model.backbone", "model.weights")
    # keras.applications constructors take `weights` ("imagenet"); kerasml's own builders do not
    if weights == "imagenet" and "weights" not in inspect.signature(_builder(canonical)).parameters:
        draft.problem(
            "model.weights",
            weights,
            f'"" or a weights file for {canonical} (no ImageNet weights can be downloaded for it)',
            f'For googlenet run `kerasml weights googlenet` (variant = "torchvision", weights = '
            f'"{backbones.GOOGLENET_IMAGENET_WEIGHTS}"), or pick a keras.applications backbone.',
        )


def _image_size_for_backbone(draft):
    canonical, size = draft.get("model.backbone", "data.image_size")
    smallest = _MIN_IMAGE_SIZE.get(canonical)
    if smallest is not None and size < smallest:
        draft.problem(
            "data.image_size",
            size,
            f"an int >= {smallest} for the {canonical} backbone (its pooling windows need {smallest} px)",
            'Use a larger image_size, or backbone = "small_cnn" for tiny images.',
        )


# ----------------------------------------------------------------------------------------------
# [loss]


def _loss(draft):
    name = draft.get("loss.type")
    cls = losses.loss_class(name)
    model = options_model(cls, _LOSS_RESERVED)
    accepted = ", ".join(model.model_fields) or "none"

    def unknown(key, value):
        hint = "kerasml sets it." if key in _LOSS_RESERVED else did_you_mean(key, list(model.model_fields)).strip()
        hint = hint or f"{cls.__name__} takes: {accepted}."
        return Problem(f"loss.{key}", value, f"an argument of {cls.__name__} ({accepted})", hint)

    values, problems = check_table(model, draft.loss_params, "loss", unknown)
    for problem in problems:
        draft.problem(problem.key, problem.value, problem.expected, problem.hint)
    params = {key: values[key] for key in model.model_fields if key in values}
    draft.set("loss.params", params)
    if problems:
        return
    try:
        loss = losses.get({"type": name, **params})
    except (ValueError, TypeError) as error:
        match = re.search(r"argument `(\w+)`", str(error))
        key = match.group(1) if match and match.group(1) in params else "type"
        draft.problem(f"loss.{key}", params.get(key, name), f"a valid {cls.__name__} argument", str(error))
        return
    if loss.layout is losses.layouts.HEADS:
        usable = [entry.name for entry in losses.catalog() if losses.get(entry.name).layout is not losses.layouts.HEADS]
        draft.problem(
            "loss.type",
            name,
            f"a loss on [B, D] embeddings ({cls.__name__} needs {loss.layout.description}, which experiments do "
            "not build)",
            f"Use it in your own Keras model; in a spec pick {', '.join(usable)}.",
        )
        return
    memory = draft.values["loss"].get("memory")  # cross-batch memory (XBM) around the loss
    if memory is not None and loss.reference_problem() is not None:
        usable = ", ".join(e.name for e in losses.catalog() if losses.get(e.name).reference_problem() is None)
        hint = f"{loss.reference_problem()}. Use it with {usable}; or remove loss.memory."
        draft.problem("loss.memory", memory.model_dump(), f"no memory for {cls.__name__} (XBM needs a pair loss)", hint)
        return
    draft.loss = loss if memory is None else losses.CrossBatchMemory(loss, memory.size, start_step=memory.start_step)


def _hdml(draft):
    if not draft.get("model.hdml") or draft.loss is None:
        return
    reason = draft.loss.hdml_problem()
    if reason is None:
        _hdml_convention(draft)
        return
    params = draft.values["loss"]["params"]
    # the problem is the loss's type, or the argument its reason names ("mining='all'")
    key = next((f"loss.{name}" for name in params if f"{name}=" in reason), "loss.type")
    value = params[key.split(".", 1)[1]] if key != "loss.type" else draft.values["loss"]["type"]
    supported = ", ".join(entry.name for entry in losses.catalog() if entry.hdml)
    draft.problem(
        key,
        value,
        "a loss HDML can synthesise for (model.hdml = true)",
        f"{reason}. HDML synthesises for {supported} (see `kerasml losses`); or set model.hdml = false.",
    )
    draft.bad.add("model.hdml")


def _hdml_convention(draft):
    """``hdml.convention`` must be one the loss has a synthetic form for (pair losses: ``"kerasml"`` only)."""
    convention = draft.get("hdml.convention")
    accepted = draft.loss.hdml_conventions
    if convention in accepted:
        return
    draft.problem(
        "hdml.convention",
        convention,
        f"one of {', '.join(repr(c) for c in accepted)} for loss.type = {draft.values['loss']['type']!r}",
        f'{draft.loss.hdml_convention_note} Use hdml.convention = "kerasml".',
    )


# ----------------------------------------------------------------------------------------------
# [train] and [eval]


def _eval_every(draft):
    max_steps = draft.get("train.max_steps")
    if "train.eval_every" in draft.bad:
        return
    schedule = draft.values["train"].get("eval_every")
    if schedule is None:
        schedule = [[max_steps, max(1, max_steps // 10)]]
    elif isinstance(schedule, int):
        schedule = [[max_steps, schedule]]
    draft.set("train.eval_every", schedule)


def _lr_decay_steps(draft):
    max_steps, steps = draft.get("train.max_steps", "train.lr_decay_steps")
    late = [step for step in steps if step >= max_steps]
    if late:
        draft.problem(
            "train.lr_decay_steps",
            steps,
            f"steps < train.max_steps = {max_steps}",
            f"Remove {format_value(late)} or raise train.max_steps.",
        )


def _checkpoint_metric(draft):
    ks, metrics = draft.get("eval.ks", "eval.metrics")
    if "train.checkpoint_metric" in draft.bad:
        return
    available = [f"recall@{k}" for k in ks] if "recall" in metrics else []
    available += [metric for metric in metrics if metric != "recall"]
    metric = draft.values["train"].get("checkpoint_metric")
    if metric is None:  # the default: recall@1, else the first key the evaluation produces
        draft.set("train.checkpoint_metric", "recall@1" if "recall@1" in available else available[0])
        return
    lowered = metric.lower()
    if lowered in available:
        draft.set("train.checkpoint_metric", lowered)
        return
    match = re.fullmatch(r"recall@(\d+)", lowered)
    if match and "recall" in metrics:
        hint = f"Add {match.group(1)} to eval.ks, or pick one of the ks."
    elif match:
        hint = 'Add "recall" to eval.metrics.'
    elif lowered in evaluation.METRICS:
        hint = f'Add "{lowered}" to eval.metrics.'
    else:
        hint = did_you_mean(lowered, available).strip()
    draft.problem("train.checkpoint_metric", metric, f"one of the evaluation's keys: {quoted(available)}", hint)


def _loss_name(draft):
    """How batch problems name the loss: its spec name, or its class and the arguments that set its layout."""
    layout_name = draft.loss.layout_name
    return draft.values["loss"]["type"] if layout_name == type(draft.loss).__name__ else layout_name


def _batch_layout(draft):
    batch = draft.get("train.batch_size")
    if draft.loss is None:
        return
    issue = draft.loss.layout.batch_size_problem(batch, _loss_name(draft))
    if issue is not None:
        draft.problem("train.batch_size", batch, *issue)


def _process_id(draft):
    processes, process_id = draft.get("distribution.num_processes", "distribution.process_id")
    if processes and process_id >= processes:
        draft.problem(
            "distribution.process_id",
            process_id,
            f"an int in [0, {processes - 1}] (distribution.num_processes = {processes}), or -1 (the launcher's)",
            "Give each process its own id from 0.",
        )


def _distribution(draft):
    devices, processes, batch = draft.get("distribution.devices", "distribution.num_processes", "train.batch_size")
    if devices == distribution.ALL or draft.loss is None:  # "all" is known on the machine: `kerasml run` checks it
        return
    name = _loss_name(draft)
    accepts = lambda size: draft.loss.layout.batch_size_problem(size, name) is None  # noqa: E731
    issue = distribution.batch_size_problem(batch, devices * max(processes, 1), accepts)
    if issue is not None:
        draft.problem("train.batch_size", batch, *issue)


# ----------------------------------------------------------------------------------------------
# The data's classes and images


def _weights_file(draft):
    canonical, weights = draft.get("model.backbone", "model.weights")
    if weights in ("", "imagenet"):
        return
    if not Path(weights).is_file():
        draft.problem(
            "model.weights",
            weights,
            "an existing weights file",
            backbones.missing_weights_hint(weights, canonical, draft.values["model"].get("backbone_options")),
        )
    elif weights_kind(weights) == "caffe" and canonical != "googlenet":
        draft.problem("model.weights", weights, "a .keras/.weights.h5 file (Caffe .mat/.npz weights are for googlenet)")


def _store_counts(draft):
    path = draft.get("data.path")
    if not path:
        return
    try:
        with open_store(path) as store:
            counts = {split: SplitCounts.from_labels(store.split_labels(split)) for split in ("train", "test")}
    except StoreError as error:  # a missing store: the message names the commands that write it
        expected = "a kerasml store written by `kerasml ingest`" if Path(path).exists() else "an existing store"
        draft.problem("data.path", path, expected, str(error))
        return
    parsed = parse_store_path(path)
    name = parsed[0] if parsed else "NAME"
    draft.counts = (counts, path, f"ingest more classes (`kerasml ingest {name} --classes N`)")


def _builtin_counts(draft):
    builtin = draft.get("data.builtin")
    if not builtin:
        return
    source = SOURCES[builtin]
    if source.default_classes is None:
        generated = _generated()
        fix = f'use builtin = "{generated[0]}" with enough data.classes' if generated else "use a store"
        draft.counts = (source.split_counts(), f'builtin "{builtin}"', fix)
    else:
        classes = draft.get("data.classes")
        draft.counts = (
            source.split_counts(classes),
            f'builtin "{builtin}" with {classes} classes',
            "raise data.classes",
        )


def _train_classes(draft):
    if draft.counts is None:
        return
    (counts, where, fix), data = draft.counts, draft.values["data"]
    if counts["train"].classes < 2:
        key = "data.path" if data.get("path") else "data.builtin"
        draft.problem(
            key,
            data.get("path") or data.get("builtin"),
            "data whose train split has >= 2 classes",
            f"{where} has {counts['train'].classes} train class(es); {fix}.",
        )


def _batch_classes(draft):
    batch = draft.get("train.batch_size")
    if draft.counts is None or draft.loss is None or "data.path" in draft.bad or "data.builtin" in draft.bad:
        return
    counts, where, fix = draft.counts
    train, layout, name = counts["train"], draft.loss.layout, _loss_name(draft)

    def fits(size):
        distinct, paired = layout.classes_needed(size)
        return distinct <= train.classes and paired <= train.classes_with_pairs

    if fits(batch):
        return
    limit = next(
        (size for size in range(batch - 1, 1, -1) if layout.batch_size_problem(size, name) is None and fits(size)),
        None,
    )
    distinct, paired = layout.classes_needed(batch)
    has = f"the train split has {train.classes} classes ({train.classes_with_pairs} with 2+ images)"
    draft.problem(
        "train.batch_size",
        batch,
        f"a batch size <= {limit} for {name} on {where}" if limit else f"a batch size that {where} can fill",
        f"A batch {layout.description} of {batch} needs {distinct} distinct classes ({paired} with 2+ images), but "
        f"{has}. " + (f"Use train.batch_size <= {limit}, or {fix}." if limit else f"Please {fix}."),
    )


def _eval_ks(draft):
    ks, split, metrics = draft.get("eval.ks", "eval.split", "eval.metrics")
    if draft.counts is None or "recall" not in metrics:
        return
    counts, where, _ = draft.counts
    images = counts[split].images
    large = [k for k in ks if k >= images]
    if large:
        draft.problem(
            "eval.ks",
            ks,
            f"every K < {images}, the images of the {split} split of {where}",
            f"Remove {format_value(large)} from eval.ks.",
        )


_RULES = (
    _data_source,
    _data_classes,
    _image_size,
    _backbone_options,
    _weights,
    _image_size_for_backbone,
    _loss,
    _hdml,
    _eval_every,
    _lr_decay_steps,
    _checkpoint_metric,
    _batch_layout,
    _process_id,
    _distribution,
    _weights_file,
    _store_counts,
    _builtin_counts,
    _train_classes,
    _batch_classes,
    _eval_ks,
)
_FILE_RULES = (_weights_file, _store_counts)
