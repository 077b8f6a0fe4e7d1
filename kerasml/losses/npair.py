"""Multi-class N-pair loss (Sohn, 2016)."""

import keras
from keras import ops

from kerasml.losses import pairing
from kerasml.losses._base import MetricLoss, check_convention
from kerasml.losses.layouts import PAIRS
from kerasml.losses.pairwise import (
    as_embeddings,
    as_labels,
    batch_size,
    identity_mask,
    masked_logsumexp,
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


def synthetic_npair_cross_entropy(anchors, tuples):
    """N-pair cross-entropy of HDML's synthetic tuples.

    ``mean_i [logsumexp_j ã_i·ñ_ij − ã_i·ñ_ii]`` for anchors ``ã`` ``[N, D]`` and
    tuples ``ñ`` ``[N, N, D]`` whose row ``i`` holds every ``p_j`` pulled toward
    ``a_i`` (the diagonal ``ñ_ii`` is the positive).
    """
    logits = ops.sum(ops.expand_dims(anchors, 1) * tuples, axis=-1)  # [N, N]: ã_i·ñ_ij
    own = ops.sum(ops.where(identity_mask(ops.shape(logits)[0]), logits, 0.0), axis=1)
    return ops.mean(ops.logsumexp(logits, axis=1) - own)


def synthetic_squared_norm(anchors, tuples):
    """``½ (mean_i ‖ã_i‖² + mean_ij ‖ñ_ij‖²)``: the L2 term of HDML's synthetic N-pair tuples.

    The HDML authors' ``J_syn`` adds ``0.25 · l2 · (mean‖ã‖² + mean‖ñ‖²)`` over the
    N synthetic anchors and the N² tuples, diagonal included (``wzzheng/HDML``
    lib/Loss_ops.py:261-266, called with ``reg_lambda = loss_l2_reg`` at
    main_npair.py:118-122); with ``l2_reg = l2 / 2`` that is ``l2_reg`` times this.
    """
    anchor_norms = ops.mean(ops.sum(ops.square(anchors), axis=-1))
    tuple_norms = ops.mean(ops.sum(ops.square(tuples), axis=-1))
    return 0.5 * (anchor_norms + tuple_norms)


def paired_npair_cross_entropy(labels, embeddings):
    """N-pair cross-entropy with the pairs found from the labels (`kerasml.losses.pairing`), in any order.

    ``mean_i [logsumexp_k x_i·p_k − x_i·p_i]`` over the anchors ``i`` (each class's first
    sample; ``p_i`` its class's next sample) and the anchors' positives ``k``: on a batch in
    the ``[a_1..a_N; p_1..p_N]`` order it is `npair_cross_entropy` of the halves.
    """
    is_anchor, partner = pairing.pairs_from_labels(labels)
    positives = ops.take(embeddings, partner, axis=0)  # row i: the positive of anchor i
    logits = ops.matmul(embeddings, ops.transpose(positives))  # [B, B]: x_i · p_k
    own = ops.sum(ops.where(identity_mask(batch_size(logits)), logits, 0.0), axis=1)
    return masked_mean(masked_logsumexp(logits, ops.expand_dims(is_anchor, 0), axis=1) - own, is_anchor)


def npair_term(labels, embeddings):
    """The N-pair cross-entropy of a batch in any order; the halves order takes the fast path."""
    return ops.cond(
        pairing.halves_are_pairs(labels),
        lambda: npair_cross_entropy(*split_pairs(labels, embeddings)),
        lambda: paired_npair_cross_entropy(labels, embeddings),
    )


def _npair(labels, embeddings, l2_reg):
    loss = npair_term(labels, embeddings)
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

    names = ("npair", "npairs", "n_pair", "NpairLoss")
    batch_layout = PAIRS
    hdml_summary = "yes: N² synthetic negatives per batch"

    def __init__(self, l2_reg=0.002, name="npair_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.l2_reg = float(l2_reg)

    @property
    def hdml_layout(self):
        return "npair"

    def synthetic_loss(self, labels, anchors, tuples, convention="kerasml"):
        """``J_syn = mean_i [logsumexp_j ã_i·ñ_ij − ã_i·ñ_ii]``.

        ``convention="kerasml"``: ``l2_reg`` acts on real embeddings only.
        ``"authors"``: plus ``l2_reg · ½ (mean‖ã‖² + mean‖ñ‖²)`` over the
        synthetic anchors and tuples, as the HDML authors' code (see
        `synthetic_squared_norm`).
        """
        del labels
        check_convention(convention)
        value = synthetic_npair_cross_entropy(anchors, tuples)
        if convention == "authors" and self.l2_reg:
            value = value + self.l2_reg * synthetic_squared_norm(anchors, tuples)
        return value

    def call(self, y_true, y_pred):
        return _npair(y_true, y_pred, self.l2_reg)

    def get_config(self):
        return {**super().get_config(), "l2_reg": self.l2_reg}
