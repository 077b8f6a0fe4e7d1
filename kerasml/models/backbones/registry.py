"""The backbone registry: names, `get`, feature sizes and the preprocessing each backbone expects."""

import inspect
from pathlib import Path

from kerasml.models.backbones.googlenet import googlenet
from kerasml.models.backbones.small_cnn import small_cnn
from kerasml.models.backbones.weights import load_backbone_file, load_caffe_weights, no_imagenet_message, weights_kind
from kerasml.preprocessing import (
    Normalization,
    backbone_names,
    backbone_normalization,
    canonical_backbone_name,
    keras_applications,
)

# The backbones' preprocessing is a `kerasml.preprocessing.Normalization` (the data pipeline's class).
Preprocessing = Normalization


def preprocessing(name, **kwargs):
    """The input preprocessing a backbone expects, as a `Preprocessing`.

    GoogLeNet ``"bn"``: the ImageNet mean/std on RGB in [0, 1]; GoogLeNet ``"caffe"``: BGR minus
    (104, 117, 123) on the 0–255 scale; ``"small_cnn"``: [−1, 1]; a `keras.applications` model:
    what its own ``preprocess_input`` computes. The definitions, and the data pipeline's use of
    them, are in `kerasml.preprocessing` (see `kerasml.preprocessing.backbone_normalization`).

    Args:
        name: a backbone name, as for `get`.
        **kwargs: backbone arguments; only ``variant`` (googlenet) matters.

    Returns:
        A `Preprocessing` (that is, a `kerasml.preprocessing.Normalization`).

    Raises:
        ValueError: for an unknown name or googlenet variant.

    Example:

    >>> preprocessing("ResNet50").channel_order
    'BGR'
    >>> preprocessing("mobilenet_v2").mean
    (1.0, 1.0, 1.0)
    """
    return backbone_normalization(name, **kwargs)


def available():
    """Names `get` accepts, in their canonical spelling.

    Returns:
        ``["googlenet", "small_cnn", <keras.applications models>...]``; lookups
        also accept any case and ``_``/``-`` separators (``"resnet50"``,
        ``"mobilenet_v2"``), and ``"inception_v1"`` for googlenet.
    """
    return backbone_names()


def canonical_name(name):
    """The canonical spelling of a backbone name, or a ValueError (to validate specs early).

    Args:
        name: e.g. ``"GoogLeNet"``, ``"small-cnn"``, ``"resnet50"``, ``"MobileNet_V2"``.

    Returns:
        ``"googlenet"``, ``"small_cnn"`` or a `keras.applications` constructor
        name such as ``"ResNet50"``.

    Raises:
        ValueError: for an unknown name, listing the known ones and the closest.

    Example:

    >>> canonical_name("mobilenet_v2")
    'MobileNetV2'
    """
    return canonical_backbone_name(name)


def feature_dim(name, **kwargs):
    """Size ``F`` of the features a backbone outputs (``model.output_shape[-1]``).

    Free for ``"googlenet"`` (1024) and ``"small_cnn"`` (its ``feature_dim``
    argument); a `keras.applications` model is built (random weights), which
    takes a second or two.

    Args:
        name: a backbone name, as for `get`.
        **kwargs: arguments for `get` (``input_shape``, ``feature_dim``, ...).

    Returns:
        An int.

    Example:

    >>> feature_dim("googlenet"), feature_dim("small_cnn", feature_dim=64)
    (1024, 64)
    """
    canonical = canonical_name(name)
    if canonical == "googlenet":
        return 1024
    if canonical == "small_cnn":
        return int(kwargs.get("feature_dim", 128))
    kwargs.pop("weights", None)
    model = get(canonical, weights=None, **kwargs)
    return int(model.output_shape[-1])


_SET_BY_GET = ("include_top", "weights", "input_shape", "pooling")


