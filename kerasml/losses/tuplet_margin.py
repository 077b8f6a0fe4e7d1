"""Tuplet margin loss (Yu and Tao, 2019)."""

import math

import keras
from keras import ops

from kerasml.losses import distances, miners
from kerasml.losses._base import MetricLoss
from kerasml.losses.pairwise import as_embeddings, as_labels, masked_logsumexp, masked_mean, safe_sqrt
from kerasml.losses.reference import reference_embeddings

_COSINE = distances.Cosine()


def _tuplet_margin(labels, embeddings, margin_radians, scale, miner, reference=None):
    s = _COSINE.pairwise(embeddings, reference_embeddings(reference))
    positive, negative = miners.mine_pairs(miner, labels, -s, _COSINE, embeddings, reference)
    # cos(θ_ap − β) = cos θ cos β + sin θ sin β with sin θ = sqrt(1 − cos² θ) ≥ 0 (θ ∈ [0, π]):
    # no arccos, whose derivative is infinite at cos θ = ±1.
    cos_shifted = s * math.cos(margin_radians) + safe_sqrt(ops.relu(1.0 - ops.square(s))) * math.sin(margin_radians)
    log_negatives = ops.expand_dims(masked_logsumexp(scale * s, negative, axis=1), 1)  # [B, 1]
    # log(1 + Σ_n exp(scale (cos θ_an − cos(θ_ap − β)))) for every pair; kept on the positive pairs.
    per_pair = ops.softplus(log_negatives - scale * cos_shifted)
    return masked_mean(per_pair, positive)


def tuplet_margin_loss(labels, embeddings, margin_degrees=5.73, scale=64.0, miner=None):
    """Tuplet margin loss of a batch, functional form of `TupletMarginLoss`.

    ``L = mean_{(a, p)} log(1 + Σ_{n ∈ N(a)} exp(s (cos θ_an − cos(θ_ap − β))))``.

    Args:
        labels: int class ids ``[B]``.
        embeddings: float ``[B, D]`` (normalised inside).
        margin_degrees: ``β`` in degrees.
        scale: ``s``.
        miner: a miner (or its name / dict), or ``None`` for every pair.

    Returns:
        The scalar loss (float32).
    """
    return _tuplet_margin(
        as_labels(labels),
        as_embeddings(embeddings),
        math.radians(float(margin_degrees)),
        float(scale),
        miners.get(miner),
    )


@keras.saving.register_keras_serializable(package="kerasml")
class TupletMarginLoss(MetricLoss):
    """Tuplet margin loss: a scaled softmax over angles, the positive angle shrunk by a margin ``β``.

    With ``θ`` the angle between two embeddings (``cos θ`` their cosine
    similarity; embeddings normalised inside the loss), for every positive pair
    ``(a, p)`` and ``N(a)`` the negatives of ``a``::

        L = mean_{(a, p)} log(1 + Σ_{n ∈ N(a)} exp(s (cos θ_an − cos(θ_ap − β))))

    eq. (4) of Yu and Tao, whose tuplets (an anchor, one positive, the
    negatives) are here every positive pair of the batch with all of its
    anchor's negatives. The paper's optional intra-pair variance term is not
    included. A pair whose anchor has no negative adds 0; no positive pair gives 0.

    Batch convention: any labelled batch ``(y_true [B] int, y_pred [B, D])``,
    several samples per class. ``miner`` selects the pairs (default: all).

    Defaults ``β = 5.73°`` (0.1 rad) and ``s = 64`` follow the paper and
    pytorch-metric-learning (PML), whose ``TupletMarginLoss(margin=5.73,
    scale=64)`` (margin in degrees) gives the same values; PML computes
    ``cos(arccos(·) − β)``, here expanded so the gradient stays finite at ``θ = 0``.

    Args:
        margin_degrees: ``β`` in degrees. Defaults to ``5.73``.
        scale: ``s``. Defaults to ``64.0``.
        miner: a `kerasml.losses.miners.Miner`, a miner name, ``{"type": name,
            ...arguments}``, or ``None``/``"all"`` for every pair. Defaults to ``None``.
        name: name of the loss. Defaults to ``"tuplet_margin_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.TupletMarginLoss(margin_degrees=0.0, scale=1.0)
    >>> labels = np.array([0, 0, 1])
    >>> x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> round(float(loss(labels, x)), 4)      # log(1 + exp(0 - 1))
    0.3133

    Reference:
        Yu, Tao, "Deep Metric Learning with Tuplet Margin Loss", ICCV 2019.
    """

    names = ("tuplet_margin", "tuplet")
    supports_reference = True

    def __init__(
        self,
        margin_degrees=5.73,
        scale=64.0,
        miner=None,
        name="tuplet_margin_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin_degrees = float(margin_degrees)
        self.scale = float(scale)
        self.miner = miners.get(miner)

    def call(self, y_true, y_pred):
        return _tuplet_margin(y_true, y_pred, math.radians(self.margin_degrees), self.scale, self.miner)

    def call_with_reference(self, y_true, y_pred, reference):
        return _tuplet_margin(y_true, y_pred, math.radians(self.margin_degrees), self.scale, self.miner, reference)

    def get_config(self):
        return {
            **super().get_config(),
            "margin_degrees": self.margin_degrees,
            "scale": self.scale,
            "miner": distances.serialize(self.miner),
        }
