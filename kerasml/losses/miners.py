"""Miners: which pairs or triplets of a batch a loss trains on, in O(B²) memory.

A miner looks at the labels and the loss's dissimilarity matrix ``D`` ``[B, B]``
(the distance, or minus the similarity: see `kerasml.losses.distances`) and
returns either

- `Pairs`: boolean ``[B, B]`` masks of the positive pairs ``(a, p)`` and the
  negative pairs ``(a, n)`` to use (pair miners), or
- `Triplets`: the triplets ``(a, p, n)`` to use, never as a ``[B, B, B]``
  tensor but as ``[B, B]`` arrays: either one chosen negative per positive
  pair (``choice``), or every negative of the anchor (with a weight) whose
  ``D_an − D_ap`` falls in a window ``(low, high]`` (triplet miners).

Any pair or triplet loss takes any miner (``miner=...``): a pair loss uses the
pairs that appear in the mined triplets, a triplet loss every triplet made of a
mined positive and a mined negative pair of one anchor (as in
pytorch-metric-learning, PML). Miners rank by the loss's own distance, so their
margins are in its units; mining never carries gradient. Everything keeps static
shapes (masks, no boolean indexing): miners trace under ``jax.jit`` and
``tf.function``. Counting the negatives below a threshold for every positive
pair (semi-hard and margin windows) sorts each anchor's row once:
O(B² log B) time, O(B²) memory.

=======================  ============================================  ==========
miner                    selects                                       output
=======================  ============================================  ==========
`BatchHardMiner`         per anchor: farthest positive, nearest        triplets
                         negative (Hermans et al. 2017)
`BatchEasyHardMiner`     per anchor: easiest positive, semi-hard /     triplets
                         hard / easy negative (Xuan et al. 2020)
`SemiHardMiner`          per positive pair: nearest negative farther   triplets
                         than the positive (FaceNet)
`TripletMarginMiner`     every triplet with ``D_an − D_ap`` in a       triplets
                         window set by a margin
`DistanceWeightedMiner`  negatives weighted by inverse density on      triplets
                         the sphere (Wu et al. 2017)
`MultiSimilarityMiner`   pairs harder than the hardest pair of the     pairs
                         other kind, ± ε (Wang et al. 2019)
`PairMarginMiner`        positives farther / negatives nearer than     pairs
                         a margin
=======================  ============================================  ==========
"""

import math

import keras
from keras import ops

from kerasml._validation import check_choice
from kerasml.losses import distances as distances_module
from kerasml.losses.distances import _from_table
from kerasml.losses.mined import FAR, Pairs, Triplets, count_below
from kerasml.losses.pairwise import as_embeddings, as_labels, l2_normalize, label_masks

# ------------------------------------------------------------------ miners


def _row_index(n):
    """``[1, n]`` column indices, to compare with ``[B, 1]`` chosen indices (a dynamic-``n`` one-hot)."""
    return ops.expand_dims(ops.arange(n, dtype="int32"), 0)


def _argmin(masked):
    return ops.cast(ops.argmin(masked, axis=1), "int32")


def _argmax(masked):
    return ops.cast(ops.argmax(masked, axis=1), "int32")


class Miner:
    """Base class of the miners: labels and a dissimilarity matrix in, `Pairs` or `Triplets` out.

    Subclasses set ``name`` and implement ``_mine(positive, negative, d, distance,
    embeddings)``: ``positive``/``negative`` are the label masks (the diagonal is
    not a positive), ``d`` the loss's dissimilarity ``[B, B]`` without gradient.
    """

    #: the short name `get` accepts (and configs write).
    name = ""
    #: whether the miner works on a batch against a reference set (``[B, N]`` matrices,
    #: `kerasml.losses.reference.Reference`, as `kerasml.losses.CrossBatchMemory` builds).
    supports_reference = True

    def mine(self, labels, dissimilarity, distance, embeddings, reference=None):
        """Mine one batch (what the losses call).

        Args:
            labels: int32 ``[B]``.
            dissimilarity: float ``[B, B]`` from the loss's distance (small = close);
                ``[B, N]`` against a ``reference``.
            distance: the loss's `kerasml.losses.distances.Distance` (for the units of margins).
            embeddings: float32 ``[B, D]`` (for miners with their own geometry).
            reference: a `kerasml.losses.reference.Reference` the columns refer to, or
                ``None`` (the batch itself). Defaults to ``None``.

        Returns:
            `Pairs` or `Triplets`.
        """
        positive, negative = label_masks(labels) if reference is None else reference.masks(labels)
        return self._mine(positive, negative, ops.stop_gradient(dissimilarity), distance, ops.stop_gradient(embeddings))

    def __call__(self, labels, embeddings, distance="euclidean"):
        """Mine a batch of ``labels`` ``[B]`` and ``embeddings`` ``[B, D]`` under ``distance`` (for inspection)."""
        distance = distances_module.get(distance)
        embeddings = as_embeddings(embeddings)
        matrix = distance.pairwise(embeddings)
        return self.mine(as_labels(labels), distance.dissimilarity(matrix), distance, embeddings)

    def _mine(self, positive, negative, d, distance, embeddings):
        raise NotImplementedError

    def get_config(self):
        """The constructor arguments."""
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self):
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


