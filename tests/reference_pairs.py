"""Independent float64 NumPy references of kerasml's pair-based losses, miners and distances.

Written from the papers, not from the implementation: plain Python loops over
pairs and triplets, each distance computed from the two vectors (never through
the ``|x|^2 + |y|^2 - 2 x.y`` expansion), miners as explicit sets of pairs or
lists of triplets. Slow by design: keep batches small.

Every miner returns ``(selection, gap)``: ``gap`` is the smallest distance of any
comparison the miner made to its decision boundary (a tie or a threshold), so a
test can draw inputs whose float32 selection cannot differ from this float64 one.
"""

import itertools
import math

import numpy as np
from reference import dot, euclidean, squared_euclidean


def _as64(x):
    return np.asarray(x, dtype=np.float64)


def _labels(y):
    return [int(v) for v in np.asarray(y).reshape(-1)]


# --------------------------------------------------------------------- distances


def cosine(u, v):
    """``u.v / (|u| |v|)``; a zero vector has similarity 0 with everything."""
    nu, nv = math.sqrt(dot(u, u)), math.sqrt(dot(v, v))
    if nu == 0.0 or nv == 0.0:
        return 0.0
    return dot(u, v) / (nu * nv)


def _unit(u):
    n = math.sqrt(dot(u, u))
    return _as64(u) / n if n > 0 else _as64(u)


#: name -> (function of two vectors, is_similarity)
DISTANCES = {
    "euclidean": (euclidean, False),
    "squared": (squared_euclidean, False),
    "cosine": (cosine, True),
    "dot": (dot, True),
}


def matrix(x, distance):
    """``{(i, j): value}`` of the named distance for every ``i != j`` and the diagonal."""
    fn, _ = DISTANCES[distance]
    x = _as64(x)
    return {(i, j): fn(x[i], x[j]) for i in range(len(x)) for j in range(len(x))}


def dissimilarity(x, distance):
    """``{(i, j): D_ij}``: the distance, or minus the similarity (small means close)."""
    _, is_similarity = DISTANCES[distance]
    return {key: (-value if is_similarity else value) for key, value in matrix(x, distance).items()}


def label_pairs(labels):
    """``(positive, negative)`` sets of ordered pairs: same label (``i != j``), different labels."""
    y = _labels(labels)
    b = len(y)
    positive = {(i, j) for i in range(b) for j in range(b) if i != j and y[i] == y[j]}
    negative = {(i, j) for i in range(b) for j in range(b) if y[i] != y[j]}
    return positive, negative


def all_triplets(labels):
    """Every ``(a, p, n)`` with ``y_a == y_p``, ``a != p``, ``y_n != y_a``."""
    positive, negative = label_pairs(labels)
    return [(a, p, n) for (a, p) in sorted(positive) for (a2, n) in sorted(negative) if a2 == a]


def pairs_of_triplets(triplets):
    """The positive pairs ``(a, p)`` and negative pairs ``(a, n)`` used by a triplet list (or dict)."""
    return {(a, p) for (a, p, _) in triplets}, {(a, n) for (a, _, n) in triplets}


def triplets_of_pairs(positive, negative):
    """Every ``(a, p, n)`` made of a positive pair and a negative pair of one anchor."""
    return [(a, p, n) for (a, p) in sorted(positive) for (a2, n) in sorted(negative) if a2 == a]


# ------------------------------------------------------------------------ miners


def batch_hard(labels, d):
    """Per anchor with a positive and a negative: ``(a, farthest positive, nearest negative)``."""
    y = _labels(labels)
    b = len(y)
    triplets, gaps = [], [np.inf]
    for a in range(b):
        pos = sorted((d[(a, p)], p) for p in range(b) if p != a and y[p] == y[a])
        neg = sorted((d[(a, n)], n) for n in range(b) if y[n] != y[a])
        if not pos or not neg:
            continue
        triplets.append((a, pos[-1][1], neg[0][1]))
        if len(pos) > 1:
            gaps.append(pos[-1][0] - pos[-2][0])
        if len(neg) > 1:
            gaps.append(neg[1][0] - neg[0][0])
    return triplets, min(gaps)


