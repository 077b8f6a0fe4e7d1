"""Triplet margin loss with structured batches or label-based mining."""

import keras
from keras import ops

from kerasml.losses._base import MetricLoss
from kerasml.losses._layouts import check_triplet_batch
from kerasml.losses._pairwise import (
    as_embeddings,
    as_labels,
    batch_size,
    label_masks,
    masked_mean,
    pairwise_squared_distances,
    safe_sqrt,
)

MINING_MODES = ("structured", "all", "hard", "semihard")
DISTANCES = ("squared", "euclidean")
# Finite stand-in for "no candidate" in masked min/max (distances are far smaller).
_FAR = 1e30


def _check_choice(argument, value, choices):
    if value not in choices:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected one of {choices}. Received: {argument}={value!r}"
        )


def _distances(embeddings, distance):
    d2 = pairwise_squared_distances(embeddings)
    return d2 if distance == "squared" else safe_sqrt(d2)


def _row_distance(a, b, distance):
    d2 = ops.sum(ops.square(a - b), axis=1)
    return d2 if distance == "squared" else safe_sqrt(d2)


def _structured(labels, embeddings, margin, distance):
    n = batch_size(embeddings) // 3
    anchors, positives, negatives = embeddings[:n], embeddings[n : 2 * n], embeddings[2 * n : 3 * n]
    la, lp, ln = labels[:n], labels[n : 2 * n], labels[2 * n : 3 * n]
    valid = ops.logical_and(la == lp, la != ln)
    d_ap = _row_distance(anchors, positives, distance)
    d_an = _row_distance(anchors, negatives, distance)
    return masked_mean(ops.relu(d_ap - d_an + margin), valid)


def _all(labels, embeddings, margin, distance):
    """Batch-all mean in O(B² log B) time and O(B²) memory, without the [B, B, B] hinge tensor.

    For an anchor, ``Σ_{p, n} max(D_ap + m − D_an, 0) = Σ_p (c_p t_p − s_p)`` with
    ``t_p = D_ap + m``, ``c_p`` the number of its negatives with ``D_an < t_p`` and
    ``s_p`` the sum of their distances. Sorting the anchor's negative distances
    together with its thresholds ``t_p`` gives every ``c_p`` and ``s_p`` as running
    counts and sums; negatives tied with a threshold add 0 either way.
    """
    d = _distances(embeddings, distance)
    positive, negative = label_masks(labels)
    negative_f = ops.cast(negative, "float32")
    positive_f = ops.cast(positive, "float32")
    zeros = ops.zeros_like(negative_f)
    # Per anchor row: its negatives' distances (others sent past every threshold),
    # then its positives' thresholds (others sent before every negative).
    values = ops.concatenate([ops.where(negative, d, _FAR), ops.where(positive, d + margin, -_FAR)], axis=1)
    is_negative = ops.concatenate([negative_f, zeros], axis=1)
    is_threshold = ops.concatenate([zeros, positive_f], axis=1)
    order = ops.argsort(ops.stop_gradient(values), axis=1)
    sorted_values = ops.take_along_axis(values, order, axis=1)
    sorted_negative = ops.take_along_axis(is_negative, order, axis=1)
    negatives_below = ops.cumsum(sorted_negative, axis=1)
    distance_below = ops.cumsum(sorted_negative * sorted_values, axis=1)
    # Each threshold entry collects c_p t_p − s_p.
    per_threshold = ops.take_along_axis(is_threshold, order, axis=1) * (
        negatives_below * sorted_values - distance_below
    )
    triplets = ops.sum(ops.sum(positive_f, axis=1) * ops.sum(negative_f, axis=1))
    return ops.sum(per_threshold) / ops.maximum(triplets, 1.0)


def _hard(labels, embeddings, margin, distance):
    d = _distances(embeddings, distance)
    positive, negative = label_masks(labels)
    hardest_positive = ops.max(ops.where(positive, d, 0.0), axis=1)
    hardest_negative = ops.min(ops.where(negative, d, _FAR), axis=1)
    valid = ops.logical_and(ops.any(positive, axis=1), ops.any(negative, axis=1))
    return masked_mean(ops.relu(hardest_positive - hardest_negative + margin), valid)


def _semihard(labels, embeddings, margin, distance):
    d = _distances(embeddings, distance)
    positive, negative = label_masks(labels)
    d_ap = ops.expand_dims(d, 2)  # [a, p, 1]
    d_an = ops.expand_dims(d, 1)  # [a, 1, n]
    negative_3d = ops.expand_dims(negative, 1)  # [a, 1, n]
    semihard = ops.logical_and(negative_3d, d_an > d_ap)  # [a, p, n]
    nearest_semihard = ops.min(ops.where(semihard, d_an, _FAR), axis=2)  # [a, p]
    hardest_negative = ops.max(ops.where(negative, d, -_FAR), axis=1, keepdims=True)  # [a, 1]
    chosen = ops.where(ops.any(semihard, axis=2), nearest_semihard, hardest_negative)
    valid = ops.logical_and(positive, ops.any(negative, axis=1, keepdims=True))
    return masked_mean(ops.relu(d - chosen + margin), valid)


