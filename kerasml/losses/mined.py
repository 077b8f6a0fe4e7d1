"""Mined pairs and triplets as ``[B, B]`` arrays, and the triplet hinge over them in O(B²) memory.

What a `kerasml.losses.miners.Miner` returns: `Pairs` (masks of the positive and
negative pairs) or `Triplets` (one chosen negative per positive pair, or every
negative in a window of ``D_an − D_ap``, weighted). `mean_triplet_hinge` averages
``max(D_ap − D_an + m, 0)`` over `Triplets` without a ``[B, B, B]`` tensor:
`count_below` sorts each anchor's row once and reads running counts and sums at
per-pair thresholds (O(B² log B) time).
"""

import dataclasses
import math
from typing import Any

from keras import ops

from kerasml.losses.pairwise import masked_mean

# Finite stand-in for "no candidate" in masked min/max (dissimilarities are far smaller).
FAR = 1e30


# ------------------------------------------------------------------ sorted counts


def count_below(values, weights, thresholds, inclusive=True, reduce=None):
    """Weighted counts and sums of each row's values below per-row thresholds, by one sort per row.

    For row ``a`` and threshold ``t = thresholds[a, j]``::

        count[a, j] = Σ_k weights[a, k] · [values[a, k] < t]          (≤ t when inclusive)
        total[a, j] = Σ_k weights[a, k] · values[a, k] · [values[a, k] < t]

    The row's values and thresholds are sorted together (a stable sort: on ties the
    block placed first comes first, which decides ``≤`` against ``<``), and running
    sums of the weights and weighted values are read at the thresholds' positions.
    O(B·(K+T) log(K+T)) time and O(B·(K+T)) memory.

    Args:
        values: float ``[B, K]`` (carries gradient into ``total``).
        weights: float or bool ``[B, K]`` (no gradient).
        thresholds: float ``[B, T]`` (no gradient).
        inclusive: count values equal to a threshold.
        reduce: ``None``, or a list of ``(count_coefficients, total_coefficients)``
            pairs of ``[B, T]`` arrays; then the result is, for each pair, the scalar
            ``Σ_{a,j} count_coefficients·count + total_coefficients·total``, computed
            without putting the counts back in place (one sort instead of two).

    Returns:
        ``(count, total)``, each ``[B, T]``; or the list of scalars when ``reduce`` is given.
    """
    weights = ops.stop_gradient(ops.cast(weights, "float32"))
    thresholds = ops.stop_gradient(thresholds)
    weighted = weights * ops.where(weights > 0, values, 0.0)
    zeros = ops.zeros_like(thresholds)
    blocks = [(values, weights, weighted), (thresholds, zeros, zeros)]
    if not inclusive:
        blocks.reverse()
    keys, counted, summed = (ops.concatenate([block[i] for block in blocks], axis=1) for i in range(3))
    order = ops.argsort(ops.stop_gradient(keys), axis=1)
    running_count = ops.cumsum(ops.take_along_axis(counted, order, axis=1), axis=1)
    running_total = ops.cumsum(ops.take_along_axis(summed, order, axis=1), axis=1)
    size = ops.shape(values)[1]
    if reduce is not None:
        results = []
        for count_coefficients, total_coefficients in reduce:
            padding = ops.zeros_like(values)
            parts = [padding, count_coefficients] if inclusive else [count_coefficients, padding]
            count_part = ops.take_along_axis(ops.concatenate(parts, axis=1), order, axis=1)
            parts = [padding, total_coefficients] if inclusive else [total_coefficients, padding]
            total_part = ops.take_along_axis(ops.concatenate(parts, axis=1), order, axis=1)
            results.append(ops.sum(count_part * running_count) + ops.sum(total_part * running_total))
        return results
    inverse = ops.argsort(order, axis=1)
    count = ops.take_along_axis(running_count, inverse, axis=1)
    total = ops.take_along_axis(running_total, inverse, axis=1)
    if inclusive:
        return count[:, size:], total[:, size:]
    width = ops.shape(thresholds)[1]
    return count[:, :width], total[:, :width]


# ------------------------------------------------------------------ mined sets


@dataclasses.dataclass(frozen=True)
class Pairs:
    """Mined pairs: boolean ``[B, B]`` masks of the positive and the negative pairs to use.

    Attributes:
        positive: ``[B, B]``, ``True`` for a pair ``(a, p)`` of one class that is used.
        negative: ``[B, B]``, ``True`` for a pair ``(a, n)`` of two classes that is used.
    """

    positive: Any
    negative: Any

    def pairs(self, dissimilarity):
        """These pairs (the argument is unused: a `Triplets` needs it)."""
        del dissimilarity
        return self

    def triplets(self):
        """Every ``(a, p, n)`` with ``(a, p)`` a mined positive and ``(a, n)`` a mined negative pair."""
        return Triplets(positive=self.positive, negative=ops.cast(self.negative, "float32"))


