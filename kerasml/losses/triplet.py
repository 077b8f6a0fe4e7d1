"""Triplet margin loss with structured batches, label-based mining or any miner and distance."""

import keras
from keras import ops

from kerasml._validation import check_choice
from kerasml.losses import distances, miners
from kerasml.losses._base import MetricLoss, check_convention
from kerasml.losses.layouts import ANY, TRIPLET
from kerasml.losses.mined import mean_triplet_hinge
from kerasml.losses.pairwise import as_embeddings, as_labels, batch_size, masked_mean
from kerasml.losses.reference import reference_embeddings

MINING_MODES = ("structured", "all", "hard", "semihard")
#: the `distance` names TripletLoss takes as strings (other distances: objects or dicts).
DISTANCES = ("squared", "euclidean")
#: what each mining shorthand stands for: ``None`` is every triplet.
SHORTHANDS = {"all": None, "hard": miners.BatchHardMiner, "semihard": miners.SemiHardMiner}


def _distance(distance):
    """A `Distance` from TripletLoss's ``distance``: ``"squared"``/``"euclidean"``, a dict or an object."""
    if isinstance(distance, str) and distance not in DISTANCES:
        raise ValueError(
            f"Invalid value for argument `distance`. Expected one of {DISTANCES}, a dict "
            '{"type": name, ...arguments} or a `kerasml.losses.distances.Distance` (e.g. '
            f"`distances.Cosine()`). Received: distance={distance!r}."
        )
    return distances.get(distance)


def _serialize_distance(distance):
    value = distances.serialize(distance)
    return {"type": value} if isinstance(value, str) and value not in DISTANCES else value


def _miner(mining, miner):
    """The effective miner of a ``mining`` shorthand and an explicit ``miner`` (at most one of them)."""
    check_choice("mining", mining, MINING_MODES)
    miner = miners.get(miner)
    if miner is not None and mining != "all":
        raise ValueError(
            "Invalid value for argument `miner`. Expected None when `mining` is not 'all' (the mining "
            "shorthands name a miner themselves). Received: "
            f"mining={mining!r}, miner={miner!r}. Pass one of them."
        )
    if miner is None and SHORTHANDS.get(mining) is not None:
        miner = SHORTHANDS[mining]()
    return miner


def _mined(labels, embeddings, margin, distance, miner, reference=None):
    """Mean hinge over the triplets ``miner`` selects (every valid one for ``None``), O(B²) memory."""
    d = distance.dissimilarity(distance.pairwise(embeddings, reference_embeddings(reference)))
    return mean_triplet_hinge(d, miners.mine_triplets(miner, labels, d, distance, embeddings, reference), margin)


def _structured(labels, embeddings, margin, distance, reduction="mean"):
    n = batch_size(embeddings) // 3
    anchors, positives, negatives = embeddings[:n], embeddings[n : 2 * n], embeddings[2 * n : 3 * n]
    la, lp, ln = labels[:n], labels[n : 2 * n], labels[2 * n : 3 * n]
    valid = ops.logical_and(la == lp, la != ln)
    d_ap = distance.dissimilarity(distance.paired(anchors, positives))
    d_an = distance.dissimilarity(distance.paired(anchors, negatives))
    hinges = ops.relu(d_ap - d_an + margin)
    if reduction == "sum":
        return ops.sum(ops.where(valid, hinges, 0.0))
    return masked_mean(hinges, valid)


def _authors_reduction(convention):
    """Triplets are summed in the HDML authors' code (``wzzheng/HDML`` lib/Loss_ops.py:164-168)."""
    check_convention(convention)
    return "sum" if convention == "authors" else "mean"


