"""TensorFlow-specific helpers."""

import tensorflow as tf


def is_concrete(x):
    """True when TensorFlow executes eagerly (not inside ``tf.function``)."""
    return tf.executing_eagerly() and hasattr(x, "numpy")
