"""Margin loss with a learned boundary ``β`` (Wu, Manmatha, Smola and Krähenbühl, 2017)."""

import keras
from keras import ops

from kerasml.losses import distances, miners
from kerasml.losses.pairwise import as_embeddings, as_labels, l2_normalize, pairwise_distances
from kerasml.losses.parametric import ParametricLoss, class_mask


def _margin(labels, embeddings, beta, margin, nu, miner):
    x = l2_normalize(embeddings)
    d = pairwise_distances(x)  # [B, B]
    positive, negative = miners.mine_pairs(miner, labels, d, distances.Euclidean(normalize=True), x)
    beta = as_embeddings(beta)
    if len(ops.shape(beta)) == 0:
        anchor_beta = ops.reshape(beta, (1, 1))
    else:  # β of each anchor's class; 0 for a label outside [0, C)
        mask = ops.cast(class_mask(labels, ops.shape(beta)[0]), "float32")
        anchor_beta = ops.sum(mask * ops.expand_dims(beta, 0), axis=1, keepdims=True)  # [B, 1]
    positive_loss = ops.where(positive, ops.relu(d - anchor_beta + margin), 0.0)
    negative_loss = ops.where(negative, ops.relu(anchor_beta - d + margin), 0.0)
    active = ops.sum(ops.cast(positive_loss > 0, "float32")) + ops.sum(ops.cast(negative_loss > 0, "float32"))
    loss = (ops.sum(positive_loss) + ops.sum(negative_loss)) / ops.maximum(active, 1.0)
    if nu:
        loss = loss + nu * ops.mean(anchor_beta)
    return loss


def margin_loss(labels, embeddings, beta=1.2, margin=0.2, nu=0.0, miner=None):
    """Margin loss of a batch, functional form of `MarginLoss`.

    Args:
        labels: int class ids ``[B]``.
        embeddings: float ``[B, D]``.
        beta: the boundary ``β``: a scalar, or ``[C]`` (one per class; then
            labels lie in ``[0, C)``).
        margin: ``α``.
        nu: ``ν``, the weight of the ``β`` penalty.
        miner: a miner, its name, or ``None``/``"all"`` for every pair.

    Returns:
        The scalar loss (float32).
    """
    return _margin(as_labels(labels), as_embeddings(embeddings), beta, float(margin), float(nu), miners.get(miner))


@keras.saving.register_keras_serializable(package="kerasml")
class MarginLoss(ParametricLoss):
    """Margin loss: positive pairs inside ``β − α``, negative pairs beyond ``β + α``, with ``β`` learned.

    With ``D_ij = ‖x̂_i − x̂_j‖`` the Euclidean distance of the L2-normalised
    embeddings, ``β_i`` the boundary of anchor ``i`` (one ``β``, or ``β_{y_i}``
    with ``num_classes``), and ``ℓ_ij = (α + y_ij (D_ij − β_i))_+`` where
    ``y_ij = +1`` for a positive pair and ``−1`` for a negative one::

        L = Σ_{(i, j) ∈ pairs} ℓ_ij / #{(i, j): ℓ_ij > 0}  +  ν · mean_i β_i

    over every ordered pair ``i ≠ j`` of the batch, or those a ``miner``
    keeps (Wu et al. sample negatives by distance, `miner="distance_weighted"`).
    The mean over the non-zero terms is the authors' code's. Batch convention:
    any labelled batch, several samples per class.

    Defaults: ``α = 0.2``, ``β₀ = 1.2`` (the paper's), ``β`` learned
    (``learn_beta=True``, the issue's choice; pytorch-metric-learning (PML)'s
    ``MarginLoss`` has ``learn_beta=False``) at the model's learning rate, no
    penalty (``ν = 0``). PML's ``MarginLoss(margin=0.2, nu=0, beta=1.2)`` averages
    positive and negative terms separately over triplets; the authors' code
    also divides the ``ν`` term by the pair count.

    A learned ``β`` is trainable state: see `kerasml.losses.parametric` for how
    a model owns it (`kerasml.models.MetricModel` does).

    Args:
        margin: ``α``. Defaults to ``0.2``.
        beta: the initial (or, with ``learn_beta=False``, fixed) ``β``. Defaults to ``1.2``.
        learn_beta: train ``β``. Defaults to ``True``.
        num_classes: ``None`` for one ``β``; ``C`` for one ``β`` per class
            (labels in ``[0, C)``). Defaults to ``None``.
        nu: ``ν``, the weight of the penalty on ``β``. Defaults to ``0.0``.
        miner: a `kerasml.losses.miners` miner, its name, ``{"type": name, ...}``,
            or ``None``/``"all"`` for every pair. Defaults to ``None``.
        lr_multiplier: ``β``'s learning-rate multiple in
            `kerasml.models.MetricModel`. Defaults to ``1.0``.
        name: name of the loss. Defaults to ``"margin_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.MarginLoss(margin=0.2, beta=1.5, learn_beta=False)
    >>> x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> round(float(loss(np.array([0, 0, 1]), x)), 4)  # the 4 negative terms are active: α + β − √2
    0.2858

    Reference:
        Wu, Manmatha, Smola, Krähenbühl, "Sampling Matters in Deep Embedding
        Learning", ICCV 2017.
    """

    names = ("margin",)
    # `configure` sets no size: num_classes=None is a valid choice (one β), made at construction.
    sizes = ()
    layout_summary = "any labelled batch (labels in [0, num_classes) with one β per class)"

    def __init__(
        self,
        margin=0.2,
        beta=1.2,
        learn_beta=True,
        num_classes=None,
        nu=0.0,
        miner=None,
        lr_multiplier=1.0,
        name="margin_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        self.margin = float(margin)
        self.initial_beta = float(beta)
        self.learn_beta = bool(learn_beta)
        self.nu = float(nu)
        self.miner = miners.get(miner)
        super().__init__(num_classes, None, lr_multiplier, None, name, reduction, dtype)

    def parameter_shapes(self):
        if not self.learn_beta:
            return None
        return {"beta": () if self.num_classes is None else (self.num_classes,)}

    def default_initializer(self, name):
        return keras.initializers.Constant(self.initial_beta)

    @property
    def beta(self):
        """``β``: a trainable `keras.Variable` (``[]`` or ``[C]``), or the fixed float / ``[C]`` value."""
        if self.learn_beta:
            return self._variable("beta")
        if self.num_classes is None:
            return self.initial_beta
        return ops.full((self.num_classes,), self.initial_beta)

    def call(self, y_true, y_pred):
        return _margin(y_true, y_pred, self.beta, self.margin, self.nu, self.miner)

    def get_config(self):
        config = super().get_config()
        for unused in ("embedding_dim", "initializer"):
            config.pop(unused)
        return {
            **config,
            "margin": self.margin,
            "beta": self.initial_beta,
            "learn_beta": self.learn_beta,
            "nu": self.nu,
            "miner": distances.serialize(self.miner),
        }