def triplet_loss(labels, embeddings, margin=1.0, mining="all", distance="squared", miner=None):
    """Triplet margin loss of a batch, functional form of `TripletLoss`.

    ``L = mean over the selected triplets (a, p, n) of max(D_ap − D_an + m, 0)``,
    ``D`` the squared (default) or plain Euclidean distance. See `TripletLoss`
    for the triplets each ``mining`` mode selects.

    Args:
        labels: int class ids ``[B]``.
        embeddings: float ``[B, D]``.
        margin: ``m``.
        mining: ``"structured"``, ``"all"``, ``"hard"`` or ``"semihard"``.
        distance: ``"squared"``, ``"euclidean"``, a dict or a `Distance`.
        miner: a `kerasml.losses.miners.Miner` (or its name / dict), with
            ``mining="all"``; ``None`` for the ``mining`` shorthand.

    Returns:
        The scalar loss (float32).
    """
    miner, distance = _miner(mining, miner), _distance(distance)
    labels, embeddings = as_labels(labels), as_embeddings(embeddings)
    if mining == "structured":
        return _structured(labels, embeddings, float(margin), distance)
    return _mined(labels, embeddings, float(margin), distance, miner)


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
    ``"hard"`` and ``"semihard"`` are shorthands for
    ``miner=BatchHardMiner()`` and ``miner=SemiHardMiner()``; ``miner=`` takes
    any `kerasml.losses.miners` miner instead (with ``mining="all"``), e.g.
    ``TripletMarginMiner(0.2, "semihard")`` or ``DistanceWeightedMiner()``. A
    pair miner gives the triplets made of a mined positive and a mined
    negative pair of one anchor. Mining and the batch-all mean take O(B²)
    memory and O(B² log B) time (each anchor's row is sorted once), never a
    ``[B, B, B]`` tensor.

    ``distance`` takes ``"squared"``, ``"euclidean"``, or any
    `kerasml.losses.distances.Distance` (``distances.Cosine()``,
    ``{"type": "cosine"}``): with a similarity ``S`` the hinge reads
    ``max(S_an − S_ap + m, 0)``.

    Defaults follow HDML's authors (squared distance, margin 1, unnormalised
    embeddings) except that triplets are averaged rather than summed: their
    loss is ``n ×`` this one. pytorch-metric-learning's `TripletMarginLoss`
    defaults to Euclidean distance on normalised embeddings, margin 0.05, and
    averages only the non-zero terms; ``TripletMarginLoss(margin=1, distance=
    LpDistance(normalize_embeddings=False, power=2), reducer=MeanReducer())``
    gives the values of ``mining="all"``, and with a PML miner those of the
    same kerasml miner.

    Args:
        margin: ``m``. Defaults to ``1.0``.
        mining: ``"all"``, ``"hard"``, ``"semihard"`` or ``"structured"``.
            Defaults to ``"all"``.
        distance: ``"squared"``, ``"euclidean"``, ``{"type": name, ...}`` or a
            `kerasml.losses.distances.Distance`. Defaults to ``"squared"``.
        miner: a `kerasml.losses.miners.Miner`, a miner name or ``{"type": name,
            ...arguments}``, used with ``mining="all"``. Defaults to ``None``.
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

    names = ("triplet", "Triplet")
    supports_reference = True
    layout_summary = 'any labelled batch; [anchors; positives; negatives] with mining="structured"'
    hdml_summary = 'with mining="structured": one synthetic negative per triplet'

    def __init__(
        self,
        margin=1.0,
        mining="all",
        distance="squared",
        miner=None,
        name="triplet_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._miner = _miner(mining, miner)
        self.margin = float(margin)
        self.mining = mining
        self.distance = _distance(distance)
        self.miner = miners.get(miner)
        self._structured_reduction = "mean"

    @property
    def layout(self):
        return TRIPLET if self.mining == "structured" else ANY

    @property
    def layout_name(self):
        return f"{type(self).__name__}(mining={self.mining!r})"

    @property
    def hdml_layout(self):
        return "triplet" if self.mining == "structured" else None

    def hdml_problem(self):
        if self.mining == "structured":
            return None
        return (
            f"TripletLoss mines its triplets from the labels with mining={self.mining!r}; use "
            "TripletLoss(mining='structured') with kerasml.data.TripletSampler"
        )

    def real_loss(self, labels, embeddings, convention="kerasml"):
        """``J_m``: this loss; with ``convention="authors"`` (structured mining) summed over triplets.

        The HDML authors sum their triplet loss over the batch (``wzzheng/HDML``
        lib/Loss_ops.py:164-168), so their ``J_m`` is ``n ×`` this loss's mean.
        """
        if _authors_reduction(convention) == "mean" or self.mining != "structured":
            return super().real_loss(labels, embeddings, convention)
        self._structured_reduction = "sum"  # read by `call` while the loss runs
        try:
            return self(labels, embeddings)
        finally:
            self._structured_reduction = "mean"

    def synthetic_loss(self, labels, anchors, tuples, convention="kerasml"):
        """``J_syn``: the structured triplet loss of the synthetic batch ``[ã; p̃; ñ]`` (``tuples`` unused).

        Averaged over the triplets, or summed with ``convention="authors"`` (as
        the HDML authors' code, main_triplet.py:111).
        """
        del tuples
        return _structured(labels, anchors, self.margin, self.distance, _authors_reduction(convention))

    def call(self, y_true, y_pred):
        if self.mining == "structured":
            return _structured(y_true, y_pred, self.margin, self.distance, self._structured_reduction)
        return _mined(y_true, y_pred, self.margin, self.distance, self._miner)

    def call_with_reference(self, y_true, y_pred, reference):
        return _mined(y_true, y_pred, self.margin, self.distance, self._miner, reference)

    def get_config(self):
        return {
            **super().get_config(),
            "margin": self.margin,
            "mining": self.mining,
            "distance": _serialize_distance(self.distance),
            "miner": distances.serialize(self.miner),
        }
