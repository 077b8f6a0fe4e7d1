"""Contrastive loss (Hadsell, Chopra and LeCun, 2006) over all pairs of a batch."""

import keras
from keras import ops

from kerasml.losses import distances, miners
from kerasml.losses._base import MetricLoss
from kerasml.losses.pair_synthesis import PairSynthesis, row_matrix
from kerasml.losses.pairwise import (
    as_embeddings,
    as_labels,
    batch_size,
    masked_mean,
    pairwise_squared_distances,
    safe_sqrt,
)
from kerasml.losses.reference import reference_embeddings

_EUCLIDEAN = distances.Euclidean()
_SQUARED = distances.SquaredEuclidean()


def _contrastive(labels, embeddings, margin):
    same = ops.cast(ops.expand_dims(labels, 1) == ops.expand_dims(labels, 0), "float32")
    size = ops.cast(batch_size(labels), "float32")
    same_count = ops.sum(same)
    d2 = pairwise_squared_distances(embeddings, exact_diagonal=False)
    # Positives are the same-label pairs minus the diagonal (whose rounding noise
    # is subtracted back out through the trace); negatives never include it.
    positive_sum = ops.sum(d2 * same) - ops.trace(d2)
    positive_term = positive_sum / ops.maximum(same_count - size, 1.0)
    hinge = ops.square(ops.relu(margin - safe_sqrt(d2)))
    negative_term = ops.sum(hinge * (1.0 - same)) / ops.maximum(size * size - same_count, 1.0)
    return 0.5 * (positive_term + negative_term)


def _contrastive_mined(labels, embeddings, margin, miner):
    """The same two means over the pairs ``miner`` selects (by Euclidean distance)."""
    return _contrastive_of_squared(labels, pairwise_squared_distances(embeddings), margin, miner, embeddings)


def _contrastive_of_squared(labels, d2, margin, miner, embeddings, reference=None):
    """The two means from a ``[B, B]`` matrix of squared distances (row ``i``: anchor ``i``'s pairs; or ``[B, N]``)."""
    d = safe_sqrt(d2)
    positive, negative = miners.mine_pairs(miner, labels, d, _EUCLIDEAN, embeddings, reference)
    return 0.5 * (masked_mean(d2, positive) + masked_mean(ops.square(ops.relu(margin - d)), negative))


def contrastive_loss(labels, embeddings, margin=1.0, miner=None):
    """Contrastive loss of a batch, functional form of `ContrastiveLoss`.

    With ``d_ij = ‖x_i − x_j‖`` (Euclidean), ``P`` the pairs ``i ≠ j`` of one
    class and ``N`` the pairs of two classes::

        L = ½ mean_{(i,j) ∈ P} d_ij²  +  ½ mean_{(i,j) ∈ N} max(m − d_ij, 0)²

    Each mean is 0 when its set is empty.

    Args:
        labels: int class ids ``[B]``.
        embeddings: float ``[B, D]``.
        margin: ``m``, the distance beyond which a negative pair costs nothing.
        miner: a `kerasml.losses.miners.Miner` (or its name / dict) choosing the
            pairs, or ``None`` for every pair.

    Returns:
        The scalar loss (float32).
    """
    miner = miners.get(miner)
    labels, embeddings = as_labels(labels), as_embeddings(embeddings)
    if miner is None:
        return _contrastive(labels, embeddings, float(margin))
    return _contrastive_mined(labels, embeddings, float(margin), miner)


@keras.saving.register_keras_serializable(package="kerasml")
class ContrastiveLoss(PairSynthesis, MetricLoss):
    """Contrastive loss over every pair of the batch, mined from the labels.

    With ``d_ij = ‖x_i − x_j‖``, ``P`` the ordered pairs ``i ≠ j`` with equal
    labels and ``N`` those with different labels::

        L = ½ mean_{(i,j) ∈ P} d_ij²  +  ½ mean_{(i,j) ∈ N} max(m − d_ij, 0)²

    Batch convention: any labelled batch ``(y_true [B] int, y_pred [B, D])``.
    Positive and negative pairs are averaged separately, so a batch with many
    more negatives than positives does not drown the positives; an empty set
    contributes 0 (a batch of one class has only the positive term). With a
    ``miner`` (any of `kerasml.losses.miners`, ranking pairs by Euclidean
    distance), ``P`` and ``N`` are the mined pairs; a triplet miner gives the
    pairs of its triplets.

    HDML (`kerasml.hdml.HDMLModel`) synthesises a negative for every negative
    pair (docs/hdml.md, "HDML beyond tuples"); ``J_syn`` is this formula with
    ``d̃_ij = ‖ã_i − ñ_ij‖`` between each synthetic anchor and its row.

    Defaults follow Hadsell et al. (Euclidean distance, squared hinge, ½
    factors, margin 1). pytorch-metric-learning's `ContrastiveLoss` uses the
    plain (not squared) terms ``d`` and ``max(m − d, 0)``, no ½, and averages
    only non-zero terms; its values differ from these by those factors.

    Args:
        margin: ``m``. Defaults to ``1.0``.
        miner: a `kerasml.losses.miners.Miner`, a miner name, ``{"type": name,
            ...arguments}``, or ``None``/``"all"`` for every pair. Defaults to ``None``.
        name: name of the loss. Defaults to ``"contrastive_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.ContrastiveLoss(margin=1.0)
    >>> labels = np.array([0, 0, 1, 1])
    >>> x = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [3.0, 0.0]])
    >>> float(loss(labels, x))
    0.0

    Reference:
        Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an
        Invariant Mapping", CVPR 2006.
    """

    names = ("contrastive",)
    supports_reference = True

    def __init__(self, margin=1.0, miner=None, name="contrastive_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = float(margin)
        self.miner = miners.get(miner)

    def call(self, y_true, y_pred):
        if self.miner is None:
            return _contrastive(y_true, y_pred, self.margin)
        return _contrastive_mined(y_true, y_pred, self.margin, self.miner)

    def call_with_reference(self, y_true, y_pred, reference):
        # Every pair (no miner) is the mined form over the reference's label masks.
        d2 = pairwise_squared_distances(y_pred, reference_embeddings(reference))
        return _contrastive_of_squared(y_true, d2, self.margin, self.miner, y_pred, reference)

    def synthetic_pair_loss(self, labels, anchors, tuples):
        """``½ mean_P d̃² + ½ mean_N max(m − d̃, 0)²`` with ``d̃_ij = ‖ã_i − ñ_ij‖`` (``miner`` on ``d̃``)."""
        return _contrastive_of_squared(labels, row_matrix(_SQUARED, anchors, tuples), self.margin, self.miner, anchors)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "miner": distances.serialize(self.miner)}
