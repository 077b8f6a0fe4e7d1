"""A small CNN feature extractor, for tests and CPU quickstarts."""

import keras

from kerasml.models.backbones._common import HostHeNormal, check_input_shape


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
    input_shape = check_input_shape(input_shape)
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


__all__ = ["small_cnn"]
