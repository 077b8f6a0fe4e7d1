"""GoogLeNet as torchvision builds it (``variant="torchvision"``) and the conversion of its ImageNet weights.

torchvision publishes ImageNet weights for its Inception-v1 (``googlenet-1378be20.pth``, the
TensorFlow-slim Inception-v1 ported to PyTorch). Its network is not the paper's: `torchvision_googlenet`
builds it layer for layer, and `convert_torchvision_googlenet` turns its state dict into a Keras
``.weights.h5`` file that every backend loads (``kerasml weights googlenet`` downloads and converts
it in one command).
"""

import os
from pathlib import Path

import keras
import numpy as np

from kerasml.models.backbones._common import INCEPTION_MODULES, check_input_shape, conv_block, max_pool_ceil

__all__ = [
    "GOOGLENET_IMAGENET_WEIGHTS",
    "TORCHVISION_GOOGLENET_LAST_WORKED",
    "TORCHVISION_GOOGLENET_SHA256_PREFIX",
    "TORCHVISION_GOOGLENET_URL",
    "convert_torchvision_googlenet",
    "load_torchvision_weights",
    "read_torch_state_dict",
    "torchvision_googlenet",
    "torchvision_module_names",
]

#: torchvision's ImageNet weights of its GoogLeNet (``GoogLeNet_Weights.IMAGENET1K_V1``).
TORCHVISION_GOOGLENET_URL = "https://download.pytorch.org/models/googlenet-1378be20.pth"
#: The hex digits in the file name: the first digits of the file's SHA-256 (``torch.hub``'s convention).
TORCHVISION_GOOGLENET_SHA256_PREFIX = "1378be20"
#: When the URL was last known to serve the file, and who said so.
TORCHVISION_GOOGLENET_LAST_WORKED = (
    "2025-10 (the address of GoogLeNet_Weights.IMAGENET1K_V1 in torchvision 0.24; unchanged since torchvision 0.3, "
    "2019)"
)
#: Where ``kerasml weights googlenet`` writes the converted weights (relative to the working directory).
GOOGLENET_IMAGENET_WEIGHTS = "weights/googlenet_torchvision_imagenet.weights.h5"

# torchvision's BatchNorm2d keeps its default momentum 0.1 (new = 0.9 old + 0.1 batch): Keras' 0.9.
_MOMENTUM = 0.9
# transform_input: ImageNet-standardised RGB -> (x / 255 - 0.5) / 0.5, per channel: x * scale + offset.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_TRANSFORM_SCALE = [s / 0.5 for s in _IMAGENET_STD]
_TRANSFORM_OFFSET = [(m - 0.5) / 0.5 for m in _IMAGENET_MEAN]
# Entries of torchvision's state dict that the feature extractor has no use for.
_UNUSED_PREFIXES = ("aux1.", "aux2.", "fc.")
_BATCH_NORM = (
    ("gamma", "weight"),
    ("beta", "bias"),
    ("moving_mean", "running_mean"),
    ("moving_variance", "running_var"),
)


def torchvision_module_names():
    """torchvision's names of the conv-BN-ReLU blocks of GoogLeNet, in network order.

    Returns:
        ``["conv1", "conv2", "conv3", "inception3a.branch1", "inception3a.branch2.0", ...]``; the
        state dict holds ``<name>.conv.weight`` and ``<name>.bn.{weight, bias, running_mean,
        running_var}`` for each, and the Keras layers are ``<name>`` with ``.`` → ``_`` (the
        convolution), ``..._bn`` and ``..._relu``.
    """
    names = ["conv1", "conv2", "conv3"]
    for module in INCEPTION_MODULES:
        names += [f"inception{module}.{block}" for block in ("branch1", "branch2.0", "branch2.1", "branch3.0")]
        names += [f"inception{module}.{block}" for block in ("branch3.1", "branch4.1")]
    return names