def batch_easy_hard(labels, d, pos_strategy="easy", neg_strategy="semihard"):
    """One triplet per anchor (Xuan et al. 2020), each side chosen by its strategy.

    Positives: easy = nearest, hard = farthest, semihard = farthest with ``D_ap < D_an*``.
    Negatives: hard = nearest, easy = farthest, semihard = nearest with ``D_an > D_ap*``;
    ``*`` is the other side's choice (made first). Anchors without a candidate are skipped.
    """
    y = _labels(labels)
    b = len(y)
    triplets, gaps = [], [np.inf]

    def pick(cands, strategy, kind, other):
        if strategy == "semihard":
            gaps.extend(abs(v - other) for v, _ in cands)
            cands = [(v, i) for v, i in cands if (v < other if kind == "pos" else v > other)]
        if not cands:
            return None
        nearest_first = sorted(cands)
        for (u, _), (v, _) in itertools.pairwise(nearest_first):
            gaps.append(v - u)
        want_far = (kind == "pos") == (strategy != "easy")
        return nearest_first[-1] if want_far else nearest_first[0]

    for a in range(b):
        pos = [(d[(a, p)], p) for p in range(b) if p != a and y[p] == y[a]]
        neg = [(d[(a, n)], n) for n in range(b) if y[n] != y[a]]
        if not pos or not neg:
            continue
        if pos_strategy == "semihard":
            n = pick(neg, neg_strategy, "neg", None)
            p = pick(pos, pos_strategy, "pos", n[0])
        else:
            p = pick(pos, pos_strategy, "pos", None)
            n = pick(neg, neg_strategy, "neg", p[0])
        if p is not None and n is not None:
            triplets.append((a, p[1], n[1]))
    return triplets, min(gaps)


def semihard(labels, d):
    """FaceNet: per positive pair, the nearest negative with ``D_an > D_ap``, else the farthest negative."""
    y = _labels(labels)
    b = len(y)
    triplets, gaps = [], [np.inf]
    for a in range(b):
        neg = sorted((d[(a, n)], n) for n in range(b) if y[n] != y[a])
        if not neg:
            continue
        gaps += [v - u for (u, _), (v, _) in itertools.pairwise(neg)]
        for p in range(b):
            if p == a or y[p] != y[a]:
                continue
            farther = [(v, n) for v, n in neg if v > d[(a, p)]]
            gaps += [abs(v - d[(a, p)]) for v, _ in neg]
            triplets.append((a, p, (farther[0] if farther else neg[-1])[1]))
    return triplets, min(gaps)


def triplet_margin(labels, d, margin=0.2, type_of_triplets="all"):
    """Every valid triplet with ``D_an - D_ap`` in: all (-inf, m], hard (-inf, 0], semihard (0, m], easy (m, inf)."""
    low, high = {
        "all": (-np.inf, margin),
        "hard": (-np.inf, 0.0),
        "semihard": (0.0, margin),
        "easy": (margin, np.inf),
    }[type_of_triplets]
    triplets, gaps = [], [np.inf]
    for a, p, n in all_triplets(labels):
        value = d[(a, n)] - d[(a, p)]
        gaps += [abs(value - bound) for bound in (low, high) if np.isfinite(bound)]
        if low < value <= high:
            triplets.append((a, p, n))
    return triplets, min(gaps)


def distance_weighted(labels, x, cutoff=0.5, nonzero_loss_cutoff=1.4):
    """Wu et al. 2017: ``{(a, p, n): probability of n for anchor a}`` (the expectation of their sampling).

    On unit vectors in ``R^k``: ``d = max(|x_a - x_n|, cutoff)``, weight
    ``d^(2-k) (1 - d^2/4)^((3-k)/2)`` for negatives with ``|x_a - x_n| < nonzero_loss_cutoff``,
    normalised per anchor; an anchor with no such negative weighs all its negatives alike.
    """
    y = _labels(labels)
    x = _as64(x)
    b, k = x.shape
    units = [_unit(row) for row in x]
    result, gaps = {}, [np.inf]
    for a in range(b):
        negatives = [n for n in range(b) if y[n] != y[a]]
        positives = [p for p in range(b) if p != a and y[p] == y[a]]
        if not negatives or not positives:
            continue
        logs = {}
        for n in negatives:
            raw = euclidean(units[a], units[n])
            gaps.append(abs(raw - nonzero_loss_cutoff))
            if raw < nonzero_loss_cutoff:
                dist = max(raw, cutoff)
                logs[n] = (2.0 - k) * math.log(dist) - 0.5 * (k - 3.0) * math.log(max(1.0 - 0.25 * dist * dist, 1e-8))
        if not logs:
            logs = dict.fromkeys(negatives, 0.0)
        top = max(logs.values())
        total = sum(math.exp(v - top) for v in logs.values())
        for p in positives:
            for n, v in logs.items():
                result[(a, p, n)] = math.exp(v - top) / total
    return result, min(gaps)