def _check_kwargs(canonical, builder, kwargs):
    """Name the offending key (a spec's typo) instead of a bare TypeError from the builder."""
    accepted = [p for p in inspect.signature(builder).parameters if p not in _SET_BY_GET]
    fixed = sorted(set(kwargs) & set(_SET_BY_GET) - {"input_shape", "weights"})
    unknown = sorted(set(kwargs) - set(accepted) - set(fixed))
    if fixed:
        raise ValueError(
            f"Backbone {canonical!r}: {', '.join(fixed)} is set by kerasml (include_top=False, "
            'pooling="avg"); remove it.'
        )
    if unknown:
        raise ValueError(
            f"Invalid argument(s) for backbone {canonical!r}: {', '.join(unknown)}. "
            f"Accepted: input_shape, weights, {', '.join(accepted)}."
        )


def get(name, input_shape=(224, 224, 3), weights=None, **kwargs):
    """Build a backbone by name: a `keras.Model` from images ``[B, H, W, C]`` to features ``[B, F]``.

    Args:
        name: ``"googlenet"`` (alias ``"inception_v1"``), ``"small_cnn"``, or any
            `keras.applications` model (``"ResNet50"``, ``"MobileNetV2"``,
            ``"EfficientNetB0"``...); case-insensitive, ``_``/``-`` ignored
            (``"resnet50"``, ``"mobilenet_v2"``). Applications are built with
            ``include_top=False, pooling="avg"``.
        input_shape: ``(height, width, channels)``, channels last. Defaults to
            ``(224, 224, 3)``.
        weights: one of
            - ``None``: random initialisation (the default);
            - ``"imagenet"``: only for `keras.applications` models (Keras
              downloads the weights once into ``~/.keras/models``);
            - the path of a ``.weights.h5`` (or legacy ``.h5``) file: the
              backbone is built from ``name``, ``input_shape`` and ``kwargs``,
              then ``load_weights(path)``;
            - the path of a ``.keras`` file: the saved model is loaded as it is
              (``name``, ``input_shape`` and ``kwargs`` are then ignored);
            - for googlenet, a Caffe ``.mat``/``.npz`` file, read by
              `load_caffe_weights`.
        **kwargs: passed to the builder: `googlenet` (``variant``, ``name``),
            `small_cnn` (``feature_dim``, ``filters``, ``name``) or the
            `keras.applications` constructor (e.g. ``alpha`` for MobileNetV2).

    Returns:
        A `keras.Model` whose output is ``[B, F]`` (see `feature_dim`); its
        expected input scaling is ``preprocessing(name, **kwargs)``.

    Raises:
        ValueError: for an unknown name (with the closest known one), an argument
            the builder does not take, ``"imagenet"``
            for a backbone without downloadable weights, a bad weights argument,
            or a ``.keras`` file that does not hold a ``[B, F]`` feature model.
        FileNotFoundError: when the weights path does not exist.

    Example:

    >>> model = get("MobileNetV2", input_shape=(32, 32, 3), alpha=0.35)
    >>> model.output_shape
    (None, 1280)
    """
    canonical = canonical_name(name)
    kind = weights_kind(weights)
    if kind == "keras":
        return load_backbone_file(weights)
    if kind == "caffe" and canonical != "googlenet":
        raise ValueError(
            f"Invalid value for argument `weights`: Caffe weight files are for googlenet only. Received: "
            f"name={name!r}, weights={str(Path(weights))!r}"
        )
    if canonical in ("googlenet", "small_cnn"):
        if kind == "imagenet":
            raise ValueError(no_imagenet_message(canonical))
        builder = googlenet if canonical == "googlenet" else small_cnn
        _check_kwargs(canonical, builder, kwargs)
        model = builder(input_shape=input_shape, **kwargs)
    else:
        _check_kwargs(canonical, keras_applications()[canonical], kwargs)
        model = keras_applications()[canonical](
            include_top=False,
            weights="imagenet" if kind == "imagenet" else None,
            input_shape=tuple(input_shape),
            pooling="avg",
            **kwargs,
        )
    if kind == "h5":
        model.load_weights(str(Path(weights)))
    elif kind == "caffe":
        load_caffe_weights(model, weights)
    return model


__all__ = ["Preprocessing", "available", "canonical_name", "feature_dim", "get", "preprocessing"]
