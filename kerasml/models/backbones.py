"""Backbones: image → pooled feature vector ``y`` of shape ``[B, F]``.

A backbone is a plain `keras.Model` built with the functional API from public
``keras`` layers only (channels-last), so it trains, saves (``.keras``,
``.weights.h5``) and reloads under TensorFlow, PyTorch and JAX.

==================  ========  ==============================================
name                F         notes
==================  ========  ==============================================
``"googlenet"``     1024      Inception-v1 (Szegedy et al. 2015), ~6 M
                              parameters; ``variant="bn"`` (default) or the
                              HDML authors' BVLC ``variant="caffe"``
``"small_cnn"``     128       a few conv-BN-ReLU blocks, for tests and CPU
                              quickstarts; works from 8×8 greyscale up
any                 varies    a `keras.applications` model (``"ResNet50"``,
`keras.applications`          ``"mobilenet_v2"``...), ``include_top=False,
name                          pooling="avg"``
==================  ========  ==============================================

Every backbone expects images preprocessed as `preprocessing` describes;
the data pipeline starts from RGB images on the 0–255 scale and calls
`Preprocessing.apply`.

Example:

>>> from kerasml.models import backbones
>>> model = backbones.get("small_cnn", input_shape=(32, 32, 3), feature_dim=64)
>>> model.output_shape
(None, 64)
>>> backbones.preprocessing("googlenet", variant="caffe").channel_order
'BGR'
"""

import dataclasses
import difflib
import functools
import inspect
import os
import re
import types

import keras
import numpy as np
from keras import ops

GOOGLENET_VARIANTS = ("bn", "caffe")

# Inception modules of GoogLeNet (Szegedy et al. 2015, table 1):
# name: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
_INCEPTION_MODULES = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
# A max-pool (3×3, stride 2, Caffe ceil mode) follows these modules.
_POOL_AFTER = {"3b": "pool3_3x3_s2", "4e": "pool4_3x3_s2"}
# Smallest input side for which every pooling window fits.
_GOOGLENET_MIN_SIZE = 32

BVLC_GOOGLENET_URL = "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel"


def _check_choice(argument, value, choices):
    if value not in choices:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected one of {choices}. Received: {argument}={value!r}"
        )


def _check_input_shape(input_shape, min_size=1, model="backbone"):
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(
            "Invalid value for argument `input_shape`. Expected (height, width, channels) (channels last). "
            f"Received: input_shape={input_shape!r}"
        )
    for side in shape[:2]:
        if side is not None and side < min_size:
            raise ValueError(
                f"Invalid value for argument `input_shape`. {model} needs images of at least "
                f"{min_size}×{min_size} pixels. Received: input_shape={input_shape!r}"
            )
    return shape


# ----------------------------------------------------------------------------------------------
# Initialisation


@keras.saving.register_keras_serializable(package="kerasml")
class HostHeNormal(keras.initializers.Initializer):
    """He-normal initialisation drawn on the host with NumPy.

    The same distribution as `keras.initializers.HeNormal`: a normal truncated
    at two standard deviations, scaled to variance ``2 / fan_in``. Drawing it
    with NumPy instead of the backend's random ops saves JAX one XLA
    compilation per distinct kernel shape (GoogLeNet has dozens; on a CPU
    that is ~25 s of building time, against ~1 s this way).

    Args:
        seed: an int for a reproducible, per-instance stream
            (``numpy.random.default_rng(seed)``), or ``None`` (the default) to
            draw from NumPy's global generator, which
            `keras.utils.set_random_seed` seeds.
    """

    def __init__(self, seed=None):
        self.seed = seed
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def __call__(self, shape, dtype=None):
        shape = tuple(int(d) for d in shape)
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else shape[0]
        # std of a unit normal truncated at ±2 σ (the constant Keras uses).
        stddev = np.sqrt(2.0 / max(fan_in, 1)) / 0.87962566103423978
        rng = self._rng if self._rng is not None else np.random
        draws = rng.standard_normal(shape)
        outside = np.abs(draws) > 2.0
        while outside.any():
            draws[outside] = rng.standard_normal(int(outside.sum()))
            outside = np.abs(draws) > 2.0
        return (draws * stddev).astype("float32")

    def get_config(self):
        return {"seed": self.seed}


# ----------------------------------------------------------------------------------------------
# Local response normalisation (the BVLC GoogLeNet's LRN, as TensorFlow computes it)