_MINERS = {"structured": _structured, "all": _all, "hard": _hard, "semihard": _semihard}


def triplet_loss(labels, embeddings, margin=1.0, mining="all", distance="squared"):
    """Triplet margin loss of a batch, functional form of `TripletLoss`.

    ``L = mean over the selected triplets (a, p, n) of max(D_ap − D_an + m, 0)``,
    ``D`` the squared (default) or plain Euclidean distance. See `TripletLoss`
    for the triplets each ``mining`` mode selects.

    Args:
        labels: int class ids ``[B]``.
        embeddings: float ``[B, D]``.
        margin: ``m``.
        mining: ``"structured"``, ``"all"``, ``"hard"`` or ``"semihard"``.
        distance: ``"squared"`` or ``"euclidean"``.

    Returns:
        The scalar loss (float32).
    """
    _check_choice("mining", mining, MINING_MODES)
    _check_choice("distance", distance, DISTANCES)
    return _MINERS[mining](as_labels(labels), as_embeddings(embeddings), float(margin), distance)


@keras.saving.register_keras_serializable(package="kerasml")
class TripletLoss(MetricLoss):
    """Triplet margin loss: ``max(D_ap − D_an + m, 0)`` averaged over triplets.

    ``D`` is the squared Euclidean distance (``distance="squared"``, HDML's
    authors and FaceNet) or the Euclidean distance (``"euclidean"``). The
    triplets ``(a, p, n)`` (``y_a = y_p``, ``a ≠ p``, ``y_n ≠ y_a``) come from:

    - ``"all"`` (default): every valid triplet of the batch (batch-all); the
      mean is over all of them, zero terms included.
    - ``"hard"``: per anchor, its farthest positive and nearest negative
      (batch-hard, Hermans et al. 2017); anchors lacking either are skipped.
    - ``"semihard"``: per positive pair, the nearest negative farther than the
      positive, or the farthest negative when none is (FaceNet; TF-Addons'
      ``TripletSemiHardLoss``).
    - ``"structured"``: the study's and HDML's layout ``[anchors; positives;
      negatives]`` (``B = 3n``), triplet ``i`` being ``(i, n + i, 2n + i)``. A
      concrete batch that breaks it raises `ValueError`
      (`kerasml.data.TripletSampler` builds valid ones); in a compiled graph,
      invalid rows are skipped.

    Any mode returns 0 with zero gradient when the batch has no valid triplet.

    Defaults follow HDML's authors (squared distance, margin 1, unnormalised
    embeddings) except that triplets are averaged rather than summed: their
    loss is ``n ×`` this one. pytorch-metric-learning's `TripletMarginLoss`
    defaults to Euclidean distance on normalised embeddings, margin 0.05.

    Args:
        margin: ``m``. Defaults to ``1.0``.
        mining: ``"all"``, ``"hard"``, ``"semihard"`` or ``"structured"``.
            Defaults to ``"all"``.
        distance: ``"squared"`` or ``"euclidean"``. Defaults to ``"squared"``.
        name: name of the loss. Defaults to ``"triplet_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.TripletLoss(margin=1.0, mining="structured")
    >>> labels = np.array([0, 0, 1])                  # anchor, positive, negative
    >>> x = np.array([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]])
    >>> float(loss(labels, x))                        # 0.25 - 1.0 + 1.0
    0.25

    Reference:
        Schroff, Kalenichenko, Philbin, "FaceNet", CVPR 2015; Hermans, Beyer,
        Leibe, "In Defense of the Triplet Loss for Person Re-Identification", 2017.
    """

    def __init__(
        self,
        margin=1.0,
        mining="all",
        distance="squared",
        name="triplet_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        _check_choice("mining", mining, MINING_MODES)
        _check_choice("distance", distance, DISTANCES)
        self.margin = float(margin)
        self.mining = mining
        self.distance = distance

    @property
    def _checks_layout(self):
        return self.mining == "structured"

    def check_batch(self, labels):
        if self.mining == "structured":
            check_triplet_batch(labels, loss_name=f"{type(self).__name__}(mining='structured')")

    def call(self, y_true, y_pred):
        return _MINERS[self.mining](y_true, y_pred, self.margin, self.distance)

    def get_config(self):
        return {
            **super().get_config(),
            "margin": self.margin,
            "mining": self.mining,
            "distance": self.distance,
        }
