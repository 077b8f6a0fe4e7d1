"""Multi-similarity loss (Wang, Han, Huang, Dong and Scott, 2019) with its pair mining."""

import keras
from keras import ops

from kerasml.losses import distances, miners
from kerasml.losses._base import MetricLoss
from kerasml.losses.pair_synthesis import PairSynthesis, row_matrix
from kerasml.losses.pairwise import as_embeddings, as_labels, masked_logsumexp
from kerasml.losses.reference import reference_embeddings


def _multi_similarity(labels, embeddings, alpha, beta, base, miner, distance, reference=None):
    matrix = distance.pairwise(embeddings, reference_embeddings(reference))
    return _multi_similarity_of(labels, matrix, alpha, beta, base, miner, distance, embeddings, reference)


def _multi_similarity_of(labels, matrix, alpha, beta, base, miner, distance, embeddings, reference=None):
    """The loss from a ``[B, B]`` matrix of ``distance`` (row ``i``: anchor ``i``'s pairs; ``[B, N]``: a reference)."""
    d = distance.dissimilarity(matrix)
    positive, negative = miners.mine_pairs(miner, labels, d, distance, embeddings, reference)
    # "S − λ" for a similarity; "λ − D" for a distance (closer is always larger).
    shifted = matrix - base if distance.is_similarity else base - matrix
    # log(1 + Σ exp(x)) = softplus(log Σ exp(x)); an empty set gives softplus(−1e30) = 0.
    positive_term = ops.softplus(masked_logsumexp(-alpha * shifted, positive, axis=1)) / alpha
    negative_term = ops.softplus(masked_logsumexp(beta * shifted, negative, axis=1)) / beta
    return ops.mean(positive_term + negative_term)


def multi_similarity_loss(
    labels, embeddings, alpha=2.0, beta=50.0, base=0.5, miner="multi_similarity", distance="cosine"
):
    """Multi-similarity loss of a batch, functional form of `MultiSimilarityLoss`.

    With ``S`` the cosine similarity and ``P_i``, ``N_i`` anchor ``i``'s mined
    positive and negative pairs::

        L = mean_i [ 1/α log(1 + Σ_{k ∈ P_i} exp(−α (S_ik − λ)))
                   + 1/β log(1 + Σ_{k ∈ N_i} exp( β (S_ik − λ))) ]

    Args:
        labels: int class ids ``[B]``.
        embeddings: float ``[B, D]``.
        alpha: ``α``, the scale of the positive pairs.
        beta: ``β``, the scale of the negative pairs.
        base: ``λ``, the similarity the pairs are pushed away from.
        miner: a miner, its name, ``{"type": name, ...}``, or ``None``/``"all"``
            for every pair.
        distance: a distance or its name; ``S − λ`` reads ``λ − D`` for a distance.

    Returns:
        The scalar loss (float32).
    """
    return _multi_similarity(
        as_labels(labels),
        as_embeddings(embeddings),
        float(alpha),
        float(beta),
        float(base),
        miners.get(miner),
        distances.get(distance),
    )


@keras.saving.register_keras_serializable(package="kerasml")
class MultiSimilarityLoss(PairSynthesis, MetricLoss):
    """Multi-similarity loss: every pair weighted by its own and its neighbours' similarities.

    With ``S`` the cosine similarity of the embeddings (normalised inside the
    loss), and ``P_i``, ``N_i`` the positive and negative pairs of anchor ``i``
    kept by the miner::

        L = mean_i [ 1/α log(1 + Σ_{k ∈ P_i} exp(−α (S_ik − λ)))
                   + 1/β log(1 + Σ_{k ∈ N_i} exp( β (S_ik − λ))) ]

    This is eq. (11) of Wang et al. The default miner is the paper's own pair
    mining (eq. 7–8, `kerasml.losses.miners.MultiSimilarityMiner` with ε = 0.1):
    a negative pair is kept when ``S_in > min_{P_i} S − ε``, a positive pair when
    ``S_ip < max_{N_i} S + ε``. ``miner=None`` uses every pair; any other miner
    selects the pairs instead.

    Batch convention: any labelled batch ``(y_true [B] int, y_pred [B, D])``,
    several samples per class (`kerasml.data` ``m_per_class`` sampler). The mean
    runs over all ``B`` anchors; an anchor whose sets are empty adds 0 (a batch of
    one class, or of distinct classes, gives 0).

    HDML (`kerasml.hdml.HDMLModel`) synthesises a negative for every negative
    pair (docs/hdml.md, "HDML beyond tuples"); ``J_syn`` is this formula (miner
    included) on ``S̃_ik = S(ã_i, ñ_ik)`` between each synthetic anchor and its row.

    Defaults: ``α = 2``, ``β = 50``, ``λ = 0.5`` as the paper's experiments and
    pytorch-metric-learning (PML). PML's ``MultiSimilarityLoss(alpha, beta,
    base)`` with ``MultiSimilarityMiner(epsilon=0.1)`` gives the same values;
    PML's loss alone (no miner) equals ``miner=None``. With a distance instead of
    a similarity, ``S_ik − λ`` becomes ``λ − D_ik`` (as in PML).

    Args:
        alpha: ``α``. Defaults to ``2.0``.
        beta: ``β``. Defaults to ``50.0``.
        base: ``λ``. Defaults to ``0.5``.
        miner: a `kerasml.losses.miners.Miner`, a miner name, ``{"type": name,
            ...arguments}``, or ``None``/``"all"`` for every pair. Defaults to
            ``"multi_similarity"``.
        distance: a `kerasml.losses.distances.Distance` or a name (``"cosine"``,
            ``"dot"``, ``"euclidean"``, ``"squared"``). Defaults to ``"cosine"``.
        name: name of the loss. Defaults to ``"multi_similarity_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.MultiSimilarityLoss(miner=None)
    >>> labels = np.array([0, 0, 1, 1])
    >>> x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> round(float(loss(labels, x)), 4)      # ½ log(1 + e^-1): S = 1 within, 0 across classes
    0.1566

    Reference:
        Wang, Han, Huang, Dong, Scott, "Multi-Similarity Loss with General Pair
        Weighting for Deep Metric Learning", CVPR 2019.
    """

    names = ("multi_similarity", "ms", "multisimilarity")
    supports_reference = True

    def __init__(
        self,
        alpha=2.0,
        beta=50.0,
        base=0.5,
        miner="multi_similarity",
        distance="cosine",
        name="multi_similarity_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.base = float(base)
        self.miner = miners.get(miner)
        self.distance = distances.get(distance)

    def call(self, y_true, y_pred):
        return _multi_similarity(y_true, y_pred, self.alpha, self.beta, self.base, self.miner, self.distance)

    def call_with_reference(self, y_true, y_pred, reference):
        args = (self.alpha, self.beta, self.base, self.miner, self.distance)
        return _multi_similarity(y_true, y_pred, *args, reference)

    def synthetic_pair_loss(self, labels, anchors, tuples):
        """This loss, miner included, on ``S̃_ik = S(ã_i, ñ_ik)`` (row ``i``: anchor ``i``'s pairs)."""
        matrix = row_matrix(self.distance, anchors, tuples)
        return _multi_similarity_of(
            labels, matrix, self.alpha, self.beta, self.base, self.miner, self.distance, anchors
        )

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "beta": self.beta,
            "base": self.base,
            "miner": distances.serialize(self.miner),
            "distance": distances.serialize(self.distance),
        }