@keras.saving.register_keras_serializable(package="kerasml")
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalisation across channels, as ``tf.nn.local_response_normalization``.

    ``out[..., c] = x[..., c] / (bias + alpha · Σ_{|k − c| ≤ depth_radius} x[..., k]²) ** beta``

    (TensorFlow's convention: the window holds ``2·depth_radius + 1`` channels and
    ``alpha`` is *not* divided by the window size, unlike Caffe's ``LRN`` layer.)
    The defaults are those of the HDML authors' GoogLeNet. Computed in float32
    whatever the layer's dtype policy; the window sum is one matmul with a
    banded 0/1 matrix, so it costs little on every backend.

    Args:
        depth_radius: half-width of the channel window. Defaults to ``5``.
        bias: additive constant, > 0. Defaults to ``1.0``.
        alpha: scale of the sum of squares. Defaults to ``1e-4``.
        beta: exponent. Defaults to ``0.75``.
        **kwargs: `keras.layers.Layer` arguments (``name``, ``dtype``...).

    Example:

    >>> import numpy as np
    >>> layer = LocalResponseNormalization(depth_radius=1, bias=1.0, alpha=1.0, beta=1.0)
    >>> np.round(keras.ops.convert_to_numpy(layer(np.array([[1.0, 2.0]]))), 4)
    array([[0.1667, 0.3333]], dtype=float32)
    """

    def __init__(self, depth_radius=5, bias=1.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        if int(depth_radius) != depth_radius or depth_radius < 0:
            raise ValueError(
                "Invalid value for argument `depth_radius`. Expected an integer >= 0. "
                f"Received: depth_radius={depth_radius!r}"
            )
        if bias <= 0:
            raise ValueError(f"Invalid value for argument `bias`. Expected a number > 0. Received: bias={bias!r}")
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self._band = None

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("LocalResponseNormalization needs a known number of channels (last axis).")
        index = np.arange(channels)
        # band[k, c] = 1 when channel k lies in the window of channel c.
        self._band = (np.abs(index[:, None] - index[None, :]) <= self.depth_radius).astype("float32")

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        window_sum = ops.matmul(ops.square(x), ops.convert_to_tensor(self._band))  # [..., C]
        y = x / ops.power(self.bias + self.alpha * window_sum, self.beta)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha, beta=self.beta)
        return config


# ----------------------------------------------------------------------------------------------
# GoogLeNet / Inception-v1


def _conv(x, filters, kernel_size, name, variant, strides=1):
    """Conv → (BN) → ReLU, named after the Caffe layer (``/`` becomes ``_``)."""
    padding = "same"
    if strides > 1:
        # Caffe/PyTorch pad symmetrically (k // 2 on each side); Keras "same" would pad
        # asymmetrically for stride 2, so pad explicitly and convolve "valid".
        x = keras.layers.ZeroPadding2D(kernel_size // 2, data_format="channels_last", name=f"{name}_pad")(x)
        padding = "valid"
    use_bn = variant == "bn"
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=not use_bn,
        kernel_initializer=HostHeNormal(),
        data_format="channels_last",
        name=name,
    )(x)
    if use_bn:
        x = keras.layers.BatchNormalization(axis=-1, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _max_pool_ceil(x, name, pool_size=3, strides=2):
    """Max-pooling with Caffe's rounding up of the output size, for any input size.

    Caffe's output side is ``ceil((n − k) / s) + 1``. Padding the bottom and right by
    ``s − 1`` and pooling "valid" gives ``floor((n + s − 1 − k) / s) + 1``, the same
    number, and (k ≥ s) every window still starts inside the image. The padding is
    zeros, which stand in for −∞ because every input here is a ReLU (or LRN of a
    ReLU) output, hence ≥ 0.
    """
    pad = strides - 1
    x = keras.layers.ZeroPadding2D(((0, pad), (0, pad)), data_format="channels_last", name=f"{name}_pad")(x)
    return keras.layers.MaxPooling2D(pool_size, strides, padding="valid", data_format="channels_last", name=name)(x)


def _lrn(x, name):
    return LocalResponseNormalization(depth_radius=5, bias=1.0, alpha=1e-4, beta=0.75, name=name)(x)


def _inception(x, module, variant):
    n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj = _INCEPTION_MODULES[module]
    prefix = f"inception_{module}"
    branch_1x1 = _conv(x, n1x1, 1, f"{prefix}_1x1", variant)
    branch_3x3 = _conv(x, n3x3_reduce, 1, f"{prefix}_3x3_reduce", variant)
    branch_3x3 = _conv(branch_3x3, n3x3, 3, f"{prefix}_3x3", variant)
    branch_5x5 = _conv(x, n5x5_reduce, 1, f"{prefix}_5x5_reduce", variant)
    branch_5x5 = _conv(branch_5x5, n5x5, 5, f"{prefix}_5x5", variant)
    branch_pool = keras.layers.MaxPooling2D(
        3, strides=1, padding="same", data_format="channels_last", name=f"{prefix}_pool"
    )(x)
    branch_pool = _conv(branch_pool, pool_proj, 1, f"{prefix}_pool_proj", variant)
    return keras.layers.Concatenate(axis=-1, name=f"{prefix}_output")([branch_1x1, branch_3x3, branch_5x5, branch_pool])


def googlenet(input_shape=(224, 224, 3), variant="bn", name="googlenet"):
    """GoogLeNet (Inception-v1) feature extractor: images ``[B, H, W, C]`` → features ``[B, 1024]``.

    The network of Szegedy et al. (2015) up to and including its last pooling:
    the stem, nine inception modules, and a global average pooling over the
    final feature map (Caffe's ``pool5/7x7_s1``: at 224 or 227 pixels the map
    is 7×7, and the global average makes the network size-agnostic down to
    32 pixels). No dropout, no classifier, no auxiliary heads: 5,973,552
    parameters (``"caffe"``; the 1000-way classifier of the paper would add
    1,025,000) or 5,980,832 trainable ones plus 14,560 batch-norm moving
    statistics (``"bn"``).

    Layers are named after the BVLC Caffe prototxt with ``/`` (which Keras
    refuses in names) replaced by ``_``: ``conv1_7x7_s2``, ``pool1_3x3_s2``,
    ``conv2_3x3_reduce``, ``inception_3a_1x1``, ``inception_3a_pool_proj``,
    ``inception_3a_output``, ... ``pool5_7x7_s1``. Batch-norm and ReLU layers
    add ``_bn`` and ``_relu`` to the name of their convolution.

    Both variants emulate Caffe's "ceil" pooling (the output side rounded up)
    with explicit zero padding on the bottom/right, and pad the stride-2
    ``conv1`` symmetrically by 3, so feature-map sizes match Caffe's at every
    input size (224 → 112, 56, 28, 14, 7; 227 → 114, 57, 28, 14, 7).

    Variants:
        - ``"bn"`` (default): every convolution is followed by batch-norm
          (no conv bias; Keras defaults, momentum 0.99 and ε 1e-3) and ReLU; no
          LRN. This is the batch-normalised Inception-v1 of torchvision and of
          much of the metric-learning literature that trains GoogLeNet-sized
          models (it is *not* Ioffe & Szegedy's "BN-Inception", which has
          different modules and ~10 M parameters).
        - ``"caffe"``: the BVLC release the HDML authors fine-tuned: conv +
          bias + ReLU, local response normalisation after ``pool1`` and after
          ``conv2/3x3`` (TensorFlow-style, radius 5, bias 1, α 1e-4, β 0.75, as
          in their code; see `LocalResponseNormalization`). Load the BVLC
          ImageNet weights with `load_caffe_weights`.

    Kernels are He-normal initialised (`HostHeNormal`), so both variants also
    train from scratch.
    Inputs: see `preprocessing` (``"bn"``: ImageNet mean/std on RGB in [0, 1];
    ``"caffe"``: BGR minus (104, 117, 123) on the 0–255 scale).

    Args:
        input_shape: ``(height, width, channels)``; sides may be ``None``
            (variable size), otherwise at least 32. Defaults to ``(224, 224, 3)``.
        variant: ``"bn"`` or ``"caffe"``. Defaults to ``"bn"``.
        name: model name. Defaults to ``"googlenet"``.

    Returns:
        A functional `keras.Model` with output ``[B, 1024]``.

    Raises:
        ValueError: for an unknown ``variant`` or an input too small.

    Reference:
        Szegedy et al., "Going Deeper with Convolutions", CVPR 2015,
        https://arxiv.org/abs/1409.4842

    Example:

    >>> model = googlenet(input_shape=(224, 224, 3))
    >>> model.output_shape
    (None, 1024)
    >>> model.get_layer("inception_3a_output").output.shape
    (None, 28, 28, 256)
    """
    _check_choice("variant", variant, GOOGLENET_VARIANTS)
    input_shape = _check_input_shape(input_shape, _GOOGLENET_MIN_SIZE, "googlenet")
    images = keras.Input(shape=input_shape, name="images")
    x = _conv(images, 64, 7, "conv1_7x7_s2", variant, strides=2)
    x = _max_pool_ceil(x, "pool1_3x3_s2")
    if variant == "caffe":
        x = _lrn(x, "pool1_norm1")
    x = _conv(x, 64, 1, "conv2_3x3_reduce", variant)
    x = _conv(x, 192, 3, "conv2_3x3", variant)
    if variant == "caffe":
        x = _lrn(x, "conv2_norm2")
    x = _max_pool_ceil(x, "pool2_3x3_s2")
    for module in _INCEPTION_MODULES:
        x = _inception(x, module, variant)
        if module in _POOL_AFTER:
            x = _max_pool_ceil(x, _POOL_AFTER[module])
    features = keras.layers.GlobalAveragePooling2D(data_format="channels_last", name="pool5_7x7_s1")(x)
    return keras.Model(images, features, name=name)


def _googlenet_caffe_layers():
    """Caffe names of GoogLeNet's convolutions, in network order."""
    names = ["conv1/7x7_s2", "conv2/3x3_reduce", "conv2/3x3"]
    for module in _INCEPTION_MODULES:
        names += [
            f"inception_{module}/{branch}" for branch in ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj")
        ]
    return names


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
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"No Caffe weight file at {path!r}.")
        if path.endswith(".mat"):
            try:
                import scipy.io
            except ImportError as error:  # pragma: no cover - scipy ships with most installs
                raise ImportError("Reading a .mat weight file needs SciPy: pip install scipy") from error
            source = scipy.io.loadmat(path)
        elif path.endswith(".npz"):
            with np.load(path) as archive:
                source = dict(archive)
        else:
            raise ValueError(
                f"Invalid value for argument `source`. Expected a .mat or .npz file or a mapping. Received: {path!r}"
            )
    missing = []
    updates = []
    for caffe_name in _googlenet_caffe_layers():
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


