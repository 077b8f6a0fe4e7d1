"""Temperature-scaled softmax losses over cosine similarities: SupCon (Khosla et al. 2020) and NT-Xent (SimCLR)."""

import keras
from keras import ops

from kerasml.losses import distances, miners
from kerasml.losses._base import MetricLoss
from kerasml.losses.pairwise import as_embeddings, as_labels, masked_logsumexp, masked_mean
from kerasml.losses.reference import reference_embeddings

_COSINE = distances.Cosine()


def _logits(labels, embeddings, temperature, miner, reference=None):
    s = _COSINE.pairwise(embeddings, reference_embeddings(reference))
    positive, negative = miners.mine_pairs(miner, labels, -s, _COSINE, embeddings, reference)
    return s / temperature, positive, negative


def _supcon(labels, embeddings, temperature, miner, reference=None):
    logits, positive, negative = _logits(labels, embeddings, temperature, miner, reference)
    log_denominator = masked_logsumexp(logits, ops.logical_or(positive, negative), axis=1)  # [B]
    log_prob = ops.where(positive, logits - ops.expand_dims(log_denominator, 1), 0.0)
    positives = ops.sum(ops.cast(positive, "float32"), axis=1)
    per_anchor = -ops.sum(log_prob, axis=1) / ops.maximum(positives, 1.0)
    return masked_mean(per_anchor, positives > 0)


def _ntxent(labels, embeddings, temperature, miner, reference=None):
    logits, positive, negative = _logits(labels, embeddings, temperature, miner, reference)
    log_negatives = ops.expand_dims(masked_logsumexp(logits, negative, axis=1), 1)  # [B, 1]
    # −log(e^{s_ap} / (e^{s_ap} + Σ_n e^{s_an})) for every pair; kept on the positive pairs.
    per_pair = ops.logaddexp(logits, log_negatives) - logits
    return masked_mean(per_pair, positive)


def supcon_loss(labels, embeddings, temperature=0.1, miner=None):
    """Supervised contrastive loss of a batch, functional form of `SupConLoss`.

    ``L = mean_i −1/|P(i)| Σ_{p ∈ P(i)} log( exp(s_ip/τ) / Σ_{a ≠ i} exp(s_ia/τ) )``
    over the anchors with a positive, ``s`` the cosine similarity.

    Args:
        labels: int class ids ``[B]``.
        embeddings: float ``[B, D]`` (normalised inside).
        temperature: ``τ``.
        miner: a miner (or its name / dict), or ``None`` for every pair.

    Returns:
        The scalar loss (float32).
    """
    return _supcon(as_labels(labels), as_embeddings(embeddings), float(temperature), miners.get(miner))


def ntxent_loss(labels, embeddings, temperature=0.07, miner=None):
    """NT-Xent loss of a batch, functional form of `NTXentLoss`.

    ``L = mean_{(a, p)} −log( exp(s_ap/τ) / (exp(s_ap/τ) + Σ_{n ∈ N(a)} exp(s_an/τ)) )``
    over the positive pairs, ``s`` the cosine similarity.

    Args:
        labels: int class (or instance) ids ``[B]``.
        embeddings: float ``[B, D]`` (normalised inside).
        temperature: ``τ``.
        miner: a miner (or its name / dict), or ``None`` for every pair.

    Returns:
        The scalar loss (float32).
    """
    return _ntxent(as_labels(labels), as_embeddings(embeddings), float(temperature), miners.get(miner))


class _TemperatureLoss(MetricLoss):
    """Shared arguments and config of `SupConLoss` and `NTXentLoss`."""

    _function = None
    supports_reference = True

    def __init__(self, temperature, miner, name, reduction, dtype):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not float(temperature) > 0:
            raise ValueError(
                f"Invalid value for argument `temperature` of {type(self).__name__}. Expected a number > 0. "
                f"Received: temperature={temperature!r}"
            )
        self.temperature = float(temperature)
        self.miner = miners.get(miner)

    def call(self, y_true, y_pred):
        return type(self)._function(y_true, y_pred, self.temperature, self.miner)

    def call_with_reference(self, y_true, y_pred, reference):
        return type(self)._function(y_true, y_pred, self.temperature, self.miner, reference)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "miner": distances.serialize(self.miner)}


