"""Independent float64 NumPy references of kerasml's losses.

Written from the formulas, not from the implementation: every function
enumerates its pairs / triplets with plain Python loops and computes each
distance directly as ``sqrt(sum((x_i - x_j)^2))`` (never through the
``|x|^2 + |y|^2 - 2 x.y`` expansion the library uses), so that a wrong mask,
a wrong reduction or a wrong vectorisation in the library shows up as a
mismatch. They are slow by design: keep batches small.

All functions take NumPy inputs, compute in float64 and return a Python float.
"""

import math

import numpy as np


def _as64(x):
    return np.asarray(x, dtype=np.float64)


def _labels(y):
    return [int(v) for v in np.asarray(y).reshape(-1)]


def squared_euclidean(u, v):
    """``||u - v||^2`` of two vectors, computed from their difference, in float64."""
    diff = _as64(u) - _as64(v)
    return float(np.sum(diff * diff))


def euclidean(u, v):
    """``||u - v||`` of two vectors, computed from their difference, in float64."""
    return math.sqrt(squared_euclidean(u, v))


def dot(u, v):
    """``u . v`` of two vectors in float64."""
    return float(np.sum(_as64(u) * _as64(v)))


def _distance_table(x, squared):
    """Dict ``{(i, j): D_ij}`` for ``i != j`` (each computed by `euclidean`)."""
    b = len(x)
    table = {}
    for i in range(b):
        for j in range(b):
            if i != j:
                table[(i, j)] = squared_euclidean(x[i], x[j]) if squared else euclidean(x[i], x[j])
    return table


def _log1p_sum_exp(values):
    """``log(1 + sum(exp(v)))``, stable for large ``v`` (manual max shift)."""
    top = max([0.0, *values])
    total = math.exp(-top)
    for v in values:
        total += math.exp(v - top)
    return top + math.log(total)


def _log_sum_exp(values):
    """``log(sum(exp(v)))`` of a non-empty list, stable (manual max shift)."""
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def contrastive(labels, x, margin=1.0):
    """Contrastive loss.

    ``L = 0.5 * mean_{(i,j) in P} d_ij^2 + 0.5 * mean_{(i,j) in N} max(m - d_ij, 0)^2``
    with ``P`` the ordered pairs ``i != j`` of one class, ``N`` the ordered
    pairs of two classes, ``d`` Euclidean; the mean of an empty set is 0.
    """
    y, x = _labels(labels), _as64(x)
    b = len(y)
    pos_sum, pos_count, neg_sum, neg_count = 0.0, 0, 0.0, 0
    for i in range(b):
        for j in range(b):
            if i == j:
                continue
            d = euclidean(x[i], x[j])
            if y[i] == y[j]:
                pos_sum += d * d
                pos_count += 1
            else:
                neg_sum += max(margin - d, 0.0) ** 2
                neg_count += 1
    pos = pos_sum / pos_count if pos_count else 0.0
    neg = neg_sum / neg_count if neg_count else 0.0
    return 0.5 * pos + 0.5 * neg


def triplet(labels, x, margin=1.0, mining="all", distance="squared"):
    """Triplet margin loss ``mean max(D_ap - D_an + m, 0)`` over mined triplets.

    ``D`` is the squared (``"squared"``) or plain (``"euclidean"``) Euclidean
    distance. ``mining``:

    - ``"all"``: every ``(a, p, n)`` with ``y_a == y_p``, ``a != p``,
      ``y_n != y_a``; zero terms included; 0 if there is none.
    - ``"hard"``: per anchor with at least one positive and one negative,
      ``max_p D_ap`` against ``min_n D_an``; mean over those anchors.
    - ``"semihard"``: per ordered positive pair ``(a, p)`` whose anchor has a
      negative: the negative distance is ``min D_an`` over negatives with
      ``D_an > D_ap`` if any, else ``max D_an`` over all negatives; mean over
      those pairs.
    - ``"structured"``: batch ``[anchors; positives; negatives]`` of ``3n``
      rows, triplet ``i = (i, n + i, 2n + i)``, counted only when
      ``y_i == y_{n+i}`` and ``y_i != y_{2n+i}``.
    """
    y, x = _labels(labels), _as64(x)
    b = len(y)
    squared = distance == "squared"
    if distance not in ("squared", "euclidean"):
        raise ValueError(distance)

    table = _distance_table(x, squared)

    def dist(i, j):
        return table[(i, j)]

    def hinge(d_ap, d_an):
        return max(d_ap - d_an + margin, 0.0)

    terms = []
    if mining == "structured":
        n = b // 3
        for i in range(n):
            a, p, q = i, n + i, 2 * n + i
            if y[a] == y[p] and y[a] != y[q]:
                terms.append(hinge(dist(a, p), dist(a, q)))
    elif mining == "all":
        for a in range(b):
            for p in range(b):
                if p == a or y[p] != y[a]:
                    continue
                for q in range(b):
                    if y[q] == y[a]:
                        continue
                    terms.append(hinge(dist(a, p), dist(a, q)))
    elif mining == "hard":
        for a in range(b):
            positives = [dist(a, p) for p in range(b) if p != a and y[p] == y[a]]
            negatives = [dist(a, q) for q in range(b) if y[q] != y[a]]
            if positives and negatives:
                terms.append(hinge(max(positives), min(negatives)))
    elif mining == "semihard":
        for a in range(b):
            negatives = [dist(a, q) for q in range(b) if y[q] != y[a]]
            if not negatives:
                continue
            for p in range(b):
                if p == a or y[p] != y[a]:
                    continue
                d_ap = dist(a, p)
                farther = [d for d in negatives if d > d_ap]
                d_an = min(farther) if farther else max(negatives)
                terms.append(hinge(d_ap, d_an))
    else:
        raise ValueError(mining)
    return sum(terms) / len(terms) if terms else 0.0