# ----------------------------------------------------------------------------------------------
# Small CNN


def small_cnn(input_shape=(32, 32, 3), feature_dim=128, filters=(32, 64), name="small_cnn"):
    """A small CNN feature extractor for tests and CPU quickstarts.

    ``len(filters)`` blocks of 3×3 conv → batch-norm → ReLU → 2×2 max-pool
    ("same" padding, so an 8×8 input still works), then a conv-BN-ReLU block
    with ``feature_dim`` filters and a global average pooling. Features are
    ≥ 0 (post-ReLU), as GoogLeNet's are. About 94 k parameters with the
    defaults.

    Args:
        input_shape: ``(height, width, channels)``, any size ≥ 1 (``None`` sides
            allowed), e.g. ``(8, 8, 1)`` or ``(32, 32, 3)``. Defaults to ``(32, 32, 3)``.
        feature_dim: size ``F`` of the output features. Defaults to ``128``.
        filters: filters of the hidden blocks. Defaults to ``(32, 64)``.
        name: model name. Defaults to ``"small_cnn"``.

    Returns:
        A functional `keras.Model` with output ``[B, feature_dim]``.

    Example:

    >>> small_cnn(input_shape=(8, 8, 1), feature_dim=16).output_shape
    (None, 16)
    """
    input_shape = _check_input_shape(input_shape)
    if int(feature_dim) != feature_dim or feature_dim < 1:
        raise ValueError(
            f"Invalid value for argument `feature_dim`. Expected an integer >= 1. Received: feature_dim={feature_dim!r}"
        )
    images = keras.Input(shape=input_shape, name="images")
    x = images
    widths = [*filters, int(feature_dim)]
    for i, width in enumerate(widths, start=1):
        x = keras.layers.Conv2D(
            width, 3, padding="same", use_bias=False, kernel_initializer=HostHeNormal(), name=f"block{i}_conv"
        )(x)
        x = keras.layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = keras.layers.ReLU(name=f"block{i}_relu")(x)
        if i < len(widths):
            x = keras.layers.MaxPooling2D(2, padding="same", name=f"block{i}_pool")(x)
    features = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(images, features, name=name)


