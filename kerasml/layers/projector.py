"""`EmbeddingProjector`: backbone features ``y`` → embeddings ``z``."""

import keras
from keras import ops

from kerasml.layers.batch_norm import add_batch_norm_weights, batch_norm
from kerasml.losses.pairwise import l2_normalize


@keras.saving.register_keras_serializable(package="kerasml")
class EmbeddingProjector(keras.layers.Layer):
    """Batch-norm on the features, then a linear map to the embedding: ``z = W·BN(y) + b``.

    This is HDML's projector ``f`` (the authors': batch-norm with momentum 0.99
    and ε 1e-3, Glorot-uniform kernel, zero bias, no normalisation in training).

    Input ``[B, F]``; output ``[B, dim]``, or ``[B, heads, dim]`` when
    ``heads > 1`` (the multi-head embedding that `DivergenceLoss` takes).

    ``call(y, training, update_statistics=True)``: with ``training=True`` and
    ``update_statistics=False`` the batch-norm uses the batch's own moments but
    leaves its moving averages alone, which is how `HDMLModel` projects
    synthetic features without letting them pollute the statistics used at
    inference.

    Args:
        dim: embedding size per head.
        normalize: L2-normalise each embedding (per head). Defaults to ``False``.
        batch_norm: apply batch-norm to the input first. Defaults to ``True``.
        heads: number of embedding heads. Defaults to ``1``.
        momentum: batch-norm momentum. Defaults to ``0.99``.
        epsilon: batch-norm epsilon. Defaults to ``1e-3``.
        kernel_initializer: initialiser of ``W``. Defaults to ``"glorot_uniform"``.
        **kwargs: `keras.layers.Layer` arguments (``name``, ``dtype``...).

    Example:

    >>> import numpy as np, kerasml
    >>> projector = kerasml.layers.EmbeddingProjector(4, heads=2)
    >>> tuple(projector(np.ones((3, 8), "float32")).shape)
    (3, 2, 4)
    """

    def __init__(
        self,
        dim,
        normalize=False,
        batch_norm=True,
        heads=1,
        momentum=0.99,
        epsilon=1e-3,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(dim) < 1 or int(heads) < 1:
            raise ValueError(
                "Invalid value for argument `dim`/`heads`. Expected positive integers. "
                f"Received: dim={dim}, heads={heads}"
            )
        self.dim = int(dim)
        self.normalize = bool(normalize)
        self.batch_norm = bool(batch_norm)
        self.heads = int(heads)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        features = input_shape[-1]
        if self.batch_norm:
            add_batch_norm_weights(self, features)
        self.kernel = self.add_weight(
            shape=(features, self.dim * self.heads), initializer=self.kernel_initializer, name="kernel"
        )
        self.bias = self.add_weight(shape=(self.dim * self.heads,), initializer="zeros", name="bias")

    def call(self, inputs, training=None, update_statistics=True):
        x = ops.cast(inputs, self.compute_dtype)
        if self.batch_norm:
            x = batch_norm(x, self, bool(training), update_statistics, self.momentum, self.epsilon)
        z = ops.matmul(x, self.kernel) + self.bias
        if self.heads > 1:
            z = ops.reshape(z, (-1, self.heads, self.dim))
        return l2_normalize(z) if self.normalize else z

    def compute_output_shape(self, input_shape):
        if self.heads > 1:
            return (input_shape[0], self.heads, self.dim)
        return (input_shape[0], self.dim)

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "normalize": self.normalize,
            "batch_norm": self.batch_norm,
            "heads": self.heads,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