@keras.saving.register_keras_serializable(package="kerasml")
class BatchHardMiner(Miner):
    """Batch-hard triplets: per anchor, its farthest positive and its nearest negative.

    One triplet per anchor that has both (Hermans, Beyer and Leibe 2017);
    `TripletLoss(mining="hard")` uses it. PML: ``BatchHardMiner()``.

    Example:

    >>> import numpy as np
    >>> from kerasml.losses import miners
    >>> mined = miners.BatchHardMiner()(np.array([0, 0, 1]), np.array([[0.0], [1.0], [3.0]]))
    >>> np.asarray(mined.positive).astype(int).tolist()
    [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    """

    name = "batch_hard"

    def _mine(self, positive, negative, d, distance, embeddings):
        size = ops.shape(d)[1]
        usable = ops.logical_and(ops.any(positive, axis=1, keepdims=True), ops.any(negative, axis=1, keepdims=True))
        hardest_positive = _argmax(ops.where(positive, d, -FAR))
        hardest_negative = _argmin(ops.where(negative, d, FAR))
        chosen = _row_index(size) == ops.expand_dims(hardest_positive, 1)
        choice = ops.broadcast_to(ops.expand_dims(hardest_negative, 1), ops.shape(d))
        return Triplets(positive=ops.logical_and(chosen, usable), choice=choice)


STRATEGIES = ("easy", "semihard", "hard")


@keras.saving.register_keras_serializable(package="kerasml")
class BatchEasyHardMiner(Miner):
    """One triplet per anchor: a positive and a negative each chosen by a strategy.

    - positives: ``"easy"`` the nearest, ``"hard"`` the farthest, ``"semihard"``
      the farthest one still nearer than the chosen negative;
    - negatives: ``"hard"`` the nearest, ``"easy"`` the farthest, ``"semihard"``
      the nearest one still farther than the chosen positive.

    An anchor without a candidate (no positive, no negative, or no semi-hard one)
    forms no triplet. The defaults, easy positive and semi-hard negative, are the
    best variant ("EPSHN") of Xuan, Stylianou and Pless, "Improved Embeddings with
    Easy Positive Triplet Mining" (WACV 2020), and PML's ``BatchEasyHardMiner()``
    defaults (whose ``"all"`` strategy and allowed ranges are not offered here).

    Args:
        pos_strategy: ``"easy"``, ``"semihard"`` or ``"hard"``. Defaults to ``"easy"``.
        neg_strategy: ``"easy"``, ``"semihard"`` or ``"hard"``. Defaults to ``"semihard"``.
    """

    name = "batch_easy_hard"

    def __init__(self, pos_strategy="easy", neg_strategy="semihard"):
        check_choice("pos_strategy", pos_strategy, STRATEGIES)
        check_choice("neg_strategy", neg_strategy, STRATEGIES)
        if pos_strategy == neg_strategy == "semihard":
            raise ValueError(
                "Invalid value for arguments `pos_strategy` and `neg_strategy`: they cannot both be "
                "'semihard' (each is defined relative to the other's choice). Received: "
                "pos_strategy='semihard', neg_strategy='semihard'."
            )
        self.pos_strategy = pos_strategy
        self.neg_strategy = neg_strategy

    def _pick_positive(self, positive, d, d_an):
        if self.pos_strategy == "easy":
            return _argmin(ops.where(positive, d, FAR)), ops.any(positive, axis=1)
        candidates = positive
        if self.pos_strategy == "semihard":
            candidates = ops.logical_and(positive, d < ops.expand_dims(d_an, 1))
        return _argmax(ops.where(candidates, d, -FAR)), ops.any(candidates, axis=1)

    def _pick_negative(self, negative, d, d_ap):
        if self.neg_strategy == "easy":
            return _argmax(ops.where(negative, d, -FAR)), ops.any(negative, axis=1)
        candidates = negative
        if self.neg_strategy == "semihard":
            candidates = ops.logical_and(negative, d > ops.expand_dims(d_ap, 1))
        return _argmin(ops.where(candidates, d, FAR)), ops.any(candidates, axis=1)

    def _mine(self, positive, negative, d, distance, embeddings):
        size = ops.shape(d)[1]

        def at(index):
            return ops.squeeze(ops.take_along_axis(d, ops.expand_dims(index, 1), axis=1), 1)

        if self.pos_strategy == "semihard":
            n, has_n = self._pick_negative(negative, d, None)
            p, has_p = self._pick_positive(positive, d, at(n))
        else:
            p, has_p = self._pick_positive(positive, d, None)
            n, has_n = self._pick_negative(negative, d, at(p))
        usable = ops.expand_dims(ops.logical_and(has_p, has_n), 1)
        chosen = ops.logical_and(_row_index(size) == ops.expand_dims(p, 1), usable)
        return Triplets(positive=chosen, choice=ops.broadcast_to(ops.expand_dims(n, 1), ops.shape(d)))

    def get_config(self):
        return {"pos_strategy": self.pos_strategy, "neg_strategy": self.neg_strategy}


