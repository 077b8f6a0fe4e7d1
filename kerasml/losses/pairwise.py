"""Shared building blocks of the metric losses, written in ``keras.ops`` only.

Every helper keeps static shapes (dense ``[B, B]`` masks, no boolean indexing),
so the losses trace under ``tf.function`` and ``jax.jit``, and every helper is
safe where the naive formula is not: zero distances, empty sets, huge values.
"""

from keras import ops

# `safe_sqrt` floors its argument here: distances are at least 1e-8, and their
# gradient below the floor is 0 instead of infinite.
_SQRT_FLOOR = 1e-16
# Stand-in for log(0) that keeps arithmetic finite (log-sum-exp of an empty set).
LOG_ZERO = -1e30


def as_labels(y_true):
    """Integer labels ``[B]`` from ``[B]`` or ``[B, 1]`` input (float or int)."""
    labels = ops.convert_to_tensor(y_true)
    labels = ops.reshape(labels, (-1,))
    if "int" not in str(labels.dtype):
        labels = ops.round(labels)
    return ops.cast(labels, "int32")


def as_embeddings(y_pred):
    """Embeddings ``[B, D]`` in float32, whatever the input precision."""
    return ops.cast(ops.convert_to_tensor(y_pred), "float32")


def batch_size(x):
    """Size of the first axis: a Python int when static, else a scalar tensor."""
    return ops.shape(x)[0]


def identity_mask(n):
    """Boolean ``[n, n]`` mask of the diagonal (works for a dynamic ``n``)."""
    index = ops.arange(n)
    return ops.expand_dims(index, 1) == ops.expand_dims(index, 0)


def label_masks(labels, other_labels=None):
    """Positive and negative masks between two label vectors.

    Args:
        labels: int ``[B]``.
        other_labels: int ``[C]``; defaults to ``labels``, in which case the
            diagonal (a sample with itself) is excluded from the positives.

    Returns:
        ``(positive, negative)``, boolean ``[B, C]``: same label (not itself),
        different label.
    """
    same_set = other_labels is None
    if same_set:
        other_labels = labels
    same = ops.expand_dims(labels, 1) == ops.expand_dims(other_labels, 0)
    negative = ops.logical_not(same)
    if same_set:
        same = ops.logical_and(same, ops.logical_not(identity_mask(batch_size(labels))))
    return same, negative


def pairwise_squared_distances(x, y=None, exact_diagonal=True):
    """Squared Euclidean distances ``‖x_i − y_j‖²``, ``[B, C]``, never negative.

    Uses ``‖x‖² + ‖y‖² − 2 x·y``, all three terms from one matmul of the rows
    ``[−2x, 1, ‖x‖²]`` and ``[y, ‖y‖², 1]`` (fewer ``[B, C]`` passes than adding
    them afterwards). When ``y`` is omitted and
    ``exact_diagonal`` is true the diagonal is set to exactly 0 (otherwise it
    holds float32 rounding noise, harmless where the caller masks it out).

    Precision: in float32 the absolute error is at most
    ``2 (D + 2) ε (‖x_i‖² + ‖y_j‖²)`` (``ε = 2⁻²³``; tested), so near-duplicates
    closer than about ``sqrt(2 (D + 2) ε) (‖x‖ + ‖y‖)`` lose their distance to
    cancellation: at norm 10 and D = 4, two points 1e-3 apart read as 0 to ~3e-3
    apart, and a loss sees a zero (or too small) repulsive gradient. Normalised
    embeddings (norm 1) keep the limit near ``1e-3·sqrt(D)``.
    """
    same_set = y is None
    if same_set:
        y = x
    x_sq = ops.sum(ops.square(x), axis=1, keepdims=True)
    y_sq = x_sq if same_set else ops.sum(ops.square(y), axis=1, keepdims=True)
    left = ops.concatenate([-2.0 * x, ops.ones_like(x_sq), x_sq], axis=1)
    right = ops.concatenate([y, y_sq, ops.ones_like(y_sq)], axis=1)
    d2 = ops.relu(ops.matmul(left, ops.transpose(right)))
    if same_set and exact_diagonal:
        d2 = ops.where(identity_mask(batch_size(x)), 0.0, d2)
    return d2


def safe_sqrt(x):
    """``sqrt(max(x, 1e-16))`` for ``x ≥ 0``: value 1e-8 and gradient 0 at ``x = 0``.

    The plain square root has an infinite derivative at 0 (identical embeddings,
    the diagonal of a distance matrix); flooring the argument keeps that
    infinity out of the backward pass at a cost of 1e-8 in the value.
    """
    return ops.sqrt(ops.maximum(x, _SQRT_FLOOR))


def pairwise_distances(x, y=None):
    """Euclidean distances ``‖x_i − y_j‖``, ``[B, C]``, with a safe gradient at 0."""
    return safe_sqrt(pairwise_squared_distances(x, y))


def masked_logsumexp(x, mask, axis=-1):
    """``log Σ_{mask} exp(x)`` along ``axis``; an empty selection gives ``LOG_ZERO``.

    Stable for huge ``x`` (max subtraction), and free of the NaN gradients that
    ``logsumexp(where(mask, x, -inf))`` has on rows where ``mask`` is empty.
    """
    masked = ops.where(mask, x, float("-inf"))
    row_max = ops.max(masked, axis=axis, keepdims=True)
    row_max = ops.stop_gradient(ops.where(ops.isfinite(row_max), row_max, 0.0))
    exps = ops.exp(ops.where(mask, x - row_max, float("-inf")))
    total = ops.sum(exps, axis=axis, keepdims=True)
    nonempty = total > 0.0
    result = ops.log(ops.where(nonempty, total, 1.0)) + row_max
    result = ops.where(nonempty, result, LOG_ZERO)
    return ops.squeeze(result, axis=axis)


def masked_mean(values, mask):
    """Mean of ``values`` over ``mask``; 0 (with zero gradient) when it is empty."""
    mask = ops.cast(mask, values.dtype)
    total = ops.sum(values * mask)
    count = ops.sum(mask)
    return total / ops.maximum(count, 1.0)


def l2_normalize(x, epsilon=1e-12):
    """Rows of ``x`` scaled to unit norm; a zero row stays zero (finite gradient)."""
    squared = ops.sum(ops.square(x), axis=-1, keepdims=True)
    return x * ops.rsqrt(ops.maximum(squared, epsilon))
