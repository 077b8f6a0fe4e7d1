"""Test helpers: gradients on the active backend, and random batches."""

import keras
import numpy as np

BACKEND = keras.backend.backend()


def value_and_grad(fn, x):
    """``fn(x)`` and ``d fn / d x`` as NumPy, on the active Keras backend.

    Args:
        fn: function of one backend tensor returning a scalar tensor.
        x: NumPy array (float32 or float64).
    """
    x = np.asarray(x)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        t = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            value = fn(t)
        grad = tape.gradient(value, t)
        grad = np.zeros_like(x) if grad is None else grad.numpy()
        return float(value.numpy()), grad
    if BACKEND == "torch":
        import torch

        t = torch.tensor(x, requires_grad=True)
        value = fn(t)
        (grad,) = torch.autograd.grad(value, t, allow_unused=True)
        grad = np.zeros_like(x) if grad is None else grad.detach().cpu().numpy()
        return float(value.detach().cpu().numpy()), grad
    if BACKEND == "jax":
        import jax

        value, grad = jax.value_and_grad(lambda t: fn(t))(x)
        return float(value), np.asarray(grad)
    raise RuntimeError(f"unsupported backend {BACKEND}")


def random_labels(rng, size, classes):
    """``size`` int labels in ``[0, classes)``, every class present when possible."""
    labels = np.arange(size) % classes
    rng.shuffle(labels)
    return labels.astype(np.int64)


def npair_labels(rng, pairs, classes=None, offset=0):
    """Labels of a valid N-pair batch ``[a_1..a_N; p_1..p_N]`` of ``pairs`` classes."""
    classes = max(classes or pairs, pairs)
    half = rng.choice(classes, size=pairs, replace=False) + offset
    return np.concatenate([half, half]).astype(np.int64)


def triplet_labels(rng, n, classes):
    """Labels of a valid structured triplet batch ``[anchors; positives; negatives]``."""
    anchors = rng.integers(0, classes, size=n)
    negatives = (anchors + rng.integers(1, classes, size=n)) % classes
    return np.concatenate([anchors, anchors, negatives]).astype(np.int64)