@dataclasses.dataclass(frozen=True)
class Triplets:
    """Mined triplets ``(a, p, n)`` in ``[B, B]`` arrays.

    Two forms:

    - ``choice`` given: for each positive pair ``(a, p)`` with ``positive[a, p]``,
      the one triplet ``(a, p, choice[a, p])``.
    - ``choice`` is ``None``: for each positive pair ``(a, p)``, every ``n`` with
      ``negative[a, n] > 0`` and ``low < D_an − D_ap ≤ high``, weighted by
      ``negative[a, n]``.

    Attributes:
        positive: bool ``[B, B]``, the positive pairs ``(a, p)`` that anchor triplets.
        negative: float ``[B, B]``, weights of the negative pairs (window form).
        choice: int32 ``[B, B]``, the chosen negative of each positive pair, or ``None``.
        low: lower end of the window on ``D_an − D_ap`` (excluded). Defaults to ``-inf``.
        high: upper end of the window on ``D_an − D_ap`` (included). Defaults to ``inf``.
    """

    positive: Any
    negative: Any = None
    choice: Any = None
    low: float = -math.inf
    high: float = math.inf

    def triplets(self):
        """These triplets."""
        return self

    def pairs(self, dissimilarity):
        """The positive and negative pairs that appear in at least one of these triplets.

        Args:
            dissimilarity: the ``[B, B]`` matrix the window refers to.
        """
        positive = ops.cast(self.positive, "bool")
        size, width = ops.shape(positive)[0], ops.shape(positive)[1]
        if self.choice is not None:
            # negative[a, n]: n is the choice of some mined (a, p); scatter-add into a flat [B*N].
            rows = ops.expand_dims(ops.arange(size, dtype="int32"), 1)
            segments = ops.reshape(rows * width + self.choice, (-1,))
            hits = ops.segment_sum(ops.reshape(ops.cast(positive, "float32"), (-1,)), segments, size * width)
            return Pairs(positive=positive, negative=ops.reshape(hits, (size, width)) > 0)
        negative = self.negative > 0
        d = ops.stop_gradient(dissimilarity)
        if self.low == -math.inf and self.high == math.inf:
            has_negative = ops.any(negative, axis=1, keepdims=True)
            has_positive = ops.any(positive, axis=1, keepdims=True)
            return Pairs(
                positive=ops.logical_and(positive, has_negative), negative=ops.logical_and(negative, has_positive)
            )
        low = max(self.low, -FAR)
        high = min(self.high, FAR)
        # (a, p) is used when some negative lies in (D_ap + low, D_ap + high].
        counts, _ = count_below(d, negative, ops.concatenate([d + high, d + low], axis=1))
        in_window = counts[:, :width] - counts[:, width:]
        # (a, n) is used when some positive has D_ap in [D_an − high, D_an − low).
        counts, _ = count_below(d, positive, ops.concatenate([d - low, d - high], axis=1), inclusive=False)
        has_partner = counts[:, :width] - counts[:, width:]
        return Pairs(
            positive=ops.logical_and(positive, in_window > 0.5),
            negative=ops.logical_and(negative, has_partner > 0.5),
        )


def mean_triplet_hinge(dissimilarity, triplets, margin):
    """``mean max(D_ap − D_an + m, 0)`` over mined `Triplets` (weighted in the window form); 0 if none.

    The window form never builds the ``[B, B, B]`` hinge tensor: for a positive pair
    with threshold ``t = D_ap + m``, the negatives in the window below ``t`` add
    ``c·t − s`` (``c`` their weight, ``s`` their weighted distance sum), both read
    off one sort of the anchor's row (`count_below`).

    Args:
        dissimilarity: float ``[B, B]`` (distance, or minus a similarity).
        triplets: `Triplets` (or `Pairs`, converted with `Pairs.triplets`).
        margin: ``m``.
    """
    triplets = triplets.triplets()
    d = dissimilarity
    positive = ops.cast(triplets.positive, "float32")
    if triplets.choice is not None:
        d_an = ops.take_along_axis(d, triplets.choice, axis=1)
        return masked_mean(ops.relu(d - d_an + margin), triplets.positive)
    weights = triplets.negative
    low, high = triplets.low, triplets.high
    top = min(high, margin)  # every hinge is 0 beyond D_an = D_ap + m
    zero = ops.zeros_like(d)
    threshold = d + margin
    # Threshold blocks and, per block, the coefficients of (its count, its sum) in the hinge
    # total Σ (c·t − s) and of its count in the number of selected triplets.
    entries = []
    if low < top:  # negatives in (D_ap + low, D_ap + top] add c·t − s
        entries.append((d + top, positive * threshold, -positive, zero))
        if low > -math.inf:
            entries.append((d + low, -positive * threshold, positive, -positive))
    elif low > -math.inf:
        entries.append((d + low, zero, zero, -positive))
    if high < math.inf:
        entries.append((d + high, zero, zero, positive))
    blocks, count_coefficients, total_coefficients, selected = (
        ops.concatenate([entry[i] for entry in entries], axis=1) for i in range(4)
    )
    numerator, denominator = count_below(
        d,
        weights,
        blocks,
        reduce=[(count_coefficients, total_coefficients), (selected, ops.zeros_like(selected))],
    )
    if high == math.inf:  # every negative of the row is below +inf
        denominator = denominator + ops.sum(positive * ops.sum(weights, axis=1, keepdims=True))
    return numerator / ops.maximum(denominator, 1.0)
