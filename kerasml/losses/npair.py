"""Multi-class N-pair loss (Sohn, 2016)."""

import keras
from keras import ops

from kerasml.losses._base import MetricLoss
from kerasml.losses._layouts import check_npair_batch
from kerasml.losses._pairwise import (
    as_embeddings,
    as_labels,
    batch_size,
    masked_mean,
)


def split_pairs(labels, embeddings):
    """Split an N-pair batch ``[a_1..a_N; p_1..p_N]`` into its two halves.

    Returns:
        ``(anchor_labels [N], positive_labels [N], anchors [N, D], positives [N, D])``.
    """
    n = batch_size(embeddings) // 2
    return labels[:n], labels[n : 2 * n], embeddings[:n], embeddings[n : 2 * n]


def npair_cross_entropy(anchor_labels, positive_labels, anchors, positives):
    """Mean softmax cross-entropy of ``a_i·p_j`` over ``j`` with target ``j = i``.

    The target of row ``i`` is every ``j`` with ``positive_labels[j] ==
    anchor_labels[i]`` (uniformly weighted), which is exactly ``j = i`` on a
    valid N-pair batch; rows without a matching positive are left out.
    """
    logits = ops.matmul(anchors, ops.transpose(positives))  # [N, N]
    target = ops.cast(ops.expand_dims(anchor_labels, 1) == ops.expand_dims(positive_labels, 0), logits.dtype)
    count = ops.sum(target, axis=1)
    target_logit = ops.sum(logits * target, axis=1) / ops.maximum(count, 1.0)
    return masked_mean(ops.logsumexp(logits, axis=1) - target_logit, count > 0)


def _npair(labels, embeddings, l2_reg):
    loss = npair_cross_entropy(*split_pairs(labels, embeddings))
    if l2_reg:
        loss = loss + l2_reg * ops.mean(ops.sum(ops.square(embeddings), axis=1))
    return loss


def npair_loss(labels, embeddings, l2_reg=0.002):
    """N-pair loss of a batch, functional form of `NPairLoss`.

    For a batch ``[a_1..a_N; p_1..p_N]``::

        L = mean_i [ −log( exp(a_i·p_i) / Σ_j exp(a_i·p_j) ) ]
            + l2_reg · mean_{x in batch} ‖x‖²

    Args:
        labels: int class ids ``[2N]``, ``labels[i] == labels[N + i]``.
        embeddings: float ``[2N, D]``.
        l2_reg: weight of the mean squared norm of the ``2N`` embeddings.

    Returns:
        The scalar loss (float32).
    """
    return _npair(as_labels(labels), as_embeddings(embeddings), float(l2_reg))


@keras.saving.register_keras_serializable(package="kerasml")
class NPairLoss(MetricLoss):
    """Multi-class N-pair loss with an L2 penalty on the embeddings.

    Batch convention: ``[a_1..a_N; p_1..p_N]`` (``B = 2N``): the first half holds
    one anchor of each of N distinct classes, the second half their positives in
    the same order, so ``y_true[i] == y_true[N + i]``. Then::

        L = mean_i [ logsumexp_j (a_i·p_j) − a_i·p_i ]  +  l2_reg · mean_{k<2N} ‖x_k‖²

    i.e. softmax cross-entropy of the similarities ``a_i·p_j`` over ``j`` with
    target ``j = i``. Dot products of unnormalised embeddings, as in Sohn's paper.

    A concrete batch (eager, PyTorch, ``run_eagerly=True``) that breaks the
    layout raises `ValueError` naming the rule; `kerasml.data.NPairSampler`
    builds valid batches. Inside a compiled graph the check cannot run: the
    target of row i is then every positive sharing anchor i's label, and rows
    with none are skipped, so the loss stays finite.

    Mapping to other code: HDML's authors add ``0.25·l2·(mean‖a‖² + mean‖p‖²)``,
    i.e. ``l2_reg = l2 / 2``; pytorch-metric-learning's `NPairsLoss` has no
    penalty (``l2_reg=0``).

    Args:
        l2_reg: weight of the mean squared embedding norm. Defaults to ``0.002``.
        name: name of the loss. Defaults to ``"npair_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.NPairLoss(l2_reg=0.0)
    >>> labels = np.array([3, 7, 3, 7])          # anchors of 3 and 7, then positives
    >>> x = np.array([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0], [0.0, 5.0]])
    >>> round(float(loss(labels, x)), 6)
    0.0

    Reference:
        Sohn, "Improved Deep Metric Learning with Multi-class N-pair Loss
        Objective", NeurIPS 2016.
    """

    def __init__(self, l2_reg=0.002, name="npair_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.l2_reg = float(l2_reg)

    def check_batch(self, labels):
        check_npair_batch(labels, loss_name=type(self).__name__)

    def call(self, y_true, y_pred):
        return _npair(y_true, y_pred, self.l2_reg)

    def get_config(self):
        return {**super().get_config(), "l2_reg": self.l2_reg}
