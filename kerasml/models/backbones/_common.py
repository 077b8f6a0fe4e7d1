"""What every kerasml backbone shares: host-side He initialisation and the input-shape check."""

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