def _inception(x, module):
    n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj = INCEPTION_MODULES[module]
    prefix = f"inception{module}"

    def block(inputs, filters, kernel_size, name):
        return conv_block(inputs, filters, kernel_size, f"{prefix}_{name}", momentum=_MOMENTUM)

    branch1 = block(x, n1x1, 1, "branch1")
    branch2 = block(block(x, n3x3_reduce, 1, "branch2_0"), n3x3, 3, "branch2_1")
    # torchvision's "5x5" branch convolves 3x3 (pytorch/vision#906: kept for its published weights).
    branch3 = block(block(x, n5x5_reduce, 1, "branch3_0"), n5x5, 3, "branch3_1")
    # 3x3 stride-1 max-pool padded by 1 (with -inf, as Keras' "same" pooling): the size is kept.
    branch4 = keras.layers.MaxPooling2D(
        3, strides=1, padding="same", data_format="channels_last", name=f"{prefix}_branch4_0"
    )(x)
    branch4 = block(branch4, pool_proj, 1, "branch4_1")
    return keras.layers.Concatenate(axis=-1, name=f"{prefix}_output")([branch1, branch2, branch3, branch4])


def torchvision_googlenet(input_shape=(224, 224, 3), name="googlenet"):
    """torchvision's GoogLeNet (Inception-v1) feature extractor: images ``[B, H, W, C]`` → ``[B, 1024]``.

    ``googlenet(variant="torchvision")`` builds this network: the layout of
    ``torchvision.models.googlenet`` (the one its ImageNet weights ``googlenet-1378be20.pth``
    fit, see `convert_torchvision_googlenet`) up to its global average pooling. It differs
    from the paper's GoogLeNet (Szegedy et al. 2015; `googlenet` ``"caffe"``, and ``"bn"``
    which only adds batch-norm to it) in exactly these points:

    - every convolution is conv (no bias) → batch-norm (ε 1e-3; momentum 0.9 in Keras'
      convention, i.e. PyTorch's default 0.1) → ReLU; no local response normalisation;
    - the branch the paper calls 5×5 (``#5x5`` filters of table 1) convolves **3×3**
      (pytorch/vision#906: a porting slip kept because the weights were trained with it);
    - the max-pool after inception 4e is **2×2** stride 2 (the paper's is 3×3 stride 2);
    - ``transform_input``: the first layer (``transform_input``, a per-channel
      `keras.layers.Rescaling`) maps ImageNet-standardised RGB to RGB on [−1, 1]
      (``x · std / 0.5 + (mean − 0.5) / 0.5``, what torchvision applies with its pretrained
      weights), so the input is standardised exactly as for any torchvision model:
      ``preprocessing("googlenet", variant="torchvision")`` is the ImageNet mean/std;
    - no auxiliary heads, dropout or classifier (their weights are skipped on conversion).

    What it shares with the other variants: the channel counts of table 1, ceil-mode max-pooling
    (3×3 stride 2 after the stem and after inception 3b), stride-2 ``conv1`` padded by 3 on
    every side, and a global average pooling over the final map (7×7 at 224 pixels; any size
    from 32 pixels). 5,599,904 trainable parameters (torchvision's 6,624,904 without its 1000-way
    classifier) plus 14,560 batch-norm moving statistics.

    Layers carry torchvision's module names with ``.`` replaced by ``_``: ``conv1`` (then
    ``conv1_bn``, ``conv1_relu``), ``maxpool1``, ``conv2``, ``conv3``, ``maxpool2``,
    ``inception3a_branch1``, ``inception3a_branch2_0``, ``inception3a_branch2_1``,
    ``inception3a_branch3_0``, ``inception3a_branch3_1``, ``inception3a_branch4_0`` (the pool),
    ``inception3a_branch4_1``, ``inception3a_output``, ..., ``maxpool4``, ``inception5b_output``,
    ``avgpool``.

    Args:
        input_shape: ``(height, width, channels)``; sides may be ``None`` (variable size),
            otherwise at least 32. Defaults to ``(224, 224, 3)``.
        name: model name. Defaults to ``"googlenet"``.

    Returns:
        A functional `keras.Model` with output ``[B, 1024]``.

    Example:

    >>> model = torchvision_googlenet(input_shape=(64, 64, 3))
    >>> model.output_shape, tuple(model.get_layer("inception3a_branch3_1").kernel.shape)
    ((None, 1024), (3, 3, 16, 32))
    """
    input_shape = check_input_shape(input_shape, 32, "googlenet")
    images = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Rescaling(_TRANSFORM_SCALE, _TRANSFORM_OFFSET, name="transform_input")(images)
    x = conv_block(x, 64, 7, "conv1", strides=2, momentum=_MOMENTUM)
    x = max_pool_ceil(x, "maxpool1")
    x = conv_block(x, 64, 1, "conv2", momentum=_MOMENTUM)
    x = conv_block(x, 192, 3, "conv3", momentum=_MOMENTUM)
    x = max_pool_ceil(x, "maxpool2")
    for module in INCEPTION_MODULES:
        x = _inception(x, module)
        if module == "3b":
            x = max_pool_ceil(x, "maxpool3")
        elif module == "4e":
            x = max_pool_ceil(x, "maxpool4", pool_size=2, strides=2)
    features = keras.layers.GlobalAveragePooling2D(data_format="channels_last", name="avgpool")(x)
    return keras.Model(images, features, name=name)


