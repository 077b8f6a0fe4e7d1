"""FastAP: average precision of the batch's rankings, smoothed by histogram binning (Cakir et al. 2019)."""

import keras
from keras import ops

from kerasml.losses._base import MetricLoss
from kerasml.losses.pairwise import as_embeddings, as_labels, l2_normalize, label_masks, masked_mean


def _fast_ap(labels, embeddings, bins):
    unit = l2_normalize(embeddings)
    # Squared Euclidean distances of unit vectors, in [0, 4].
    d = ops.relu(2.0 - 2.0 * ops.matmul(unit, ops.transpose(unit)))
    positive, negative = label_masks(labels)
    width = 4.0 / bins
    centres = ops.arange(bins + 1, dtype="float32") * width  # z_0 = 0 ... z_L = 4
    # Triangular kernel of every distance at every bin centre, [B, B, L + 1].
    pulse = ops.relu(1.0 - ops.abs(ops.expand_dims(d, 2) - centres) / width)
    positive_f = ops.expand_dims(ops.cast(positive, "float32"), 2)
    others_f = ops.expand_dims(ops.cast(ops.logical_or(positive, negative), "float32"), 2)
    h_positive = ops.sum(pulse * positive_f, axis=1)  # [B, L + 1]
    h_all = ops.sum(pulse * others_f, axis=1)
    cumulative_positive = ops.cumsum(h_positive, axis=1)
    cumulative_all = ops.cumsum(h_all, axis=1)
    filled = cumulative_all > 0
    terms = ops.where(filled, h_positive * cumulative_positive / ops.where(filled, cumulative_all, 1.0), 0.0)
    positives = ops.sum(ops.cast(positive, "float32"), axis=1)
    fast_ap = ops.sum(terms, axis=1) / ops.maximum(positives, 1.0)
    return masked_mean(1.0 - fast_ap, positives > 0)


def fast_ap_loss(labels, embeddings, bins=10):
    """FastAP loss of a batch, functional form of `FastAPLoss`.

    ``L = 1 − mean_q FastAP_q`` with ``FastAP_q = 1/N⁺_q Σ_l h⁺_l H⁺_l / H_l``
    over the queries ``q`` that have a positive; see `FastAPLoss`.

    Args:
        labels: int class ids ``[B]``.
        embeddings: float ``[B, D]`` (normalised inside).
        bins: the number ``L`` of histogram intervals on ``[0, 4]``.

    Returns:
        The scalar loss (float32).
    """
    return _fast_ap(as_labels(labels), as_embeddings(embeddings), _check_bins(bins))


def _check_bins(bins):
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(
            f"Invalid value for argument `bins` of FastAPLoss. Expected an int >= 1. Received: bins={bins!r}"
        )
    return bins


@keras.saving.register_keras_serializable(package="kerasml")
class FastAPLoss(MetricLoss):
    """FastAP: one minus the average precision of each sample's ranking of the batch, binned to be differentiable.

    Each sample ``q`` ranks every other sample by ``d = ‖x̂_q − x̂_k‖²`` (squared
    Euclidean distance of the L2-normalised embeddings, in ``[0, 4]``). With
    ``L = bins`` intervals of width ``Δ = 4/L`` and triangular kernels
    ``δ_l(d) = max(1 − |d − z_l|/Δ, 0)`` at ``z_l = lΔ``, ``l = 0..L``::

        h⁺_l = Σ_{k ∈ P_q} δ_l(d_qk)      h_l = Σ_{k ≠ q} δ_l(d_qk)
        H⁺_l = Σ_{j ≤ l} h⁺_j            H_l = Σ_{j ≤ l} h_j
        FastAP_q = 1/|P_q| Σ_l h⁺_l H⁺_l / H_l      (terms with H_l = 0 are 0)
        L = 1 − mean_q FastAP_q

    over the samples ``q`` with at least one positive ``P_q`` (0 when none has):
    eq. (14) of Cakir et al., the histogram approximation of average precision.

    Batch convention: any labelled batch ``(y_true [B] int, y_pred [B, D])``;
    the paper samples a few classes with many images each. The kernels take
    ``O(B² (L + 1))`` memory.

    Defaults: ``L = 10`` as pytorch-metric-learning (PML), whose
    ``FastAPLoss(num_bins=10)`` gives the same values; the authors' code and PML
    also place ``L + 1`` kernel centres on ``[0, 4]``. The paper's experiments
    use 10 to 20 bins.

    Args:
        bins: ``L``, the number of histogram intervals. Defaults to ``10``.
        name: name of the loss. Defaults to ``"fast_ap_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.FastAPLoss()
    >>> labels = np.array([0, 0, 1, 1])
    >>> x = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
    >>> float(loss(labels, x))                # each positive ranked first: AP = 1
    0.0

    Reference:
        Cakir, He, Xia, Kulis, Sclaroff, "Deep Metric Learning to Rank", CVPR 2019.
    """

    names = ("fast_ap", "fastap")

    def __init__(self, bins=10, name="fast_ap_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.bins = _check_bins(bins)

    def call(self, y_true, y_pred):
        return _fast_ap(y_true, y_pred, self.bins)

    def get_config(self):
        return {**super().get_config(), "bins": self.bins}
