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


def tiny_backbone(size=8, channels=1, features=12, name="backbone"):
    """A few-thousand-parameter CNN for HDML tests: images ``[size, size, channels]`` → ``[features]``."""
    return keras.Sequential(
        [
            keras.Input((size, size, channels)),
            keras.layers.Conv2D(6, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(features),
        ],
        name=name,
    )


def digits_npair_batches(rng, steps, pairs, noise=0.0):
    """N-pair batches ``[a_1..a_N; p_1..p_N]`` of scikit-learn's 8x8 digits (offline).

    Returns images ``[steps * 2N, 8, 8, 1]`` in [0, 1] and labels 0..9, batch after batch.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")[..., None]
    by_class = [np.flatnonzero(digits.target == c) for c in range(10)]
    xs, ys = [], []
    for _ in range(steps):
        classes = rng.choice(10, size=pairs, replace=False)
        picks = np.array([rng.choice(by_class[c], size=2, replace=False) for c in classes])
        order = np.concatenate([picks[:, 0], picks[:, 1]])
        xs.append(images[order] + noise * rng.normal(size=images[order].shape).astype("float32"))
        ys.append(np.concatenate([classes, classes]))
    return np.concatenate(xs), np.concatenate(ys).astype("int32")


def digits_triplet_batches(rng, steps, n):
    """Structured triplet batches ``[anchors; positives; negatives]`` of the 8x8 digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")[..., None]
    by_class = [np.flatnonzero(digits.target == c) for c in range(10)]
    xs, ys = [], []
    for _ in range(steps):
        anchors = rng.integers(0, 10, size=n)
        negatives = (anchors + rng.integers(1, 10, size=n)) % 10
        a, p = zip(*(rng.choice(by_class[c], size=2, replace=False) for c in anchors))
        neg = [rng.choice(by_class[c]) for c in negatives]
        xs.append(images[np.concatenate([a, p, neg])])
        ys.append(np.concatenate([anchors, anchors, negatives]))
    return np.concatenate(xs), np.concatenate(ys).astype("int32")