def multi_similarity_pairs(labels, d, epsilon=0.1):
    """Wang et al. 2019 eq. 7-8 on dissimilarities: negatives with ``D_an < max_p D_ap + eps``,
    positives with ``D_ap > min_n D_an - eps``."""
    positive, negative = label_pairs(labels)
    b = len(_labels(labels))
    kept_pos, kept_neg, gaps = set(), set(), [np.inf]
    for a in range(b):
        pos = [d[(a, p)] for (a2, p) in positive if a2 == a]
        neg = [d[(a, n)] for (a2, n) in negative if a2 == a]
        for a2, n in negative:
            if a2 == a and pos:
                gaps.append(abs(d[(a, n)] - epsilon - max(pos)))
                if d[(a, n)] - epsilon < max(pos):
                    kept_neg.add((a, n))
        for a2, p in positive:
            if a2 == a and neg:
                gaps.append(abs(d[(a, p)] + epsilon - min(neg)))
                if d[(a, p)] + epsilon > min(neg):
                    kept_pos.add((a, p))
    return (kept_pos, kept_neg), min(gaps)


def pair_margin(labels, values, is_similarity, pos_margin=0.2, neg_margin=0.8):
    """Positives beyond ``pos_margin`` and negatives within ``neg_margin`` (in the distance's own units)."""
    positive, negative = label_pairs(labels)
    gaps = [abs(values[k] - pos_margin) for k in positive] + [abs(values[k] - neg_margin) for k in negative]
    if is_similarity:
        kept = ({k for k in positive if values[k] < pos_margin}, {k for k in negative if values[k] > neg_margin})
    else:
        kept = ({k for k in positive if values[k] > pos_margin}, {k for k in negative if values[k] < neg_margin})
    return kept, min(gaps, default=np.inf)


# ------------------------------------------------------------------------ losses


def triplet_hinge(triplets, d, margin):
    """``sum w max(D_ap - D_an + m, 0) / sum w`` over a triplet list (w = 1) or dict of weights; 0 if empty."""
    weights = triplets if isinstance(triplets, dict) else dict.fromkeys(triplets, 1.0)
    total = sum(w * max(d[(a, p)] - d[(a, n)] + margin, 0.0) for (a, p, n), w in weights.items())
    count = sum(weights.values())
    return total / count if count else 0.0


def contrastive(pairs, x, margin=1.0):
    """Hadsell et al. over given pair sets: ``1/2 mean_P d^2 + 1/2 mean_N max(m - d, 0)^2`` (Euclidean)."""
    positive, negative = pairs
    x = _as64(x)
    pos = [euclidean(x[i], x[j]) ** 2 for i, j in positive]
    neg = [max(margin - euclidean(x[i], x[j]), 0.0) ** 2 for i, j in negative]
    return 0.5 * (sum(pos) / len(pos) if pos else 0.0) + 0.5 * (sum(neg) / len(neg) if neg else 0.0)


def _log1p_sum_exp(values):
    top = max([0.0, *values])
    return top + math.log(math.exp(-top) + sum(math.exp(v - top) for v in values))


