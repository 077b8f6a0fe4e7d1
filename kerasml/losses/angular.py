"""Angular loss in its N-pair form (Wang, Zhou, Wen, Liu and Lin, 2017)."""

import math

import keras
from keras import ops

from kerasml.losses import pairing
from kerasml.losses._base import MetricLoss, check_convention
from kerasml.losses.layouts import PAIRS
from kerasml.losses.npair import (
    npair_term,
    split_pairs,
    synthetic_npair_cross_entropy,
    synthetic_squared_norm,
)
from kerasml.losses.pairwise import (
    as_embeddings,
    as_labels,
    identity_mask,
    l2_normalize,
    masked_logsumexp,
    masked_mean,
)


def _angular_rows(anchor_labels, anchors, positives, labels, embeddings, tan_sq):
    # f_in = 4 tan²α (a_i + p_i)·x_n − 2 (1 + tan²α) a_i·p_i, for every sample n of another class.
    pair_dot = ops.sum(anchors * positives, axis=1, keepdims=True)  # [A, 1]
    centre_dot = ops.matmul(anchors + positives, ops.transpose(embeddings))  # [A, B]
    f = 4.0 * tan_sq * centre_dot - 2.0 * (1.0 + tan_sq) * pair_dot
    negative = ops.expand_dims(anchor_labels, 1) != ops.expand_dims(labels, 0)  # [A, B]
    return ops.logaddexp(0.0, masked_logsumexp(f, negative, axis=1))


def _angular_halves(labels, embeddings, tan_sq):
    anchor_labels, positive_labels, anchors, positives = split_pairs(labels, embeddings)
    per_anchor = _angular_rows(anchor_labels, anchors, positives, labels, embeddings, tan_sq)
    return masked_mean(per_anchor, anchor_labels == positive_labels)


def _angular_paired(labels, embeddings, tan_sq):
    # Pairs from the labels, in any order (kerasml.losses.pairing); every row is a candidate anchor.
    is_anchor, partner = pairing.pairs_from_labels(labels)
    positives = ops.take(embeddings, partner, axis=0)
    per_anchor = _angular_rows(labels, embeddings, positives, labels, embeddings, tan_sq)
    return masked_mean(per_anchor, is_anchor)


def _angular_term(labels, embeddings, tan_sq):
    return ops.cond(
        pairing.halves_are_pairs(labels),
        lambda: _angular_halves(labels, embeddings, tan_sq),
        lambda: _angular_paired(labels, embeddings, tan_sq),
    )


def angular_loss(
    labels,
    embeddings,
    alpha_degrees=40.0,
    angular_weight=1.0,
    npair_weight=0.0,
    l2_reg=0.0,
    normalize=True,
):
    """Angular N-pair loss of a batch, functional form of `AngularLoss`.

    Args:
        labels: int class ids ``[2N]`` in the N-pair layout.
        embeddings: float ``[2N, D]``.
        alpha_degrees: the angle bound ``α`` in degrees, in ``(0, 90)``.
        angular_weight: weight of the angular term.
        npair_weight: weight of the N-pair cross-entropy term.
        l2_reg: weight of the mean squared norm of the raw embeddings.
        normalize: L2-normalise the embeddings before both terms.

    Returns:
        The scalar loss (float32).
    """
    labels = as_labels(labels)
    raw = as_embeddings(embeddings)
    x = l2_normalize(raw) if normalize else raw
    tan_sq = math.tan(math.radians(alpha_degrees)) ** 2
    loss = angular_weight * _angular_term(labels, x, tan_sq)
    if npair_weight:
        loss = loss + npair_weight * npair_term(labels, x)
    if l2_reg:
        loss = loss + l2_reg * ops.mean(ops.sum(ops.square(raw), axis=1))
    return loss


