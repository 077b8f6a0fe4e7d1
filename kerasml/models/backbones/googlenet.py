"""GoogLeNet (Inception-v1) feature extractor and the local response normalisation of its BVLC release."""

import keras
import numpy as np
from keras import ops

from kerasml._validation import check_choice
from kerasml.models.backbones._common import INCEPTION_MODULES, check_input_shape, conv_block, max_pool_ceil
from kerasml.models.backbones.torchvision_googlenet import torchvision_googlenet
from kerasml.preprocessing import GOOGLENET_NORMALIZATIONS

# Each variant has its input normalisation (kerasml.preprocessing.GOOGLENET_NORMALIZATIONS).
GOOGLENET_VARIANTS = tuple(GOOGLENET_NORMALIZATIONS)

# A max-pool (3×3, stride 2, Caffe ceil mode) follows these modules.
_POOL_AFTER = {"3b": "pool3_3x3_s2", "4e": "pool4_3x3_s2"}
# Smallest input side for which every pooling window fits.
_GOOGLENET_MIN_SIZE = 32


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


def _conv(x, filters, kernel_size, name, variant, strides=1):
    """Conv → (BN) → ReLU, named after the Caffe layer (``/`` becomes ``_``)."""
    return conv_block(x, filters, kernel_size, name, batch_norm=variant == "bn", strides=strides)


def _lrn(x, name):
    return LocalResponseNormalization(depth_radius=5, bias=1.0, alpha=1e-4, beta=0.75, name=name)(x)


def _inception(x, module, variant):
    n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj = INCEPTION_MODULES[module]
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
          LRN: the paper's network with batch-norm, as much of the
          metric-learning literature trains GoogLeNet-sized models (it is *not*
          Ioffe & Szegedy's "BN-Inception", which has different modules and
          ~10 M parameters, nor torchvision's network: see ``"torchvision"``).
        - ``"caffe"``: the BVLC release the HDML authors fine-tuned: conv +
          bias + ReLU, local response normalisation after ``pool1`` and after
          ``conv2/3x3`` (TensorFlow-style, radius 5, bias 1, α 1e-4, β 0.75, as
          in their code; see `LocalResponseNormalization`). Load the BVLC
          ImageNet weights with `load_caffe_weights`.
        - ``"torchvision"``: torchvision's Inception-v1, the network its
          ImageNet weights (``googlenet-1378be20.pth``) fit: batch-norm, a 3×3
          kernel in the branch the paper calls 5×5, a 2×2 max-pool after
          inception 4e, the ``transform_input`` rescaling as its first layer,
          torchvision's layer names. Built by `torchvision_googlenet`, which
          lists every difference; ``kerasml weights googlenet`` downloads and
          converts the weights (`convert_torchvision_googlenet`).

    Kernels are He-normal initialised (`HostHeNormal`), so every variant also
    trains from scratch.
    Inputs: see `preprocessing` (``"bn"`` and ``"torchvision"``: ImageNet
    mean/std on RGB in [0, 1]; ``"caffe"``: BGR minus (104, 117, 123) on the
    0–255 scale).

    Args:
        input_shape: ``(height, width, channels)``; sides may be ``None``
            (variable size), otherwise at least 32. Defaults to ``(224, 224, 3)``.
        variant: ``"bn"``, ``"caffe"`` or ``"torchvision"``. Defaults to ``"bn"``.
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
    check_choice("variant", variant, GOOGLENET_VARIANTS)
    if variant == "torchvision":
        return torchvision_googlenet(input_shape=input_shape, name=name)
    input_shape = check_input_shape(input_shape, _GOOGLENET_MIN_SIZE, "googlenet")
    images = keras.Input(shape=input_shape, name="images")
    x = _conv(images, 64, 7, "conv1_7x7_s2", variant, strides=2)
    x = max_pool_ceil(x, "pool1_3x3_s2")
    if variant == "caffe":
        x = _lrn(x, "pool1_norm1")
    x = _conv(x, 64, 1, "conv2_3x3_reduce", variant)
    x = _conv(x, 192, 3, "conv2_3x3", variant)
    if variant == "caffe":
        x = _lrn(x, "conv2_norm2")
    x = max_pool_ceil(x, "pool2_3x3_s2")
    for module in INCEPTION_MODULES:
        x = _inception(x, module, variant)
        if module in _POOL_AFTER:
            x = max_pool_ceil(x, _POOL_AFTER[module])
    features = keras.layers.GlobalAveragePooling2D(data_format="channels_last", name="pool5_7x7_s1")(x)
    return keras.Model(images, features, name=name)


def caffe_layer_names():
    """Caffe names of GoogLeNet's convolutions, in network order (``"conv1/7x7_s2"``, ...)."""
    names = ["conv1/7x7_s2", "conv2/3x3_reduce", "conv2/3x3"]
    for module in INCEPTION_MODULES:
        names += [
            f"inception_{module}/{branch}" for branch in ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj")
        ]
    return names


__all__ = ["GOOGLENET_VARIANTS", "LocalResponseNormalization", "caffe_layer_names", "googlenet"]