@keras.saving.register_keras_serializable(package="kerasml")
class SemiHardMiner(Miner):
    """FaceNet's semi-hard triplets: per positive pair, the nearest negative farther than the positive.

    For each positive pair ``(a, p)`` of an anchor that has a negative: the
    negative ``n`` with the smallest ``D_an`` among those with ``D_an > D_ap``
    (strictly), or the anchor's farthest negative when none is farther (Schroff et
    al. 2015; TF-Addons' ``TripletSemiHardLoss``). `TripletLoss(mining="semihard")`
    uses it. Each anchor's negatives are sorted once and counted against its
    positive distances (no ``[B, B, B]`` tensor). PML's
    ``TripletMarginMiner(type_of_triplets="semihard")`` is a different selection:
    every negative with ``0 < D_an − D_ap ≤ margin`` (`TripletMarginMiner`).
    """

    name = "semihard"

    def _mine(self, positive, negative, d, distance, embeddings):
        # Per (a, p): how many negatives of a are not farther than p (ties are not farther).
        not_farther, _ = count_below(d, negative, d, inclusive=True)
        negatives = ops.sum(ops.cast(negative, "float32"), axis=1, keepdims=True)
        nearest_first = ops.argsort(ops.where(negative, d, FAR), axis=1)
        # The next negative in distance order, or the farthest when none is farther.
        rank = ops.where(not_farther < negatives, not_farther, negatives - 1.0)
        rank = ops.cast(ops.maximum(ops.round(rank), 0.0), "int32")
        choice = ops.take_along_axis(nearest_first, rank, axis=1)
        return Triplets(positive=ops.logical_and(positive, negatives > 0), choice=ops.cast(choice, "int32"))


TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


@keras.saving.register_keras_serializable(package="kerasml")
class TripletMarginMiner(Miner):
    """Every triplet whose margin ``D_an − D_ap`` falls in the window its type names.

    - ``"all"``: ``D_an − D_ap ≤ margin`` (the triplets that violate the margin);
    - ``"hard"``: ``D_an − D_ap ≤ 0`` (the negative is nearer than the positive);
    - ``"semihard"``: ``0 < D_an − D_ap ≤ margin``;
    - ``"easy"``: ``D_an − D_ap > margin``.

    ``D`` is the loss's dissimilarity (for a similarity ``S``, ``D_an − D_ap =
    S_ap − S_an``), so ``margin`` is in the loss's distance units. The same
    selection as PML's ``TripletMarginMiner(margin, type_of_triplets=...)`` when the
    distances agree (PML's default distance normalises the embeddings).

    Args:
        margin: Defaults to ``0.2`` (PML's default).
        type_of_triplets: ``"all"``, ``"hard"``, ``"semihard"`` or ``"easy"``.
            Defaults to ``"all"``.
    """

    name = "triplet_margin"

    def __init__(self, margin=0.2, type_of_triplets="all"):
        check_choice("type_of_triplets", type_of_triplets, TRIPLET_TYPES)
        self.margin = float(margin)
        self.type_of_triplets = type_of_triplets

    @property
    def window(self):
        """``(low, high)``: the triplet is used when ``low < D_an − D_ap ≤ high``."""
        return {
            "all": (-math.inf, self.margin),
            "hard": (-math.inf, 0.0),
            "semihard": (0.0, self.margin),
            "easy": (self.margin, math.inf),
        }[self.type_of_triplets]

    def _mine(self, positive, negative, d, distance, embeddings):
        low, high = self.window
        return Triplets(positive=positive, negative=ops.cast(negative, "float32"), low=low, high=high)

    def get_config(self):
        return {"margin": self.margin, "type_of_triplets": self.type_of_triplets}