def lifted_structure(labels, x, margin=1.0):
    """Smooth lifted structured loss (Song et al. 2016, eq. 4).

    For each unordered positive pair ``(i, j)``::

        J_ij = log( sum_{k: y_k != y_i} exp(m - d_ik) + sum_{l: y_l != y_j} exp(m - d_jl) ) + d_ij

    and ``L = 1 / (2 |P|) * sum_P max(J_ij, 0)^2``. A pair without negatives
    costs 0 (it still counts in ``|P|``); no positive pair gives 0.
    """
    y, x = _labels(labels), _as64(x)
    b = len(y)
    total, pairs = 0.0, 0
    for i in range(b):
        for j in range(i + 1, b):
            if y[i] != y[j]:
                continue
            pairs += 1
            exponents = [margin - euclidean(x[i], x[k]) for k in range(b) if y[k] != y[i]]
            exponents += [margin - euclidean(x[j], x[k]) for k in range(b) if y[k] != y[j]]
            if not exponents:
                continue
            big_j = _log_sum_exp(exponents) + euclidean(x[i], x[j])
            total += max(big_j, 0.0) ** 2
    return total / (2.0 * pairs) if pairs else 0.0


def _npair_cross_entropy(x):
    """``mean_i -log( exp(a_i.p_i) / sum_j exp(a_i.p_j) )`` of ``[a; p]``."""
    n = len(x) // 2
    total = 0.0
    for i in range(n):
        logits = [dot(x[i], x[n + j]) for j in range(n)]
        total += _log_sum_exp(logits) - logits[i]
    return total / n


def _mean_squared_norm(x):
    return sum(dot(row, row) for row in x) / len(x)


def npair(labels, x, l2_reg=0.002):
    """Multi-class N-pair loss of ``[a_1..a_N; p_1..p_N]``.

    ``L = mean_i -log( exp(a_i.p_i) / sum_j exp(a_i.p_j) ) + l2_reg * mean_k ||x_k||^2``
    (the mean over all ``2N`` rows). ``labels`` only fix the layout here.
    """
    del labels
    x = _as64(x)
    return _npair_cross_entropy(x) + l2_reg * _mean_squared_norm(x)


def angular(
    labels,
    x,
    alpha_degrees=40.0,
    angular_weight=1.0,
    npair_weight=0.0,
    l2_reg=0.0,
    normalize=True,
):
    """Angular N-pair loss (Wang et al. 2017, eq. 8) plus optional N-pair and L2 terms.

    With ``x_hat`` the rows of ``x`` scaled to unit norm (if ``normalize``),
    ``t2 = tan(alpha)^2``, ``a_i = x_hat[i]``, ``p_i = x_hat[N + i]`` and every
    sample ``n`` of the whole batch with ``y_n != y_i``::

        f_in  = 4 t2 (a_i + p_i).x_hat_n - 2 (1 + t2) a_i.p_i
        L_ang = mean_i log(1 + sum_n exp(f_in))
        L     = angular_weight L_ang + npair_weight L_npair(x_hat) + l2_reg mean_k ||x_k||^2

    the last term on the raw ``x``.
    """
    y, raw = _labels(labels), _as64(x)
    b = len(y)
    n = b // 2
    if normalize:
        xh = np.empty_like(raw)
        for k in range(b):
            xh[k] = raw[k] / math.sqrt(dot(raw[k], raw[k]))
    else:
        xh = raw.copy()
    t2 = math.tan(math.radians(alpha_degrees)) ** 2
    l_ang = 0.0
    for i in range(n):
        a, p = xh[i], xh[n + i]
        centre = a + p
        ap = dot(a, p)
        f = [4.0 * t2 * dot(centre, xh[k]) - 2.0 * (1.0 + t2) * ap for k in range(b) if y[k] != y[i]]
        l_ang += _log1p_sum_exp(f)
    l_ang /= n
    loss = angular_weight * l_ang
    if npair_weight:
        loss += npair_weight * _npair_cross_entropy(xh)
    if l2_reg:
        loss += l2_reg * _mean_squared_norm(raw)
    return loss


def divergence(x, margin=1.0, heads=None):
    """Divergence loss between the heads of each sample (Kim et al. 2018).

    ``x`` is ``[B, M, D]``, or ``[B, M*D]`` with ``heads=M`` (row-major:
    head ``m`` is columns ``m*D .. (m+1)*D - 1``)::

        L = mean_b mean_{m < n} max(0, margin - ||x_bm - x_bn||^2)

    0 for a single head.
    """
    x = _as64(x)
    if x.ndim == 2:
        width = x.shape[1] // heads
        x = np.stack([[row[h * width : (h + 1) * width] for h in range(heads)] for row in x])
    b, m = x.shape[0], x.shape[1]
    if m < 2:
        return 0.0
    total = 0.0
    for s in range(b):
        acc, count = 0.0, 0
        for h in range(m):
            for k in range(h + 1, m):
                acc += max(0.0, margin - squared_euclidean(x[s, h], x[s, k]))
                count += 1
        total += acc / count
    return total / b


def numerical_gradient(fn, x, eps=1e-5):
    """Central finite differences of scalar ``fn`` at ``x`` (float64), same shape as ``x``."""
    x = _as64(x).copy()
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + eps
        up = fn(x)
        flat[k] = old - eps
        down = fn(x)
        flat[k] = old
        gflat[k] = (up - down) / (2.0 * eps)
    return grad
