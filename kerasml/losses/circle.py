"""Circle loss (Sun, Cheng, Zhang, Zhang, Zheng, Wang and Wei, 2020), pair-based form."""

import keras
from keras import ops

from kerasml.losses import distances, miners
from kerasml.losses._base import MetricLoss
from kerasml.losses.pair_synthesis import PairSynthesis, row_matrix
from kerasml.losses.pairwise import as_embeddings, as_labels, masked_logsumexp, masked_mean
from kerasml.losses.reference import reference_embeddings

_COSINE = distances.Cosine()


def _circle(labels, embeddings, m, gamma, miner, reference=None):
    s = _COSINE.pairwise(embeddings, reference_embeddings(reference))
    return _circle_of(labels, s, m, gamma, miner, embeddings, reference)


def _circle_of(labels, s, m, gamma, miner, embeddings, reference=None):
    """The loss from a ``[B, B]`` matrix of cosine similarities (row ``i``: anchor ``i``'s pairs; or ``[B, N]``)."""
    positive, negative = miners.mine_pairs(miner, labels, -s, _COSINE, embeddings, reference)
    # The weights α are constants of the gradient step (the authors' code detaches them).
    alpha_p = ops.stop_gradient(ops.relu(1.0 + m - s))
    alpha_n = ops.stop_gradient(ops.relu(s + m))
    logit_p = -gamma * alpha_p * (s - (1.0 - m))
    logit_n = gamma * alpha_n * (s - m)
    per_anchor = ops.softplus(masked_logsumexp(logit_p, positive, axis=1) + masked_logsumexp(logit_n, negative, axis=1))
    usable = ops.logical_and(ops.any(positive, axis=1), ops.any(negative, axis=1))
    return masked_mean(per_anchor, usable)


def circle_loss(labels, embeddings, m=0.25, gamma=256.0, miner=None):
    """Circle loss of a batch, functional form of `CircleLoss`.

    With ``s`` the cosine similarities, per anchor ``i`` with positives ``P_i``
    and negatives ``N_i``::

        L_i = log(1 + Σ_{n ∈ N_i} exp(γ α_n (s_n − m)) · Σ_{p ∈ P_i} exp(−γ α_p (s_p − 1 + m)))

    ``α_p = max(1 + m − s_p, 0)``, ``α_n = max(s_n + m, 0)`` (no gradient);
    ``L`` is the mean over anchors with both a positive and a negative.

    Args:
        labels: int class ids ``[B]``.
        embeddings: float ``[B, D]`` (normalised inside).
        m: the relaxation margin.
        gamma: the scale ``γ``.
        miner: a miner (or its name / dict), or ``None`` for every pair.

    Returns:
        The scalar loss (float32).
    """
    return _circle(as_labels(labels), as_embeddings(embeddings), float(m), float(gamma), miners.get(miner))


@keras.saving.register_keras_serializable(package="kerasml")
class CircleLoss(PairSynthesis, MetricLoss):
    """Circle loss: each similarity re-weighted by its distance to its own optimum.

    With ``s`` the cosine similarities (embeddings normalised inside the loss),
    per anchor ``i`` with positive pairs ``P_i`` and negative pairs ``N_i``::

        L_i = log(1 + Σ_{n ∈ N_i} exp(γ α_n (s_n − Δ_n)) · Σ_{p ∈ P_i} exp(−γ α_p (s_p − Δ_p)))
        α_p = max(O_p − s_p, 0),  α_n = max(s_n − O_n, 0)
        O_p = 1 + m,  O_n = −m,  Δ_p = 1 − m,  Δ_n = m

    (eq. 6–8 of Sun et al., pair-wise labels). ``α_p`` and ``α_n`` are held
    constant in the gradient, as in the authors' code and PML. ``L`` is the mean
    of ``L_i`` over the anchors that have at least one positive and one negative
    pair (0 when none has).

    Batch convention: any labelled batch ``(y_true [B] int, y_pred [B, D])``,
    several samples per class. ``miner`` selects the pairs (default: all).

    HDML (`kerasml.hdml.HDMLModel`) synthesises a negative for every negative
    pair (docs/hdml.md, "HDML beyond tuples"); ``J_syn`` is this formula with
    ``s_n`` (and ``s_p``) the cosine similarities ``s̃_ik = cos(ã_i, ñ_ik)``
    between each synthetic anchor and its row.

    Defaults ``m = 0.25``, ``γ = 256`` are the paper's for face recognition;
    it uses ``m = 0.25, γ = 128`` for re-identification and ``m = 0.4, γ = 80``
    for fine-grained retrieval, which are pytorch-metric-learning's (PML)
    defaults. PML's ``CircleLoss(m, gamma)`` averages over the anchors whose loss
    is not 0 (the same anchors unless a loss underflows to 0).

    Relation to `keras.losses.Circle(gamma=80, margin=0.4)`: the same formula per
    anchor (written with cosine distances ``1 − s``), but Keras' expects
    embeddings already normalised, lets the gradient flow through ``α_p, α_n``,
    averages over the anchors with a non-zero loss, and its ``Loss.__call__``
    casts the integer labels to the loss dtype (labels 256 and 257 merge under
    bfloat16). Here embeddings are normalised, ``α`` is detached as in the paper's
    code, labels stay int32, and any kerasml miner applies.

    Args:
        m: the relaxation margin ``m``. Defaults to ``0.25``.
        gamma: the scale ``γ``. Defaults to ``256.0``.
        miner: a `kerasml.losses.miners.Miner`, a miner name, ``{"type": name,
            ...arguments}``, or ``None``/``"all"`` for every pair. Defaults to ``None``.
        name: name of the loss. Defaults to ``"circle_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.CircleLoss(m=0.25, gamma=1.0)
    >>> labels = np.array([0, 0, 1, 1])
    >>> x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> round(float(loss(labels, x)), 4)   # log(1 + 2 exp(-0.0625) exp(-0.0625))
    1.017

    Reference:
        Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity
        Optimization", CVPR 2020.
    """

    names = ("circle",)
    supports_reference = True

    def __init__(
        self, m=0.25, gamma=256.0, miner=None, name="circle_loss", reduction="sum_over_batch_size", dtype=None
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.m = float(m)
        self.gamma = float(gamma)
        self.miner = miners.get(miner)

    def call(self, y_true, y_pred):
        return _circle(y_true, y_pred, self.m, self.gamma, self.miner)

    def call_with_reference(self, y_true, y_pred, reference):
        return _circle(y_true, y_pred, self.m, self.gamma, self.miner, reference)

    def synthetic_pair_loss(self, labels, anchors, tuples):
        """This loss on ``s̃_ik = cos(ã_i, ñ_ik)`` (row ``i``: anchor ``i``'s pairs)."""
        return _circle_of(labels, row_matrix(_COSINE, anchors, tuples), self.m, self.gamma, self.miner, anchors)

    def get_config(self):
        return {
            **super().get_config(),
            "m": self.m,
            "gamma": self.gamma,
            "miner": distances.serialize(self.miner),
        }