@keras.saving.register_keras_serializable(package="kerasml")
class DistanceWeightedMiner(Miner):
    """Negatives weighted by the inverse of their distance density on the unit sphere (Wu et al. 2017).

    On the unit sphere of ``R^n`` the distance ``d`` of two random points has
    density ``q(d) ∝ d^(n−2) (1 − d²/4)^((n−3)/2)``. Wu et al. sample each
    anchor's negatives with probability ``∝ 1/q(max(d, cutoff))``, restricted to
    ``d < nonzero_loss_cutoff``, so that negatives of every distance are seen,
    not only the many at ``d ≈ √2``. Here ``d`` is the Euclidean distance of the
    L2-normalised embeddings, whatever the loss's distance.

    Rather than drawing one negative per positive pair, every negative of the
    anchor is used with its sampling probability as weight: a triplet loss then
    equals the *expectation* of Wu et al.'s sampled loss (same value on average,
    same mean gradient, no sampling noise). A random draw would need a random
    state carried from step to step, which a `keras.losses.Loss` cannot carry under
    JAX ``fit`` (a seed generator held by a loss gives the same draw every step),
    so the expectation is what this miner offers on every backend. An anchor whose
    negatives all lie beyond ``nonzero_loss_cutoff`` weighs them uniformly (Wu et
    al.'s fallback). Pair losses use every negative pair with a non-zero weight.

    PML's ``DistanceWeightedMiner(cutoff, nonzero_loss_cutoff)`` samples one
    negative per positive pair from the same distribution.

    Args:
        cutoff: distances below it count as ``cutoff`` (bounds the weights).
            Defaults to ``0.5``.
        nonzero_loss_cutoff: negatives at this distance or farther get no weight.
            Defaults to ``1.4``.
    """

    name = "distance_weighted"
    # Its weights come from the batch's own geometry ([B, B]), not from the loss's reference set.
    supports_reference = False

    def __init__(self, cutoff=0.5, nonzero_loss_cutoff=1.4):
        self.cutoff = float(cutoff)
        self.nonzero_loss_cutoff = float(nonzero_loss_cutoff)

    def negative_weights(self, negative, embeddings):
        """Per anchor, the probability ``[B, B]`` of each negative (rows without negatives are 0)."""
        dim = embeddings.shape[-1]
        if dim is None:
            raise ValueError(
                "DistanceWeightedMiner needs the embedding width D to be known when the loss is traced "
                f"(it sets the density on the sphere). Received embeddings of shape {embeddings.shape}. "
                "Give the model's output a static last dimension."
            )
        unit = l2_normalize(embeddings)
        squared = ops.relu(2.0 - 2.0 * ops.matmul(unit, ops.transpose(unit)))
        d = ops.maximum(ops.sqrt(ops.maximum(squared, 1e-16)), self.cutoff)
        dim = float(dim)
        log_weight = (2.0 - dim) * ops.log(d) - 0.5 * (dim - 3.0) * ops.log(ops.maximum(1.0 - 0.25 * d * d, 1e-8))
        eligible = ops.logical_and(negative, d < self.nonzero_loss_cutoff)
        any_eligible = ops.any(eligible, axis=1, keepdims=True)
        # Rows with no eligible negative weigh all their negatives alike.
        kept = ops.where(any_eligible, eligible, negative)
        log_weight = ops.where(any_eligible, log_weight, 0.0)
        top = ops.max(ops.where(kept, log_weight, -FAR), axis=1, keepdims=True)
        weights = ops.where(kept, ops.exp(ops.minimum(log_weight - top, 0.0)), 0.0)
        return weights / ops.maximum(ops.sum(weights, axis=1, keepdims=True), 1e-30)

    def _mine(self, positive, negative, d, distance, embeddings):
        weights = self.negative_weights(negative, embeddings)
        return Triplets(positive=ops.logical_and(positive, ops.any(negative, axis=1, keepdims=True)), negative=weights)

    def get_config(self):
        return {"cutoff": self.cutoff, "nonzero_loss_cutoff": self.nonzero_loss_cutoff}


