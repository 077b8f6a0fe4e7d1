"""Local backbone weights: ``.keras`` / ``.weights.h5`` files and the BVLC GoogLeNet's Caffe weights."""

import os
from pathlib import Path

import keras
import numpy as np

from kerasml.models.backbones.googlenet import caffe_layer_names
from kerasml.models.backbones.torchvision_googlenet import GOOGLENET_IMAGENET_WEIGHTS

BVLC_GOOGLENET_URL = "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel"

_SUFFIXES = ((".keras", "keras"), (".h5", "h5"), (".mat", "caffe"), (".npz", "caffe"))


def weights_kind(weights):
    """What a ``weights`` argument of `get` is.

    Args:
        weights: ``None``, ``"imagenet"`` or a path (str or `os.PathLike`).

    Returns:
        ``None``, ``"imagenet"``, ``"keras"`` (a saved model), ``"h5"`` (a weights file) or
        ``"caffe"`` (a ``.mat``/``.npz`` file in Caffe layout).

    Raises:
        ValueError: for anything else.
        FileNotFoundError: for a path with a known suffix but no file.
    """
    if weights is None or weights == "imagenet":
        return weights
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "Invalid value for argument `weights`. Expected None, 'imagenet' or the path of a .keras, "
            f".weights.h5 (or .h5) file. Received: weights={weights!r}"
        )
    path = Path(weights)
    for suffix, kind in _SUFFIXES:
        if path.name.endswith(suffix):
            if not path.is_file():
                raise FileNotFoundError(f"Invalid value for argument `weights`: no file at {str(path)!r}.")
            return kind
    raise ValueError(
        "Invalid value for argument `weights`. Expected None, 'imagenet' or the path of a .keras, "
        f".weights.h5 (or .h5) file. Received: weights={str(path)!r}"
    )


def load_backbone_file(path):
    """A backbone saved as a ``.keras`` file, checked to be a feature model ``[B, H, W, C] -> [B, F]``.

    Args:
        path: the ``.keras`` file (str or `os.PathLike`).

    Returns:
        The loaded `keras.Model` (safe mode: kerasml's layers are registered, no ``Lambda``).

    Raises:
        ValueError: when the file does not hold a model with one output ``[B, F]``.
    """
    model = keras.saving.load_model(str(Path(path)))
    if not isinstance(model, keras.Model) or len(model.outputs) != 1 or len(model.output_shape) != 2:
        raise ValueError(
            f"Invalid value for argument `weights`: {str(Path(path))!r} does not hold a backbone "
            f"(a model with one output [B, F]); its output shape is {getattr(model, 'output_shape', None)}."
        )
    return model


def no_imagenet_message(canonical):
    """Why kerasml's own backbone ``canonical`` has no ``weights="imagenet"``, and what to do instead."""
    if canonical == "googlenet":
        return (
            "Invalid value for argument `weights`: kerasml cannot download ImageNet weights for 'googlenet' while "
            "building it. Run `kerasml weights googlenet` once (torchvision's ImageNet weights, converted to "
            f"{GOOGLENET_IMAGENET_WEIGHTS}) and pass variant='torchvision', weights='{GOOGLENET_IMAGENET_WEIGHTS}'. "
            "Or use weights=None to train from scratch, or pass a local file: a .weights.h5/.keras file saved from "
            "a kerasml googlenet, or, with variant='caffe', the BVLC ImageNet weights as a .mat/.npz file in Caffe "
            f"layout (convert {BVLC_GOOGLENET_URL}; see kerasml.models.backbones.load_caffe_weights). For "
            "downloadable ImageNet weights pick a keras.applications backbone, e.g. 'InceptionV3' or 'ResNet50'."
        )
    return (
        f"Invalid value for argument `weights`: there are no ImageNet weights for {canonical!r}, a small network "
        "meant to be trained from scratch. Use weights=None, a local .weights.h5/.keras file, or a "
        "keras.applications backbone (e.g. 'MobileNetV2') for ImageNet weights."
    )


