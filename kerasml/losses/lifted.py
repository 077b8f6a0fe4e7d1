"""Smooth lifted structured loss (Song, Xiang, Jegelka and Savarese, 2016)."""

import keras
from keras import ops

from kerasml.losses import distances
from kerasml.losses._base import MetricLoss
from kerasml.losses.pair_synthesis import PairSynthesis, row_matrix
from kerasml.losses.pairwise import (
    as_embeddings,
    as_labels,
    label_masks,
    masked_logsumexp,
    masked_mean,
    pairwise_distances,
)

_EUCLIDEAN = distances.Euclidean()


def lifted_structure_loss(labels, embeddings, margin=1.0):
    """Smooth lifted structured loss of a batch, functional form of `LiftedStructureLoss`.

    With Euclidean ``D``, ``N_i`` the samples of another class than ``i``::

        J_ij = log( Σ_{k ∈ N_i} exp(m − D_ik) + Σ_{l ∈ N_j} exp(m − D_jl) ) + D_ij
        L    = 1 / (2|P|) · Σ_{(i,j) ∈ P} max(J_ij, 0)²

    over the unordered positive pairs ``P``.

    Args:
        labels: int class ids ``[B]``.
        embeddings: float ``[B, D]``.
        margin: ``m``.

    Returns:
        The scalar loss (float32).
    """
    return _lifted_of(as_labels(labels), pairwise_distances(as_embeddings(embeddings)), margin)


def _lifted_of(labels, d, margin):
    """The loss from a ``[B, B]`` matrix of Euclidean distances (row ``i``: anchor ``i``'s pairs)."""
    positive, negative = label_masks(labels)
    log_negatives = masked_logsumexp(margin - d, negative, axis=1)  # [B]
    # log(Σ_{N_i} + Σ_{N_j}) for every pair (i, j), [B, B].
    pair_log = ops.logaddexp(ops.expand_dims(log_negatives, 1), ops.expand_dims(log_negatives, 0))
    hinge = ops.square(ops.relu(pair_log + d))
    # Ordered pairs count each unordered pair twice: their mean equals the
    # mean over unordered pairs, and ½ of it is 1/(2|P|) Σ_P.
    return 0.5 * masked_mean(hinge, positive)


@keras.saving.register_keras_serializable(package="kerasml")
class LiftedStructureLoss(PairSynthesis, MetricLoss):
    """Smooth lifted structured loss: each positive pair against all negatives.

    With Euclidean distances ``D``, ``P`` the unordered positive pairs and
    ``N_i`` the samples whose class differs from sample ``i``'s::

        J_ij = log( Σ_{k ∈ N_i} exp(m − D_ik) + Σ_{l ∈ N_j} exp(m − D_jl) ) + D_ij
        L    = 1 / (2|P|) · Σ_{(i,j) ∈ P} max(J_ij, 0)²

    This is eq. (4) of Song et al. (the smooth upper bound of their eq. 3).
    Batch convention: any labelled batch ``(y_true [B] int, y_pred [B, D])``
    with at least one positive pair; with none the loss is 0. A pair with no
    negative on either side has ``J_ij = −∞`` and costs 0.

    HDML (`kerasml.hdml.HDMLModel`) synthesises a negative for every negative
    pair (docs/hdml.md, "HDML beyond tuples"); ``J_syn`` is this formula on
    ``D̃_ik = ‖ã_i − ñ_ik‖``: ``N_i``'s sum runs over the negatives pulled toward
    ``i``, ``N_j``'s over those pulled toward ``j``.

    Defaults follow the paper (margin 1, Euclidean, unnormalised).
    pytorch-metric-learning's `LiftedStructureLoss(pos_margin=0, neg_margin=1)`
    with ``LpDistance(normalize_embeddings=False)`` gives the same values (it
    materialises every positive × negative pair, O(B⁴) memory, where this is
    O(B²)); its `GeneralizedLiftedStructureLoss` is a different loss.

    Args:
        margin: ``m``. Defaults to ``1.0``.
        name: name of the loss. Defaults to ``"lifted_structure_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.LiftedStructureLoss(margin=1.0)
    >>> labels = np.array([0, 0, 1, 1])
    >>> x = np.array([[0.0, 0.0], [0.0, 0.0], [9.0, 0.0], [9.0, 0.0]])
    >>> float(loss(labels, x))                  # negatives 9 apart, margin 1
    0.0

    Reference:
        Song, Xiang, Jegelka, Savarese, "Deep Metric Learning via Lifted
        Structured Feature Embedding", CVPR 2016.
    """

    names = ("lifted", "lifted_structure", "LiftedStructLoss")

    def __init__(self, margin=1.0, name="lifted_structure_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        return lifted_structure_loss(y_true, y_pred, margin=self.margin)

    def synthetic_pair_loss(self, labels, anchors, tuples):
        """This loss on ``D̃_ik = ‖ã_i − ñ_ik‖`` (row ``i``: anchor ``i``'s pairs)."""
        return _lifted_of(labels, row_matrix(_EUCLIDEAN, anchors, tuples), self.margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}