@keras.saving.register_keras_serializable(package="kerasml")
class MultiSimilarityMiner(Miner):
    """Multi-similarity pair mining (Wang et al. 2019, eq. 7–8): pairs harder than the other kind's hardest ± ε.

    With similarities ``S``: a negative pair ``(a, n)`` is kept when
    ``S_an > min_p S_ap − ε`` and a positive pair ``(a, p)`` when
    ``S_ap < max_n S_an + ε`` (over the anchor's positives and negatives). With a
    distance ``D`` the same rule reads ``D_an < max_p D_ap + ε`` and ``D_ap >
    min_n D_an − ε``. An anchor without positives keeps no negative and one
    without negatives keeps no positive. Equal to PML's
    ``MultiSimilarityMiner(epsilon)`` under the same distance.

    Args:
        epsilon: ``ε``. Defaults to ``0.1`` (the paper's and PML's).
    """

    name = "multi_similarity"

    def __init__(self, epsilon=0.1):
        self.epsilon = float(epsilon)

    def _mine(self, positive, negative, d, distance, embeddings):
        farthest_positive = ops.max(ops.where(positive, d, -FAR), axis=1, keepdims=True)
        nearest_negative = ops.min(ops.where(negative, d, FAR), axis=1, keepdims=True)
        return Pairs(
            positive=ops.logical_and(positive, d + self.epsilon > nearest_negative),
            negative=ops.logical_and(negative, d - self.epsilon < farthest_positive),
        )

    def get_config(self):
        return {"epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="kerasml")
class PairMarginMiner(Miner):
    """Pairs that break a margin: positives farther than ``pos_margin``, negatives nearer than ``neg_margin``.

    With a distance: positives with ``D_ap > pos_margin``, negatives with
    ``D_an < neg_margin``; with a similarity: positives with ``S_ap < pos_margin``,
    negatives with ``S_an > neg_margin`` (margins in the loss's own units, as PML's
    ``PairMarginMiner(pos_margin, neg_margin)``).

    Args:
        pos_margin: Defaults to ``0.2`` (PML's default).
        neg_margin: Defaults to ``0.8`` (PML's default).
    """

    name = "pair_margin"

    def __init__(self, pos_margin=0.2, neg_margin=0.8):
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)

    def _mine(self, positive, negative, d, distance, embeddings):
        if distance is not None and distance.is_similarity:
            similarity = -d
            hard_positive, hard_negative = similarity < self.pos_margin, similarity > self.neg_margin
        else:
            hard_positive, hard_negative = d > self.pos_margin, d < self.neg_margin
        return Pairs(
            positive=ops.logical_and(positive, hard_positive),
            negative=ops.logical_and(negative, hard_negative),
        )

    def get_config(self):
        return {"pos_margin": self.pos_margin, "neg_margin": self.neg_margin}


#: name → class of every miner.
MINERS = {
    cls.name: cls
    for cls in (
        BatchHardMiner,
        BatchEasyHardMiner,
        SemiHardMiner,
        TripletMarginMiner,
        DistanceWeightedMiner,
        MultiSimilarityMiner,
        PairMarginMiner,
    )
}
#: spellings that mean "no miner": every pair / triplet of the batch.
NO_MINER = (None, "all")


def get(identifier, argument="miner"):
    """A `Miner` from a name (see `MINERS`), ``{"type": name, **arguments}`` or an instance.

    ``None`` and ``"all"`` mean no miner (every pair or triplet of the batch) and give ``None``.

    Raises:
        ValueError: for anything else, naming the accepted values.
    """
    if identifier is None or (isinstance(identifier, str) and identifier in NO_MINER):
        return None
    return _from_table("miners.Miner", MINERS, identifier, argument, Miner)


def mine_pairs(miner, labels, dissimilarity, distance, embeddings, reference=None):
    """``(positive, negative)`` bool ``[B, B]`` masks: all label pairs without a miner, else the mined ones.

    Against a ``reference`` (`kerasml.losses.reference.Reference`) the masks are ``[B, N]``.
    """
    if miner is None:
        return label_masks(labels) if reference is None else reference.masks(labels)
    mined = miner.mine(labels, dissimilarity, distance, embeddings, reference).pairs(dissimilarity)
    return ops.cast(mined.positive, "bool"), ops.cast(mined.negative, "bool")


def mine_triplets(miner, labels, dissimilarity, distance, embeddings, reference=None):
    """`Triplets`: every valid triplet without a miner, else the mined ones (``[B, N]`` against a ``reference``)."""
    if miner is None:
        positive, negative = label_masks(labels) if reference is None else reference.masks(labels)
        return Pairs(positive, negative).triplets()
    return miner.mine(labels, dissimilarity, distance, embeddings, reference).triplets()