@keras.saving.register_keras_serializable(package="kerasml")
class SupConLoss(_TemperatureLoss):
    """Supervised contrastive loss: every same-class sample is a positive of the softmax over the batch.

    With ``s`` the cosine similarities (embeddings normalised inside the loss),
    ``P(i)`` the positives of anchor ``i`` and ``A(i)`` every other sample::

        L = mean_i −1/|P(i)| Σ_{p ∈ P(i)} log( exp(s_ip/τ) / Σ_{a ∈ A(i)} exp(s_ia/τ) )

    ``L^sup_out``, eq. (2) of Khosla et al. The mean runs over the anchors with
    at least one positive (0 when none has). With a miner, ``P(i)`` and ``A(i)``
    are the mined positive pairs and the mined positive and negative pairs.

    Batch convention: any labelled batch ``(y_true [B] int, y_pred [B, D])``:
    class labels (supervised), or one id per source image with two augmented views
    each (then it is SimCLR's loss, as `NTXentLoss`).

    Defaults: ``τ = 0.1`` (pytorch-metric-learning's, PML; the paper's
    experiments). PML's ``SupConLoss(temperature)`` gives the same values. The
    authors' code also multiplies the loss by ``τ / 0.07`` (``base_temperature``);
    that constant factor is left out here, as in PML.

    Args:
        temperature: ``τ > 0``. Defaults to ``0.1``.
        miner: a `kerasml.losses.miners.Miner`, a miner name, ``{"type": name,
            ...arguments}``, or ``None``/``"all"`` for every pair. Defaults to ``None``.
        name: name of the loss. Defaults to ``"supcon_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.SupConLoss(temperature=1.0)
    >>> labels = np.array([0, 0, 1])
    >>> x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> round(float(loss(labels, x)), 4)      # log(1 + e^-1) for both anchors of class 0
    0.3133

    Reference:
        Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020.
    """

    names = ("supcon", "supervised_contrastive")
    _function = staticmethod(_supcon)

    def __init__(self, temperature=0.1, miner=None, name="supcon_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(temperature, miner, name, reduction, dtype)


@keras.saving.register_keras_serializable(package="kerasml")
class NTXentLoss(_TemperatureLoss):
    """NT-Xent (normalised temperature-scaled cross-entropy): each positive pair against the anchor's negatives.

    With ``s`` the cosine similarities (embeddings normalised inside the loss),
    for every positive pair ``(a, p)`` and ``N(a)`` the negatives of ``a``::

        L = mean_{(a, p)} −log( exp(s_ap/τ) / (exp(s_ap/τ) + Σ_{n ∈ N(a)} exp(s_an/τ)) )

    SimCLR's loss (Chen et al. 2020; InfoNCE, van den Oord et al. 2018; the
    multi-class N-pair loss of Sohn 2016 with cosine similarities and a
    temperature). Unlike `SupConLoss`, the other positives of ``a`` are not in
    the denominator; with exactly one positive per anchor the two are equal.
    The mean runs over the ordered positive pairs (0 when there is none).

    Batch convention: any labelled batch ``(y_true [B] int, y_pred [B, D])``; for
    self-supervised training, two augmented views per image labelled with the
    image's index.

    Defaults: ``τ = 0.07`` (pytorch-metric-learning's, PML; SimCLR used 0.1 to
    0.5 depending on the batch size). PML's ``NTXentLoss(temperature)`` gives the
    same values.

    Args:
        temperature: ``τ > 0``. Defaults to ``0.07``.
        miner: a `kerasml.losses.miners.Miner`, a miner name, ``{"type": name,
            ...arguments}``, or ``None``/``"all"`` for every pair. Defaults to ``None``.
        name: name of the loss. Defaults to ``"ntxent_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.NTXentLoss(temperature=1.0)
    >>> labels = np.array([0, 0, 1])
    >>> x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> round(float(loss(labels, x)), 4)      # log(1 + e^-1) for both pairs of class 0
    0.3133

    Reference:
        Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive
        Learning of Visual Representations", ICML 2020.
    """

    names = ("ntxent", "nt_xent", "info_nce")
    _function = staticmethod(_ntxent)

    def __init__(self, temperature=0.07, miner=None, name="ntxent_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(temperature, miner, name, reduction, dtype)