# ----------------------------------------------------------------------------------------------
# Preprocessing


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a backbone wants its input images scaled.

    Starting from RGB images on the 0–255 scale (what kerasml's data pipeline
    produces), `apply` computes, per channel ``c``::

        x = images[..., ::-1] if channel_order == "BGR" else images
        out[..., c] = (x[..., c] * scale - mean[c]) / std[c]

    ``mean`` and ``std`` are in the units of ``x * scale`` and in
    ``channel_order``; a 1-tuple broadcasts over all channels (e.g. greyscale).

    Attributes:
        mean: per-channel values subtracted after scaling.
        std: per-channel divisors.
        channel_order: ``"RGB"`` or ``"BGR"`` (order the network expects).
        scale: factor applied first, e.g. ``1/255``.

    Example:

    >>> import numpy as np
    >>> caffe = Preprocessing(mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), channel_order="BGR")
    >>> caffe.apply(np.array([[[255.0, 0.0, 0.0]]]))
    array([[[-104., -117.,  132.]]], dtype=float32)
    """

    mean: tuple = (0.0,)
    std: tuple = (1.0,)
    channel_order: str = "RGB"
    scale: float = 1.0

    def __post_init__(self):
        _check_choice("channel_order", self.channel_order, ("RGB", "BGR"))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "scale", float(self.scale))

    def apply(self, images):
        """Preprocess a NumPy batch (or image) of RGB values on the 0–255 scale.

        Args:
            images: array ``[..., H, W, C]``, RGB, values in [0, 255].

        Returns:
            A float32 NumPy array of the same shape.
        """
        x = np.asarray(images, dtype="float32")
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        mean = np.asarray(self.mean, dtype="float32")
        std = np.asarray(self.std, dtype="float32")
        return ((x * np.float32(self.scale) - mean) / std).astype("float32")

    def to_config(self):
        """The fields as a plain dict (JSON/TOML friendly)."""
        return dataclasses.asdict(self)


IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_GOOGLENET_MEAN_BGR = (104.0, 117.0, 123.0)

_GOOGLENET_PREPROCESSING = {
    # Trained from scratch or from torchvision-style weights: standardised RGB.
    "bn": Preprocessing(mean=IMAGENET_MEAN_RGB, std=IMAGENET_STD_RGB, channel_order="RGB", scale=1 / 255),
    # BVLC Caffe weights and the HDML authors: BGR minus the channel means, 0–255 scale.
    "caffe": Preprocessing(mean=CAFFE_GOOGLENET_MEAN_BGR, std=(1.0, 1.0, 1.0), channel_order="BGR", scale=1.0),
}
_SMALL_CNN_PREPROCESSING = Preprocessing(mean=(0.5,), std=(0.5,), channel_order="RGB", scale=1 / 255)


def _probe_preprocess_input(function):
    """Read the affine map and channel order of a ``keras.applications`` ``preprocess_input``."""

    def run(x):
        return np.asarray(ops.convert_to_numpy(function(x.copy())), dtype="float64").reshape(3)

    zero = np.zeros((1, 1, 1, 3), dtype="float32")
    offset = run(zero)
    slope = np.zeros(3)
    source = [None, None, None]  # source[c]: input channel feeding output channel c
    for k in range(3):
        probe = zero.copy()
        probe[..., k] = 255.0
        delta = (run(probe) - offset) / 255.0
        (changed,) = np.nonzero(np.abs(delta) > 1e-9)
        if len(changed) != 1:
            raise ValueError(f"{function} is not a per-channel affine preprocessing.")
        source[changed[0]] = k
        slope[changed[0]] = delta[changed[0]]
    if source == [0, 1, 2]:
        channel_order = "RGB"
    elif source == [2, 1, 0]:
        channel_order = "BGR"
    else:
        raise ValueError(f"{function} permutes channels as {source}, neither RGB nor BGR.")
    if np.allclose(slope, slope[0], rtol=1e-5):
        # Same factor for every channel ("caffe", "tf", pass-through): no std.
        scale = 1.0 / round(1.0 / slope[0], 3)
        std = np.ones(3)
    else:
        # Per-channel factors ("torch"): [0, 1] scale, std = scale / slope.
        scale = 1.0 / 255.0
        std = scale / slope
    mean = -offset * std
    # preprocess_input computes in float32: round off its noise (4 decimals keep 103.939, 0.485...).
    return Preprocessing(
        mean=tuple(round(float(m), 4) + 0.0 for m in mean),
        std=tuple(round(float(s), 4) + 0.0 for s in std),
        channel_order=channel_order,
        scale=scale,
    )


def preprocessing(name, **kwargs):
    """The input preprocessing a backbone expects, as a `Preprocessing`.

    - ``"googlenet"``: ``variant="bn"`` (default): RGB scaled to [0, 1], minus
      the ImageNet mean (0.485, 0.456, 0.406), divided by its std (0.229, 0.224,
      0.225). ``variant="caffe"``: the BVLC/HDML convention, BGR on the 0–255
      scale minus (104, 117, 123), no division.
    - ``"small_cnn"``: RGB (or grey) to [−1, 1].
    - a `keras.applications` name: whatever that model's own
      ``keras.applications.<module>.preprocess_input`` does ("caffe": BGR minus
      (103.939, 116.779, 123.68); "torch": ImageNet mean/std on [0, 1];
      "tf": [−1, 1]; models that rescale inside, such as EfficientNet,
      ConvNeXt and MobileNetV3, take 0–255 RGB unchanged). This is read off
      ``preprocess_input`` itself, so it follows Keras. It describes the
      models' defaults (``include_preprocessing=True`` where that exists).

    Args:
        name: a backbone name, as for `get`.
        **kwargs: backbone arguments; only ``variant`` (googlenet) matters.

    Returns:
        A `Preprocessing`.

    Raises:
        ValueError: for an unknown name or googlenet variant.

    Example:

    >>> preprocessing("ResNet50").channel_order
    'BGR'
    >>> preprocessing("mobilenet_v2").mean
    (1.0, 1.0, 1.0)
    """
    canonical = canonical_name(name)
    if canonical == "googlenet":
        variant = kwargs.get("variant", "bn")
        _check_choice("variant", variant, GOOGLENET_VARIANTS)
        return _GOOGLENET_PREPROCESSING[variant]
    if canonical == "small_cnn":
        return _SMALL_CNN_PREPROCESSING
    return _application_preprocessing(canonical)


@functools.cache
def _application_preprocessing(canonical):
    return _probe_preprocess_input(_application_modules()[canonical].preprocess_input)


# ----------------------------------------------------------------------------------------------
# Registry


def _key(name):
    return re.sub(r"[\s_\-]", "", str(name)).lower()


_OWN = {"googlenet": "googlenet", "inceptionv1": "googlenet", "smallcnn": "small_cnn"}


@functools.cache
def _applications():
    """``{constructor name: constructor}`` for every model in `keras.applications`."""
    return {
        attr: value
        for attr, value in vars(keras.applications).items()
        if attr[:1].isupper() and callable(value) and not isinstance(value, type)
    }


@functools.cache
def _application_modules():
    """``{constructor name: public keras.applications submodule}`` (for ``preprocess_input``)."""
    constructors = _applications()
    modules = {}
    for module in vars(keras.applications).values():
        if not isinstance(module, types.ModuleType) or not hasattr(module, "preprocess_input"):
            continue
        for attr, value in vars(module).items():
            if constructors.get(attr) is value:
                modules.setdefault(attr, module)
    # A few submodules (mobilenet_v3) export only preprocess_input: match them by the
    # last part of the constructor's defining module (keras.src is never imported).
    for attr, constructor in constructors.items():
        submodule = getattr(keras.applications, constructor.__module__.rsplit(".", 1)[-1], None)
        if attr not in modules and hasattr(submodule, "preprocess_input"):
            modules[attr] = submodule
    return modules


def available():
    """Names `get` accepts, in their canonical spelling.

    Returns:
        ``["googlenet", "small_cnn", <keras.applications models>...]``; lookups
        also accept any case and ``_``/``-`` separators (``"resnet50"``,
        ``"mobilenet_v2"``), and ``"inception_v1"`` for googlenet.
    """
    return ["googlenet", "small_cnn", *sorted(_applications())]


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
    key = _key(name)
    if key in _OWN:
        return _OWN[key]
    by_key = {_key(app): app for app in _applications()}
    if key in by_key:
        return by_key[key]
    known = available()
    spellings = {**_OWN, **by_key}
    close = difflib.get_close_matches(key, list(spellings), n=1, cutoff=0.6)
    hint = f" Did you mean {spellings[close[0]]!r}?" if close else ""
    raise ValueError(f"Unknown backbone {name!r}. Known names: {', '.join(known)}.{hint}")


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


# ----------------------------------------------------------------------------------------------
# get()


def _weights_kind(weights):
    """``None``, ``"imagenet"``, ``"keras"``, ``"h5"`` or ``"mat"``/``"npz"`` (Caffe) for a weights argument."""
    if weights is None or weights == "imagenet":
        return weights
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "Invalid value for argument `weights`. Expected None, 'imagenet' or the path of a .keras, "
            f".weights.h5 (or .h5) file. Received: weights={weights!r}"
        )
    path = os.fspath(weights)
    for suffix, kind in ((".keras", "keras"), (".h5", "h5"), (".mat", "caffe"), (".npz", "caffe")):
        if path.endswith(suffix):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Invalid value for argument `weights`: no file at {path!r}.")
            return kind
    raise ValueError(
        "Invalid value for argument `weights`. Expected None, 'imagenet' or the path of a .keras, "
        f".weights.h5 (or .h5) file. Received: weights={path!r}"
    )


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
    kind = _weights_kind(weights)
    if kind == "keras":
        model = keras.saving.load_model(os.fspath(weights))
        if not isinstance(model, keras.Model) or len(model.outputs) != 1 or len(model.output_shape) != 2:
            raise ValueError(
                f"Invalid value for argument `weights`: {os.fspath(weights)!r} does not hold a backbone "
                f"(a model with one output [B, F]); its output shape is {getattr(model, 'output_shape', None)}."
            )
        return model
    if canonical in ("googlenet", "small_cnn"):
        if kind == "imagenet":
            raise ValueError(_no_imagenet_message(canonical))
        if kind == "caffe" and canonical != "googlenet":
            raise ValueError(
                f"Invalid value for argument `weights`: Caffe weight files are for googlenet only. Received: "
                f"name={name!r}, weights={os.fspath(weights)!r}"
            )
        builder = googlenet if canonical == "googlenet" else small_cnn
        _check_kwargs(canonical, builder, kwargs)
        model = builder(input_shape=input_shape, **kwargs)
    else:
        if kind == "caffe":
            raise ValueError(
                f"Invalid value for argument `weights`: Caffe weight files are for googlenet only. Received: "
                f"name={name!r}, weights={os.fspath(weights)!r}"
            )
        _check_kwargs(canonical, _applications()[canonical], kwargs)
        model = _applications()[canonical](
            include_top=False,
            weights="imagenet" if kind == "imagenet" else None,
            input_shape=tuple(input_shape),
            pooling="avg",
            **kwargs,
        )
    if kind == "h5":
        model.load_weights(os.fspath(weights))
    elif kind == "caffe":
        load_caffe_weights(model, weights)
    return model


def _no_imagenet_message(canonical):
    if canonical == "googlenet":
        return (
            "Invalid value for argument `weights`: kerasml cannot download ImageNet weights for 'googlenet'. "
            "Use weights=None to train from scratch, or pass a local file: a .weights.h5/.keras file saved from "
            "a kerasml googlenet, or, with variant='caffe', the BVLC ImageNet weights as a .mat/.npz file in Caffe "
            f"layout (convert {BVLC_GOOGLENET_URL}; see kerasml.models.backbones.load_caffe_weights). For "
            "downloadable ImageNet weights pick a keras.applications backbone, e.g. 'InceptionV3' or 'ResNet50'."
        )
    return (
        f"Invalid value for argument `weights`: there are no ImageNet weights for {canonical!r}, a small network "
        "meant to be trained from scratch. Use weights=None, a local .weights.h5/.keras file, or a "
        "keras.applications backbone (e.g. 'MobileNetV2') for ImageNet weights."
    )


__all__ = [
    "BVLC_GOOGLENET_URL",
    "GOOGLENET_VARIANTS",
    "HostHeNormal",
    "LocalResponseNormalization",
    "Preprocessing",
    "available",
    "canonical_name",
    "feature_dim",
    "get",
    "googlenet",
    "load_caffe_weights",
    "preprocessing",
    "small_cnn",
]