def read_torch_state_dict(path):
    """The tensors of a PyTorch ``.pth`` checkpoint as NumPy arrays (needs PyTorch).

    Args:
        path: a file written by ``torch.save`` holding a state dict (or a dict with one under
            ``"state_dict"``); read with ``torch.load(..., weights_only=True)``, so no code in
            it runs.

    Returns:
        ``{name: float32 array}``.

    Raises:
        ImportError: when PyTorch is not installed (the message says ``pip install torch``).
        FileNotFoundError: when there is no file at ``path``.
        ValueError: when the file is not a PyTorch checkpoint holding a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No PyTorch weights file at {str(path)!r}.")
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"Reading {path.name} (a PyTorch checkpoint) needs PyTorch, which is not installed: `pip install torch` "
            "(the CPU build is enough; the converted .weights.h5 then loads without it, on every backend)."
        ) from error
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, zip and runtime errors alike for a foreign file
        raise ValueError(
            f"Cannot read {str(path)!r} as a PyTorch checkpoint ({type(error).__name__}: {error}). Expected the "
            f"state dict torchvision publishes ({TORCHVISION_GOOGLENET_URL.rsplit('/', 1)[-1]})."
        ) from error
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(hasattr(v, "numpy") for v in checkpoint.values()):
        raise ValueError(
            f"{str(path)!r} holds a {type(checkpoint).__name__}, not a state dict (a dict of tensors). Save one with "
            "torch.save(model.state_dict(), path)."
        )
    return {str(key): value.detach().cpu().float().numpy() for key, value in checkpoint.items()}


def _state_dict(source):
    state = read_torch_state_dict(source) if isinstance(source, (str, os.PathLike)) else dict(source)
    state = {str(key): value for key, value in state.items()}
    if state and all(key.startswith("module.") for key in state):  # saved from nn.DataParallel
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def _array(value):
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype="float32")


def load_torchvision_weights(model, source):
    """Copy a torchvision GoogLeNet state dict into a `torchvision_googlenet` model.

    For each block of `torchvision_module_names`: ``<name>.conv.weight`` ``[out, in, kh, kw]``
    becomes the kernel ``[kh, kw, in, out]`` of layer ``<name>`` (``.`` → ``_``), and
    ``<name>.bn.weight / bias / running_mean / running_var`` the ``gamma / beta / moving_mean /
    moving_variance`` of ``<name>_bn``. The auxiliary heads (``aux1.*``, ``aux2.*``), the classifier
    (``fc.*``) and ``num_batches_tracked`` are skipped. Nothing is assigned unless every weight is
    there with its shape.

    Args:
        model: a model built by `torchvision_googlenet` (``googlenet(variant="torchvision")``).
        source: a state dict (``{name: tensor or array}``, e.g. ``torchvision.models.googlenet(
            weights="IMAGENET1K_V1").state_dict()``; keys saved from ``nn.DataParallel``, prefixed
            ``module.``, are accepted) or the path of a ``.pth`` file (`read_torch_state_dict`).

    Returns:
        The names of the Keras layers that received weights.

    Raises:
        ValueError: when a weight is missing or has the wrong shape, or the state dict holds
            entries no GoogLeNet block uses (not torchvision's GoogLeNet).
        ImportError: for a ``.pth`` path without PyTorch installed.
    """
    state = _state_dict(source)
    used, missing, updates = set(), [], []
    for module in torchvision_module_names():
        keys = [f"{module}.conv.weight"] + [f"{module}.bn.{torch_name}" for _, torch_name in _BATCH_NORM]
        used.update(keys)
        absent = [key for key in keys if key not in state]
        if absent:
            missing += absent
            continue
        conv = model.get_layer(module.replace(".", "_"))
        batch_norm = model.get_layer(f"{module.replace('.', '_')}_bn")
        kernel = np.transpose(_array(state[keys[0]]), (2, 3, 1, 0))
        if kernel.shape != tuple(conv.kernel.shape):
            raise ValueError(
                f"torchvision weight {keys[0]!r} has shape {np.shape(state[keys[0]])} ([out, in, kh, kw]); layer "
                f"{conv.name!r} expects a kernel {tuple(conv.kernel.shape)} ([kh, kw, in, out]). Is it a torchvision "
                "GoogLeNet state dict?"
            )
        updates.append((conv.kernel, kernel))
        for (keras_name, _), key in zip(_BATCH_NORM, keys[1:]):
            variable = getattr(batch_norm, keras_name)
            value = _array(state[key]).reshape(-1)
            if value.shape != tuple(variable.shape):
                raise ValueError(
                    f"torchvision weight {key!r} has shape {np.shape(state[key])}; layer {batch_norm.name!r} expects "
                    f"{tuple(variable.shape)}."
                )
            updates.append((variable, value))
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise ValueError(
            f"The state dict lacks {len(missing)} weight(s) of torchvision's GoogLeNet: {shown}. Expected the state "
            f"dict of torchvision.models.googlenet ({TORCHVISION_GOOGLENET_URL.rsplit('/', 1)[-1]})."
        )
    unknown = sorted(
        key
        for key in state
        if key not in used and not key.startswith(_UNUSED_PREFIXES) and not key.endswith(".num_batches_tracked")
    )
    if unknown:
        shown = ", ".join(unknown[:6]) + (f" and {len(unknown) - 6} more" if len(unknown) > 6 else "")
        raise ValueError(
            f"The state dict holds {len(unknown)} entries that torchvision's GoogLeNet does not have: {shown}. "
            "It is the state dict of another network."
        )
    for variable, value in updates:
        variable.assign(value)
    return [module.replace(".", "_") for module in torchvision_module_names()]


def convert_torchvision_googlenet(source, out=GOOGLENET_IMAGENET_WEIGHTS):
    """Write torchvision's GoogLeNet weights as a Keras ``.weights.h5`` file for ``googlenet(variant="torchvision")``.

    The file loads on every backend, without PyTorch:
    ``backbones.get("googlenet", variant="torchvision", weights=out)`` (any input size ≥ 32),
    or a spec with ``backbone_options = { variant = "torchvision" }`` and ``weights = out``.

    Args:
        source: the ``.pth`` file (needs PyTorch to read) or a state dict, as for
            `load_torchvision_weights`.
        out: the file to write; its name must end with ``.weights.h5``; parent folders are
            created. Defaults to `GOOGLENET_IMAGENET_WEIGHTS`
            (``"weights/googlenet_torchvision_imagenet.weights.h5"``).

    Returns:
        The written path.

    Raises:
        ValueError: for an ``out`` not ending with ``.weights.h5``, or a state dict that is not
            torchvision's GoogLeNet (`load_torchvision_weights`).
        ImportError: for a ``.pth`` file without PyTorch installed.
        FileNotFoundError: for a missing ``.pth`` file.
    """
    out = Path(out)
    if not out.name.endswith(".weights.h5"):
        raise ValueError(
            "Invalid value for argument `out`. Expected a file name ending with .weights.h5 (Keras' weights format). "
            f"Received: out={str(out)!r}"
        )
    state = _state_dict(source)
    model = torchvision_googlenet(input_shape=(224, 224, 3))
    load_torchvision_weights(model, state)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name[: -len(".weights.h5")] + ".partial.weights.h5")
    model.save_weights(str(partial))
    os.replace(partial, out)
    return out
