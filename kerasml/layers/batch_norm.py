"""Batch normalisation written out, so a caller can choose what it updates."""

from keras import ops

from kerasml.distribution import batch_moments


def batch_norm(x, layer, training, update_statistics, momentum, epsilon, gamma=None, beta=None):
    """Normalise ``x [M, F]`` with the ``gamma``/``beta``/``moving_*`` weights of ``layer``.

    ``gamma`` and ``beta`` replace the layer's own (e.g. gradient-stopped copies).

    ``training=True`` uses the batch moments (of the global batch when replicas
    train together: `kerasml.distribution.batch_moments`) and, when ``update_statistics`` is
    true, moves ``moving_mean``/``moving_variance`` toward them (``m ← μ m +
    (1 − μ) x``, Keras' convention). ``training=False`` uses the moving moments.
    """
    if training:
        mean, variance = batch_moments(x)  # over the global batch on several replicas
        if update_statistics:
            layer.moving_mean.assign(momentum * layer.moving_mean + (1.0 - momentum) * ops.stop_gradient(mean))
            layer.moving_variance.assign(
                momentum * layer.moving_variance + (1.0 - momentum) * ops.stop_gradient(variance)
            )
    else:
        mean, variance = layer.moving_mean, layer.moving_variance
    gamma = layer.gamma if gamma is None else gamma
    beta = layer.beta if beta is None else beta
    return (x - mean) * ops.rsqrt(variance + epsilon) * gamma + beta


def add_batch_norm_weights(layer, size):
    """Create ``gamma``, ``beta`` (trainable) and ``moving_mean``, ``moving_variance``."""
    layer.gamma = layer.add_weight(shape=(size,), initializer="ones", name="gamma")
    layer.beta = layer.add_weight(shape=(size,), initializer="zeros", name="beta")
    layer.moving_mean = layer.add_weight(shape=(size,), initializer="zeros", name="moving_mean", trainable=False)
    layer.moving_variance = layer.add_weight(shape=(size,), initializer="ones", name="moving_variance", trainable=False)