@keras.saving.register_keras_serializable(package="kerasml")
class AngularLoss(MetricLoss):
    """Angular loss (N-pair form), optionally combined with the N-pair loss.

    Batch convention: the N-pair layout ``[a_1..a_N; p_1..p_N]`` (see
    `NPairLoss`). For anchor ``a_i``, its positive ``p_i`` and every sample
    ``x_n`` of the batch whose class differs from ``a_i``'s, with ``t = tan α``::

        f_in  = 4 t² (a_i + p_i)ᵀ x_n − 2 (1 + t²) a_iᵀ p_i
        L_ang = mean_i log(1 + Σ_n exp(f_in))
        L     = angular_weight · L_ang + npair_weight · L_npair + l2_reg · mean ‖x‖²

    ``L_ang`` is eq. (8) of Wang et al.; their best model combines it with the
    N-pair loss as ``L_npair + 2 L_ang`` (``npair_weight=1, angular_weight=2``).
    ``L_npair`` is `NPairLoss`'s cross-entropy on the same (normalised)
    embeddings; ``l2_reg`` acts on the raw embeddings. Layout errors are
    handled as in `NPairLoss`.

    Defaults: ``α = 40°`` (inside the paper's best range 36°–55°) and
    normalised embeddings, as pytorch-metric-learning's `AngularLoss` (which
    takes ``alpha`` in degrees too).

    Args:
        alpha_degrees: ``α`` in degrees, in ``(0, 90)``. Defaults to ``40.0``.
        angular_weight: weight of ``L_ang``. Defaults to ``1.0``.
        npair_weight: weight of ``L_npair``. Defaults to ``0.0``.
        l2_reg: weight of the mean squared raw embedding norm. Defaults to ``0.0``.
        normalize: L2-normalise the embeddings first. Defaults to ``True``.
        name: name of the loss. Defaults to ``"angular_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.AngularLoss(alpha_degrees=40.0)
    >>> labels = np.array([0, 1, 0, 1])
    >>> x = np.array([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    >>> round(float(loss(labels, x)), 6)        # log(1 + 2 exp(-2 - 10 t²))
    0.000237

    Reference:
        Wang, Zhou, Wen, Liu, Lin, "Deep Metric Learning with Angular Loss",
        ICCV 2017.
    """

    names = ("angular",)
    batch_layout = PAIRS
    hdml_summary = "yes: N² synthetic negatives per batch"

    def __init__(
        self,
        alpha_degrees=40.0,
        angular_weight=1.0,
        npair_weight=0.0,
        l2_reg=0.0,
        normalize=True,
        name="angular_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not 0.0 < float(alpha_degrees) < 90.0:
            raise ValueError(
                "Invalid value for argument `alpha_degrees`. Expected a float in "
                f"(0, 90). Received: alpha_degrees={alpha_degrees!r}"
            )
        self.alpha_degrees = float(alpha_degrees)
        self.angular_weight = float(angular_weight)
        self.npair_weight = float(npair_weight)
        self.l2_reg = float(l2_reg)
        self.normalize = bool(normalize)

    @property
    def hdml_layout(self):
        return "npair"

    def synthetic_loss(self, labels, anchors, tuples, convention="kerasml"):
        """``J_syn``: the angular term with ``ñ_ii`` as positive and ``ñ_ij, j ≠ i`` as negatives.

        ``f_ij = 4 tan²α (ã_i + ñ_ii)·ñ_ij − 2 (1 + tan²α) ã_i·ñ_ii`` and
        ``mean_i log(1 + Σ_{j≠i} exp f_ij)``, plus ``npair_weight`` times the
        synthetic N-pair cross-entropy. ``convention="kerasml"``: ``l2_reg``
        acts on real embeddings only; ``"authors"``: plus ``l2_reg · ½
        (mean‖ã‖² + mean‖ñ‖²)`` on the raw synthetic embeddings, as the HDML
        authors' code does for its N-pair loss (they never ran the angular loss
        with HDML).
        """
        del labels
        check_convention(convention)
        regularizer = 0.0
        if convention == "authors" and self.l2_reg:
            regularizer = self.l2_reg * synthetic_squared_norm(anchors, tuples)
        if self.normalize:
            anchors, tuples = l2_normalize(anchors), l2_normalize(tuples)
        diagonal = identity_mask(ops.shape(anchors)[0])
        positives = ops.sum(ops.where(ops.expand_dims(diagonal, -1), tuples, 0.0), axis=1)  # ñ_ii [N, D]
        tan_sq = math.tan(math.radians(self.alpha_degrees)) ** 2
        centre = ops.sum(ops.expand_dims(anchors + positives, 1) * tuples, axis=-1)  # [N, N]
        pair = ops.sum(anchors * positives, axis=-1, keepdims=True)  # [N, 1]
        f = 4.0 * tan_sq * centre - 2.0 * (1.0 + tan_sq) * pair
        value = self.angular_weight * ops.mean(
            ops.logaddexp(0.0, masked_logsumexp(f, ops.logical_not(diagonal), axis=1))
        )
        if self.npair_weight:
            value = value + self.npair_weight * synthetic_npair_cross_entropy(anchors, tuples)
        return value + regularizer

    def call(self, y_true, y_pred):
        return angular_loss(
            y_true,
            y_pred,
            alpha_degrees=self.alpha_degrees,
            angular_weight=self.angular_weight,
            npair_weight=self.npair_weight,
            l2_reg=self.l2_reg,
            normalize=self.normalize,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "alpha_degrees": self.alpha_degrees,
            "angular_weight": self.angular_weight,
            "npair_weight": self.npair_weight,
            "l2_reg": self.l2_reg,
            "normalize": self.normalize,
        }