def missing_weights_hint(path, backbone, options=None):
    """What to tell a user whose backbone weights file ``path`` does not exist.

    Args:
        path: the missing file (relative to the working directory or absolute).
        backbone: the canonical backbone name (``"googlenet"``, ...).
        options: the backbone's arguments (``{"variant": "torchvision"}``). Defaults to none.

    Returns:
        A sentence: where relative paths start and, for torchvision's GoogLeNet weights (``variant =
        "torchvision"`` or the default file name), the exact ``kerasml weights googlenet`` command
        that writes the file.

    Example:

    >>> "`kerasml weights googlenet`" in missing_weights_hint(GOOGLENET_IMAGENET_WEIGHTS, "googlenet")
    True
    """
    path = Path(path)
    hint = f"{path} does not exist (relative paths start from the working directory {Path.cwd()})."
    variant = (options or {}).get("variant")
    torchvision = variant == "torchvision" or path.name == Path(GOOGLENET_IMAGENET_WEIGHTS).name
    if backbone == "googlenet" and torchvision and path.name.endswith(".weights.h5"):
        to = "" if path == Path(GOOGLENET_IMAGENET_WEIGHTS) else f" --to {path.as_posix()}"
        hint += (
            f" Write it with `kerasml weights googlenet{to}` (downloads torchvision's ImageNet GoogLeNet, converts it)"
        )
        hint += "." if variant == "torchvision" else '; it is for the backbone option variant = "torchvision".'
    return hint


def load_caffe_weights(model, source):
    """Copy Caffe-layout GoogLeNet weights (e.g. BVLC ImageNet) into a `googlenet` model.

    The expected layout is the HDML authors' ``.mat`` conversion of
    ``bvlc_googlenet.caffemodel``: for every convolution, a key with the
    Caffe layer name (``"conv1/7x7_s2"``, ``"inception_3a/1x1"``...) holding
    the kernel as ``[out, in, kh, kw]``, and ``"<name>_bias"`` holding its bias.
    Kernels are transposed to Keras' ``[kh, kw, in, out]``. With
    ``variant="bn"`` (convolutions without bias) the biases are skipped and the
    batch-norm layers keep their initial values.

    The BVLC model was trained on BGR images minus the channel means, as
    ``preprocessing("googlenet", variant="caffe")`` describes. Its Caffe LRN
    differs slightly from the TensorFlow-style LRN used here (and by the HDML
    authors), so features are close to, not identical with, Caffe's.

    Args:
        model: a model built by `googlenet`.
        source: a mapping from Caffe names to arrays, or the path of a ``.mat``
            (read with ``scipy.io.loadmat``; needs SciPy) or ``.npz`` file.

    Returns:
        The names of the Keras layers that received weights.

    Raises:
        ValueError: when a weight is missing or has the wrong shape.

    Reference:
        BVLC GoogLeNet: https://github.com/BVLC/caffe/tree/master/models/bvlc_googlenet
    """
    if isinstance(source, (str, os.PathLike)):
        source = _read_caffe_file(Path(source))
    missing = []
    updates = []
    for caffe_name in caffe_layer_names():
        layer = model.get_layer(caffe_name.replace("/", "_"))
        if caffe_name not in source or (layer.use_bias and f"{caffe_name}_bias" not in source):
            missing.append(caffe_name)
            continue
        kernel = np.transpose(np.asarray(source[caffe_name], dtype="float32"), (2, 3, 1, 0))
        if kernel.shape != tuple(layer.kernel.shape):
            raise ValueError(
                f"Caffe weight {caffe_name!r} has shape {np.shape(source[caffe_name])} ([out, in, kh, kw]); "
                f"layer {layer.name!r} expects a kernel {tuple(layer.kernel.shape)} ([kh, kw, in, out])."
            )
        values = [kernel]
        if layer.use_bias:
            values.append(np.asarray(source[f"{caffe_name}_bias"], dtype="float32").reshape(-1))
        updates.append((layer, values))
    if missing:
        raise ValueError(f"Caffe weights missing for {len(missing)} layer(s): {', '.join(missing)}.")
    for layer, values in updates:
        layer.kernel.assign(values[0])
        if len(values) > 1:
            layer.bias.assign(values[1])
    return [layer.name for layer, _ in updates]


def _read_caffe_file(path):
    """``{Caffe name: array}`` from a ``.mat`` (SciPy) or ``.npz`` file."""
    if not path.exists():
        raise FileNotFoundError(f"No Caffe weight file at {str(path)!r}.")
    if path.suffix == ".mat":
        try:
            import scipy.io
        except ImportError as error:  # pragma: no cover - scipy ships with most installs
            raise ImportError("Reading a .mat weight file needs SciPy: pip install scipy") from error
        return scipy.io.loadmat(str(path))
    if path.suffix == ".npz":
        with np.load(path) as archive:
            return dict(archive)
    raise ValueError(
        f"Invalid value for argument `source`. Expected a .mat or .npz file or a mapping. Received: {str(path)!r}"
    )


__all__ = [
    "BVLC_GOOGLENET_URL",
    "load_backbone_file",
    "load_caffe_weights",
    "missing_weights_hint",
    "no_imagenet_message",
    "weights_kind",
]
