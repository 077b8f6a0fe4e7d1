"""What kerasml's backbones share: host-side He initialisation, the input-shape check, Inception-v1 blocks.

The Inception-v1 pieces (`INCEPTION_MODULES`, `conv_block`, `max_pool_ceil`) serve both GoogLeNet
builders: the paper's / BVLC layout (`kerasml.models.backbones.googlenet`) and torchvision's
(`kerasml.models.backbones.torchvision_googlenet`).
"""

import keras
import numpy as np


def check_input_shape(input_shape, min_size=1, model="backbone"):
    """``input_shape`` as a tuple ``(height, width, channels)``, or a ValueError in Keras' form.

    Args:
        input_shape: ``(height, width, channels)``; sides may be ``None``.
        min_size: the smallest side the model accepts. Defaults to ``1``.
        model: the model's name, for the message. Defaults to ``"backbone"``.

    Returns:
        The shape as a tuple.
    """
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

    Example:

    >>> HostHeNormal(seed=0)((3, 3, 8, 16)).shape
    (3, 3, 8, 16)
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


# Inception modules of GoogLeNet (Szegedy et al. 2015, table 1), the same in torchvision's:
# name: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj).
INCEPTION_MODULES = {
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


def conv_block(x, filters, kernel_size, name, batch_norm=True, strides=1, momentum=0.99):
    """Conv → (batch-norm) → ReLU, layers named ``name``, ``name_bn``, ``name_relu``.

    Padding keeps the size at stride 1 ("same"); at stride ``s > 1`` the input is zero-padded
    by ``kernel_size // 2`` on every side (as Caffe and PyTorch do; Keras' "same" would pad
    asymmetrically) and convolved "valid". With batch-norm the convolution has no bias and
    batch-norm uses ε = 1e-3 (as Keras and torchvision's Inception-v1 do).

    Args:
        x: the input tensor (channels last).
        filters: output channels.
        kernel_size: square kernel side.
        name: the convolution's layer name.
        batch_norm: add batch-norm (and drop the conv bias). Defaults to ``True``.
        strides: the stride. Defaults to ``1``.
        momentum: batch-norm's moving-average momentum (Keras' convention: PyTorch's 0.1 is
            Keras' 0.9). Defaults to ``0.99``.

    Returns:
        The block's output tensor.
    """
    padding = "same"
    if strides > 1:
        x = keras.layers.ZeroPadding2D(kernel_size // 2, data_format="channels_last", name=f"{name}_pad")(x)
        padding = "valid"
    x = keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=not batch_norm,
        kernel_initializer=HostHeNormal(),
        data_format="channels_last",
        name=name,
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(axis=-1, momentum=momentum, epsilon=1e-3, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def max_pool_ceil(x, name, pool_size=3, strides=2):
    """Max-pooling with Caffe's and PyTorch's ``ceil_mode`` rounding up of the output size.

    The ceil-mode output side is ``ceil((n − k) / s) + 1``. Padding the bottom and right by
    ``s − 1`` and pooling "valid" gives ``floor((n + s − 1 − k) / s) + 1``, the same number,
    and (k ≥ s) every window still starts inside the image. The padding is zeros, which
    stand in for −∞ because every input here is a ReLU (or LRN of a ReLU) output, hence ≥ 0.

    Args:
        x: the input tensor (channels last), ≥ 0.
        name: the pooling layer's name (the padding is ``name_pad``).
        pool_size: the window side ``k`` (≥ ``strides``). Defaults to ``3``.
        strides: the stride ``s``. Defaults to ``2``.

    Returns:
        The pooled tensor.
    """
    pad = strides - 1
    x = keras.layers.ZeroPadding2D(((0, pad), (0, pad)), data_format="channels_last", name=f"{name}_pad")(x)
    return keras.layers.MaxPooling2D(pool_size, strides, padding="valid", data_format="channels_last", name=name)(x)