def _log_sum_exp(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _pairs(labels, pairs):
    return label_pairs(labels) if pairs is None else pairs


def multi_similarity(labels, x, alpha=2.0, beta=50.0, base=0.5, pairs=None, distance="cosine"):
    """Wang et al. 2019 eq. 11, mean over all B anchors::

        1/alpha log(1 + sum_{P_i} exp(-alpha (S_ik - base))) + 1/beta log(1 + sum_{N_i} exp(beta (S_ik - base)))

    ``S_ik - base`` reads ``base - D_ik`` for a distance. ``pairs``: the mined ``(positive, negative)``
    sets (default: all label pairs).
    """
    positive, negative = _pairs(labels, pairs)
    values = matrix(x, distance)
    is_similarity = DISTANCES[distance][1]
    b = len(_labels(labels))
    total = 0.0
    for i in range(b):
        shifted = {k: (values[(i, k)] - base if is_similarity else base - values[(i, k)]) for k in range(b)}
        pos = [-alpha * shifted[k] for (a, k) in positive if a == i]
        neg = [beta * shifted[k] for (a, k) in negative if a == i]
        total += _log1p_sum_exp(pos) / alpha + _log1p_sum_exp(neg) / beta
    return total / b


def circle(labels, x, m=0.25, gamma=256.0, pairs=None, weights_at=None):
    """Sun et al. 2020 (pair labels), mean over anchors with a positive and a negative::

        log(1 + sum_N exp(gamma a_n (s_n - m)) sum_P exp(-gamma a_p (s_p - 1 + m)))

    with ``a_p = max(1 + m - s_p, 0)``, ``a_n = max(s_n + m, 0)`` computed at ``weights_at``
    (default ``x``): the implementation holds them constant in the gradient.
    """
    positive, negative = _pairs(labels, pairs)
    s = matrix(x, "cosine")
    s0 = s if weights_at is None else matrix(weights_at, "cosine")
    b = len(_labels(labels))
    losses = []
    for i in range(b):
        pos = [(s[(i, k)], s0[(i, k)]) for (a, k) in positive if a == i]
        neg = [(s[(i, k)], s0[(i, k)]) for (a, k) in negative if a == i]
        if not pos or not neg:
            continue
        lp = [-gamma * max(1.0 + m - w, 0.0) * (v - (1.0 - m)) for v, w in pos]
        ln = [gamma * max(w + m, 0.0) * (v - m) for v, w in neg]
        z = _log_sum_exp(lp) + _log_sum_exp(ln)
        losses.append(max(z, 0.0) + math.log1p(math.exp(-abs(z))))  # softplus
    return sum(losses) / len(losses) if losses else 0.0


def supcon(labels, x, temperature=0.1, pairs=None):
    """Khosla et al. 2020 L_out: ``mean_i -1/|P(i)| sum_P log(exp(s_ip/t) / sum_{A(i)} exp(s_ia/t))``.

    ``A(i)``: the positive and negative pairs of ``i`` (every other sample without a miner);
    the mean over anchors with a positive.
    """
    positive, negative = _pairs(labels, pairs)
    s = matrix(x, "cosine")
    b = len(_labels(labels))
    losses = []
    for i in range(b):
        pos = [k for (a, k) in positive if a == i]
        if not pos:
            continue
        others = pos + [k for (a, k) in negative if a == i]
        log_den = _log_sum_exp([s[(i, k)] / temperature for k in others])
        losses.append(-sum(s[(i, p)] / temperature - log_den for p in pos) / len(pos))
    return sum(losses) / len(losses) if losses else 0.0


def ntxent(labels, x, temperature=0.07, pairs=None):
    """SimCLR / InfoNCE per positive pair: ``-log(e^{s_ap/t} / (e^{s_ap/t} + sum_{N(a)} e^{s_an/t}))``, mean."""
    positive, negative = _pairs(labels, pairs)
    s = matrix(x, "cosine")
    losses = []
    for a, p in sorted(positive):
        logits = [s[(a, p)] / temperature] + [s[(a, n)] / temperature for (a2, n) in negative if a2 == a]
        losses.append(_log_sum_exp(logits) - logits[0])
    return sum(losses) / len(losses) if losses else 0.0


def tuplet_margin(labels, x, margin_degrees=5.73, scale=64.0, pairs=None):
    """Yu and Tao 2019 per positive pair: ``log(1 + sum_{N(a)} exp(s (cos t_an - cos(t_ap - beta))))``, mean.

    Angles from ``arccos`` of the cosine similarity (clipped to [-1, 1]).
    """
    positive, negative = _pairs(labels, pairs)
    s = matrix(x, "cosine")
    beta = math.radians(margin_degrees)
    losses = []
    for a, p in sorted(positive):
        shifted = math.cos(math.acos(min(max(s[(a, p)], -1.0), 1.0)) - beta)
        losses.append(_log1p_sum_exp([scale * (s[(a, n)] - shifted) for (a2, n) in negative if a2 == a]))
    return sum(losses) / len(losses) if losses else 0.0


def fast_ap(labels, x, bins=10):
    """Cakir et al. 2019, eq. 14: ``1 - mean_q 1/N+ sum_l h+_l H+_l / H_l`` on ``|x^_q - x^_k|^2`` in [0, 4].

    Triangular kernels of width ``4/bins`` at ``l * 4/bins``, ``l = 0..bins``; queries with a positive.
    """
    y = _labels(labels)
    units = [_unit(row) for row in _as64(x)]
    b = len(y)
    width = 4.0 / bins
    centres = [level * width for level in range(bins + 1)]
    aps = []
    for q in range(b):
        positives = [k for k in range(b) if k != q and y[k] == y[q]]
        if not positives:
            continue
        h_pos = [0.0] * len(centres)
        h_all = [0.0] * len(centres)
        for k in range(b):
            if k == q:
                continue
            dist = squared_euclidean(units[q], units[k])
            for level, z in enumerate(centres):
                pulse = max(1.0 - abs(dist - z) / width, 0.0)
                h_all[level] += pulse
                if y[k] == y[q]:
                    h_pos[level] += pulse
        ap, cum_pos, cum_all = 0.0, 0.0, 0.0
        for level in range(len(centres)):
            cum_pos += h_pos[level]
            cum_all += h_all[level]
            if cum_all > 0:
                ap += h_pos[level] * cum_pos / cum_all
        aps.append(ap / len(positives))
    return 1.0 - sum(aps) / len(aps) if aps else 0.0


def fast_ap_gap(x, bins=10):
    """Smallest distance of a pair's ``|x^_q - x^_k|^2`` to a kernel centre (where the kernels have kinks)."""
    units = [_unit(row) for row in _as64(x)]
    width = 4.0 / bins
    gaps = [np.inf]
    for q in range(len(units)):
        for k in range(q + 1, len(units)):
            dist = squared_euclidean(units[q], units[k])
            gaps += [abs(dist - level * width) for level in range(bins + 1)]
    return min(gaps)
