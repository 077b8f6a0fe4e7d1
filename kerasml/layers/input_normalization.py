"""`InputNormalization`: a model's first step, RGB pixels on the 0–255 scale → the backbone's input."""

import keras
import numpy as np
from keras import ops

from kerasml._validation import check_choice
from kerasml.preprocessing import Normalization, get_normalization


@keras.saving.register_keras_serializable(package="kerasml")
class InputNormalization(keras.layers.Layer):
    """A `kerasml.preprocessing.Normalization` inside the model: uint8 or float pixels in, float32 out.

    ``out[..., c] = x'[..., c] * scale / std[c] - mean[c] / std[c]``, ``x'`` = ``x`` in float32, its
    channels reversed first when ``channel_order == "BGR"``: the same float32 multiply-add as
    `kerasml.preprocessing.Normalization` computes in NumPy, so a model that normalises its input
    gives the embeddings of a data pipeline that normalises the images itself. With it, data
    workers hand over uint8 batches (4x fewer bytes than float32) and the normalisation runs on the
    model's device; a ``.keras`` file records it, so the loaded model takes the same raw images.

    The layer computes in float32 whatever the dtype policy (the backbone casts its input).

    Args:
        normalization: what `kerasml.preprocessing.get_normalization` takes: a name (``"imagenet"``,
            ``"tf"``...), a backbone name, a `Normalization`, its ``to_config()`` dict or a
            ``(mean, std)`` pair.
        data_format: ``"channels_last"`` (``[B, H, W, C]``) or ``"channels_first"`` (``[B, C, H, W]``).
            Defaults to Keras' ``image_data_format``.
        **kwargs: `keras.layers.Layer` arguments (``name``...).

    Example:

    >>> import numpy as np
    >>> layer = InputNormalization("tf")
    >>> keras.ops.convert_to_numpy(layer(np.array([[[[0, 255, 51]]]], np.uint8))).round(4)
    array([[[[-1. ,  1. , -0.6]]]], dtype=float32)
    """

    def __init__(self, normalization, data_format=None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if isinstance(normalization, dict):
            normalization = Normalization(**normalization)
        self.normalization = get_normalization(normalization)
        self.data_format = data_format or keras.config.image_data_format()
        check_choice("data_format", self.data_format, ("channels_last", "channels_first"))
        std = np.asarray(self.normalization.std, np.float64)
        # The constants of Normalization.__call__, rounded to float32 the same way.
        self._slope = (self.normalization.scale / std).astype(np.float32)
        self._offset = (-np.asarray(self.normalization.mean, np.float64) / std).astype(np.float32)
        self.built = True

    def _broadcast(self, values, rank):
        if self.data_format == "channels_first" and rank >= 3:
            return values.reshape((-1,) + (1,) * (rank - 2))
        return values

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        axis = 1 if self.data_format == "channels_first" and len(x.shape) >= 3 else -1
        if self.normalization.bgr:
            x = ops.flip(x, axis=axis)
        rank = len(x.shape)
        slope = ops.convert_to_tensor(self._broadcast(self._slope, rank))
        offset = ops.convert_to_tensor(self._broadcast(self._offset, rank))
        return ops.add(ops.multiply(x, slope), offset)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config.update({"normalization": self.normalization.to_config(), "data_format": self.data_format})
        return config
