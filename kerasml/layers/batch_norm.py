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

    Computed in float32 whatever ``x``'s dtype, as Keras' ``BatchNormalization`` does: a
    float16 / bfloat16 input (mixed precision) is cast up and the result cast back.
    """
    dtype = x.dtype
    x = ops.cast(x, "float32")
    if training:
        mean, variance = batch_moments(x)  # over the global batch on several replicas
        if update_statistics:
            layer.moving_mean.assign(
                momentum * ops.cast(layer.moving_mean, "float32") + (1.0 - momentum) * ops.stop_gradient(mean)
            )
            layer.moving_variance.assign(
                momentum * ops.cast(layer.moving_variance, "float32") + (1.0 - momentum) * ops.stop_gradient(variance)
            )
    else:
        mean, variance = ops.cast(layer.moving_mean, "float32"), ops.cast(layer.moving_variance, "float32")
    gamma = ops.cast(layer.gamma if gamma is None else gamma, "float32")
    beta = ops.cast(layer.beta if beta is None else beta, "float32")
    return ops.cast((x - mean) * ops.rsqrt(variance + epsilon) * gamma + beta, dtype)


def add_batch_norm_weights(layer, size):
    """Create ``gamma``, ``beta`` (trainable) and ``moving_mean``, ``moving_variance``.

    None of them is autocast (as in Keras' ``BatchNormalization``): under a mixed-precision policy
    they stay float32 when read, so the moving averages do not lose their small updates.
    """
    kwargs = {"shape": (size,), "autocast": False}
    layer.gamma = layer.add_weight(initializer="ones", name="gamma", **kwargs)
    layer.beta = layer.add_weight(initializer="zeros", name="beta", **kwargs)
    layer.moving_mean = layer.add_weight(initializer="zeros", name="moving_mean", trainable=False, **kwargs)
    layer.moving_variance = layer.add_weight(initializer="ones", name="moving_variance", trainable=False, **kwargs)
