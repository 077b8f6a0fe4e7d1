"""TensorFlow fast path of a functional Keras model: batch-norm through TensorFlow's fused kernel.

Keras 3 computes ``BatchNormalization`` from separate ops (moments, then subtract, multiply, add:
about eight passes over the activations forward and more backward); TensorFlow has one fused
kernel for it (``FusedBatchNormV3``, oneDNN on CPU, cuDNN on GPU), forward and backward. `run`
executes a functional model's graph (`kerasml._backend.graph`) with that kernel in place of
every channels-last ``BatchNormalization`` and calls every other layer as it is (Keras' TensorFlow
convolutions and poolings already run channels-last, without copies). Eager or inside
``tf.function`` alike.

The maths and the variables are Keras': the batch moments normalise in training (the kernel's
variance output is Bessel-corrected, so the moving variance gets ``(n − 1) / n`` of it: Keras'
biased variance), ``moving ← momentum · moving + (1 − momentum) · batch`` through
``variable.assign``, and the moving moments in inference.
"""

import keras
import tensorflow as tf

from kerasml._backend import graph

# TensorFlow raises the epsilon of its fused kernel to this; a smaller one keeps Keras' ops.
_MIN_EPSILON = 1.001e-5


def _batch_norm(layer, config):
    axis = config.get("axis")
    epsilon = float(config["epsilon"])
    if config.get("synchronized") or config.get("renorm") or axis not in (-1, 3) or epsilon < _MIN_EPSILON:
        return None
    momentum = float(config["momentum"])
    center, scale = bool(config["center"]), bool(config["scale"])

    def batch_norm(inputs, training):
        if inputs.shape.rank != 4 or inputs.shape[-1] is None:
            return None
        x = tf.cast(inputs, tf.float32) if inputs.dtype in (tf.float16, tf.bfloat16) else inputs
        if x.dtype != tf.float32:  # the fused kernel computes float32 (and half types) only
            return None
        channels = int(x.shape[-1])
        gamma = tf.cast(layer.gamma.value, x.dtype) if scale else tf.ones((channels,), x.dtype)
        beta = tf.cast(layer.beta.value, x.dtype) if center else tf.zeros((channels,), x.dtype)
        moving_mean = tf.cast(layer.moving_mean.value, x.dtype)
        moving_variance = tf.cast(layer.moving_variance.value, x.dtype)
        if training and layer.trainable:
            y, mean, unbiased = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=epsilon, data_format="NHWC", is_training=True
            )
            count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), x.dtype)
            variance = unbiased * ((count - 1.0) / tf.maximum(count, 1.0))
            layer.moving_mean.assign(moving_mean * momentum + mean * (1.0 - momentum))
            layer.moving_variance.assign(moving_variance * momentum + variance * (1.0 - momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x,
                gamma,
                beta,
                mean=moving_mean,
                variance=moving_variance,
                epsilon=epsilon,
                data_format="NHWC",
                is_training=False,
            )
        return tf.cast(y, keras.backend.standardize_dtype(layer.compute_dtype))

    return batch_norm


_FAST = {keras.layers.BatchNormalization: _batch_norm}


def fast_function(layer):
    """``f(inputs, training) -> outputs | None`` computing ``layer`` with TensorFlow's fused kernel, or ``None``.

    Only the exact Keras classes (not subclasses, which may change ``call``) with settings the
    kernel reproduces have one.
    """
    builder = _FAST.get(type(layer))
    return None if builder is None else builder(layer, layer.get_config())


def plan(model):
    """The cached execution plan of ``model`` with these TensorFlow functions (`kerasml._backend.graph.plan`)."""
    return graph.plan(model, fast_function)


def run(model, inputs, training=False):
    """``model(inputs, training=training)`` with TensorFlow's fused batch-norm, or ``None`` when not applicable.

    Applies to TensorFlow tensors (eager or in a ``tf.function``; Keras' symbolic tensors keep
    Keras' path) of rank 4, through a functional model with one input and one output.
    """
    if not isinstance(inputs, tf.Tensor) or inputs.shape.rank != 4:
        return None
    return graph.run(plan(model), inputs, training)
