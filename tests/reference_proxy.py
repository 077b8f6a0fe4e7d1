"""Independent float64 NumPy references of the proxy, margin-softmax and margin losses.

Written from the papers' equations, not from kerasml's implementation: every
function loops over samples, classes and pairs in plain Python, normalises each
vector by its own norm, takes angles with ``arccos`` and distances from the
difference of two vectors. Slow by design: keep cases small.

All take NumPy inputs (labels ``[B]``, embeddings ``[B, D]``, proxies ``[C, D]``
or ``[C, K, D]``) and return a Python float.
"""

import math

import numpy as np


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    norm = math.sqrt(float(np.sum(v * v)))
    return v / norm if norm > 0 else v


def _cos(u, v):
    return float(np.sum(_unit(u) * _unit(v)))


def _labels(y):
    return [int(v) for v in np.asarray(y).reshape(-1)]


def _log1p_sum_exp(values):
    """``log(1 + Σ exp(v))``, stable."""
    values = [0.0, *values]
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def _cross_entropy(logits, target):
    """``−log softmax(logits)[target]``."""
    top = max(logits)
    return top + math.log(sum(math.exp(v - top) for v in logits)) - logits[target]


def proxy_anchor(labels, x, proxies, margin=0.1, alpha=32.0):
    """Kim et al. 2020, eq. (4)."""
    labels = _labels(labels)
    positive_sum, with_positives, negative_sum = 0.0, 0, 0.0
    for c in range(len(proxies)):
        pos = [-alpha * (_cos(x[i], proxies[c]) - margin) for i in range(len(labels)) if labels[i] == c]
        neg = [alpha * (_cos(x[i], proxies[c]) + margin) for i in range(len(labels)) if labels[i] != c]
        if pos:
            positive_sum += _log1p_sum_exp(pos)
            with_positives += 1
        negative_sum += _log1p_sum_exp(neg)
    positive_term = positive_sum / with_positives if with_positives else 0.0
    return positive_term + negative_sum / len(proxies)


def proxy_nca(labels, x, proxies, softmax_scale=1.0):
    """Movshovitz-Attias et al. 2017 with the positive in the denominator (PML, ProxyNCA++)."""
    labels = _labels(labels)
    total = 0.0
    for i, y in enumerate(labels):
        logits = []
        for c in range(len(proxies)):
            diff = _unit(x[i]) - _unit(proxies[c])
            logits.append(-softmax_scale * float(np.sum(diff * diff)))
        total += _cross_entropy(logits, y)
    return total / len(labels)


def normalized_softmax(labels, x, proxies, temperature=0.05):
    """Zhai & Wu 2019: cross-entropy of ``cos / T``."""
    labels = _labels(labels)
    total = 0.0
    for i, y in enumerate(labels):
        total += _cross_entropy([_cos(x[i], p) / temperature for p in proxies], y)
    return total / len(labels)


def soft_triple(labels, x, centers, la=20.0, gamma=0.1, margin=0.01, tau=0.2):
    """Qian et al. 2019, eq. (7)-(9) and the regulariser R."""
    labels = _labels(labels)
    num_classes, k = len(centers), len(centers[0])
    total = 0.0
    for i, y in enumerate(labels):
        logits = []
        for c in range(num_classes):
            sims = [_cos(x[i], centers[c][j]) for j in range(k)]
            top = max(s / gamma for s in sims)
            weights = [math.exp(s / gamma - top) for s in sims]
            s_c = sum(w * s for w, s in zip(weights, sims)) / sum(weights)
            logits.append(la * (s_c - (margin if c == y else 0.0)))
        total += _cross_entropy(logits, y)
    loss = total / len(labels)
    if tau > 0 and k > 1:
        spread = 0.0
        for c in range(num_classes):
            for s in range(k):
                for t in range(s + 1, k):
                    spread += math.sqrt(2.0 + 1e-5 - 2.0 * _cos(centers[c][s], centers[c][t]))
        loss += tau * spread / (num_classes * k * (k - 1))
    return loss


def _class_cosines(xi, weights):
    """``cos θ_c``: of ``W_c`` ``[C, D]``, or the largest over the sub-centres of ``[C, K, D]``."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim == 3:
        return [max(_cos(xi, w) for w in sub) for sub in weights]
    return [_cos(xi, w) for w in weights]


def arcface(labels, x, weights, margin=28.6, scale=64.0):
    """Deng et al. 2019, eq. (3); sub-centre ArcFace (Deng et al. 2020) for ``[C, K, D]`` weights."""
    labels = _labels(labels)
    m = math.radians(margin)
    total = 0.0
    for i, y in enumerate(labels):
        cosines = _class_cosines(x[i], weights)
        logits = [scale * (math.cos(math.acos(c) + m) if j == y else c) for j, c in enumerate(cosines)]
        total += _cross_entropy(logits, y)
    return total / len(labels)


def cosface(labels, x, weights, margin=0.35, scale=64.0):
    """Wang et al. 2018, eq. (4)."""
    labels = _labels(labels)
    total = 0.0
    for i, y in enumerate(labels):
        cosines = _class_cosines(x[i], weights)
        logits = [scale * (c - (margin if j == y else 0.0)) for j, c in enumerate(cosines)]
        total += _cross_entropy(logits, y)
    return total / len(labels)


def margin_terms(labels, x, beta):
    """``(D_ij − β_i, sign)`` of every ordered pair ``i ≠ j``: ``+1`` positive, ``−1`` negative."""
    labels = _labels(labels)
    beta = np.asarray(beta, dtype=np.float64)
    terms = []
    for i in range(len(labels)):
        b = float(beta) if beta.ndim == 0 else float(beta[labels[i]])
        for j in range(len(labels)):
            if i == j:
                continue
            d = math.sqrt(float(np.sum((_unit(x[i]) - _unit(x[j])) ** 2)))
            terms.append((d - b, 1.0 if labels[i] == labels[j] else -1.0))
    return terms


def margin(labels, x, beta=1.2, margin=0.2, nu=0.0):
    """Wu et al. 2017: ``Σ (α + y_ij (D_ij − β_i))_+`` over the active pairs' count, plus ``ν mean_i β_i``."""
    values = [max(0.0, margin + sign * gap) for gap, sign in margin_terms(labels, x, beta)]
    active = sum(1 for v in values if v > 0)
    loss = sum(values) / max(active, 1)
    beta = np.asarray(beta, dtype=np.float64)
    anchor_betas = [float(beta) if beta.ndim == 0 else float(beta[y]) for y in _labels(labels)]
    return loss + nu * sum(anchor_betas) / len(anchor_betas)
