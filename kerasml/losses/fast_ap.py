"""FastAP: average precision of the batch's rankings, smoothed by histogram binning (Cakir et al. 2019)."""

import keras
from keras import ops

from kerasml._validation import check_int
from kerasml.losses._base import MetricLoss
from kerasml.losses.pairwise import as_embeddings, as_labels, l2_normalize, label_masks, masked_mean


def _histograms(scaled, positive, others, bins):
    """Triangular-kernel histograms ``[B, bins + 1]`` of each row's positives and of all its others.

    A distance at ``s = d / Δ`` (in ``[0, bins]``) adds ``1 − frac(s)`` to bin ``⌊s⌋`` and
    ``frac(s)`` to bin ``⌊s⌋ + 1`` and nothing elsewhere: the kernels ``max(1 − |s − l|, 0)``,
    accumulated by one scatter-add over the ``B²`` pairs into per-row positive and negative
    histograms (O(B²) memory, not O(B² · bins)).
    """
    size = ops.shape(scaled)[0]
    width = bins + 2  # bins 0..L, plus one slot for the upper neighbour of s = L (weight 0)
    low = ops.floor(ops.stop_gradient(scaled))
    upper = scaled - low
    # Segment of (row, positive or not, bin): rows of 2 * width slots.
    slots = (
        ops.expand_dims(ops.arange(size, dtype="int32"), 1) * (2 * width)
        + ops.cast(positive, "int32") * width
        + ops.cast(low, "int32")
    )
    segments = ops.reshape(ops.concatenate([slots, slots + 1], axis=1), (-1,))
    weight = ops.cast(others, "float32")
    data = ops.reshape(ops.concatenate([weight * (1.0 - upper), weight * upper], axis=1), (-1,))
    flat = ops.reshape(ops.segment_sum(data, segments, size * 2 * width), (size, 2, width))
    h_negative, h_positive = flat[:, 0, : bins + 1], flat[:, 1, : bins + 1]
    return h_positive, h_negative + h_positive


def _fast_ap(labels, embeddings, bins):
    unit = l2_normalize(embeddings)
    # Squared Euclidean distances of unit vectors, in [0, 4], in units of the bin width.
    d = ops.relu(2.0 - 2.0 * ops.matmul(unit, ops.transpose(unit)))
    scaled = ops.clip(d * (bins / 4.0), 0.0, float(bins))
    positive, negative = label_masks(labels)
    h_positive, h_all = _histograms(scaled, positive, ops.logical_or(positive, negative), bins)
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
    return check_int("bins", bins, "FastAPLoss")


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
    the paper samples a few classes with many images each. Each distance
    touches only its two neighbouring bins, so the histograms are a scatter-add
    over the ``B²`` pairs: O(B²) memory (PML builds ``[L + 1, B, B]`` kernels).

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
