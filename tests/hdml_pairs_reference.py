"""Independent float64 NumPy reference of HDML for pair-based losses (docs/hdml.md, "HDML beyond tuples").

Written from the construction and from each loss's paper formula, one pair at a time in Python
loops (nothing vectorised the way kerasml is):

- eq. (1) for every ordered pair ``(i, j)`` with ``y_i ≠ y_j``: ``z_j`` pulled toward the anchor
  ``z_i`` with ``d⁺`` the distance from ``z_i`` to its farthest positive (``k ≠ i``, ``y_k = y_i``);
  an anchor without a positive pulls nothing, and a positive (or ``j = i``) stays ``z_j``;
- ``J_syn``: the loss's formula with the distance / similarity between anchor ``i`` and sample
  ``j`` read as ``s(ã_i, ñ_ij)``;
- one HDML step (`pair_hdml_step`): the generator decodes ``[z; grid]``, the synthetic batch is
  the ``B`` decoded anchors then the ``B²`` grid rows (labels ``y_i`` then ``y_j``), projected back.

The eq. (1) row, the networks and the cross-entropy are `hdml_reference`'s (written from HDML.md).
"""

import math

import hdml_reference as ref
import numpy as np


def _as64(x):
    return np.array(x, dtype=np.float64)


def _norm(v):
    return math.sqrt(float(np.sum(_as64(v) ** 2)))


def _cos(u, v):
    nu, nv = _norm(u), _norm(v)
    if nu == 0.0 or nv == 0.0:
        return 0.0
    return float(np.dot(_as64(u), _as64(v))) / (nu * nv)


def _log1p_sum_exp(values):
    """``log(1 + Σ exp(v))`` (0 for an empty list)."""
    return ref._logsumexp([0.0, *values]) if values else 0.0


# ------------------------------------------------------------------ eq. (1)
def farthest_positive(z, labels, i):
    """Index of anchor ``i``'s farthest positive, or ``None`` when it has none."""
    best, best_d = None, -1.0
    for k in range(len(z)):
        if k != i and labels[k] == labels[i]:
            d = _norm(_as64(z[k]) - _as64(z[i]))
            if d > best_d:
                best, best_d = k, d
    return best


def pull_pair_negatives(z, labels, j_avg, alpha):
    """``[B, B, D]`` grid (entry ``(i, j)``: ``z_j`` as seen from anchor ``i``) and the ``[B, B]`` pulled mask."""
    z = _as64(z)
    labels = [int(v) for v in labels]
    lam = ref.hardness_factor(alpha, j_avg)
    count = len(z)
    grid = np.zeros((count, count, z.shape[1]))
    pulled = np.zeros((count, count), dtype=bool)
    for i in range(count):
        k = farthest_positive(z, labels, i)
        for j in range(count):
            if labels[j] != labels[i] and k is not None:
                grid[i, j], pulled[i, j] = ref.pull_one(z[i], z[k], z[j], lam)
            else:
                grid[i, j] = z[j]
    return grid, pulled


# ------------------------------------------------------------------ losses on s(i, j)
def euclidean(anchors, grid):
    """``D(i, j) = ‖ã_i − ñ_ij‖`` as a function."""
    return lambda i, j: _norm(_as64(anchors[i]) - _as64(grid[i][j]))


def cosine(anchors, grid):
    """``S(i, j) = cos(ã_i, ñ_ij)`` as a function."""
    return lambda i, j: _cos(anchors[i], grid[i][j])


def batch_pairs(z):
    """The real batch's grid: entry ``(i, j)`` is ``z_j`` (so ``s(z_i, z_j)``)."""
    return [[z[j] for j in range(len(z))] for _ in range(len(z))]


def _sets(labels, i):
    positives = [k for k in range(len(labels)) if k != i and labels[k] == labels[i]]
    negatives = [k for k in range(len(labels)) if labels[k] != labels[i]]
    return positives, negatives


def contrastive(labels, dist, margin):
    """Hadsell et al.: ``½ mean_P D² + ½ mean_N max(m − D, 0)²`` over ordered pairs (each mean 0 when empty)."""
    pos, neg = [], []
    for i in range(len(labels)):
        positives, negatives = _sets(labels, i)
        pos += [dist(i, k) ** 2 for k in positives]
        neg += [max(margin - dist(i, k), 0.0) ** 2 for k in negatives]
    return 0.5 * ((sum(pos) / len(pos) if pos else 0.0) + (sum(neg) / len(neg) if neg else 0.0))


def multi_similarity(labels, sim, alpha, beta, base, epsilon=None):
    """Wang et al. eq. (11) with their mining (eq. 7-8, ``epsilon``; ``None``: every pair), mean over anchors."""
    total = 0.0
    for i in range(len(labels)):
        positives, negatives = _sets(labels, i)
        if epsilon is not None:
            s_pos = [sim(i, k) for k in positives]
            s_neg = [sim(i, k) for k in negatives]
            kept_neg = [k for k in negatives if positives and sim(i, k) > min(s_pos) - epsilon]
            kept_pos = [k for k in positives if negatives and sim(i, k) < max(s_neg) + epsilon]
            positives, negatives = kept_pos, kept_neg
        total += _log1p_sum_exp([-alpha * (sim(i, k) - base) for k in positives]) / alpha
        total += _log1p_sum_exp([beta * (sim(i, k) - base) for k in negatives]) / beta
    return total / len(labels)


def lifted(labels, dist, margin):
    """Song et al. eq. (4): ``1/(2|P|) Σ_P max(J_ij, 0)²`` (ordered pairs), ``J_ij`` from both sides' negatives."""
    terms = []
    for i in range(len(labels)):
        positives, negatives_i = _sets(labels, i)
        for j in positives:
            negatives_j = _sets(labels, j)[1]
            exps = [margin - dist(i, k) for k in negatives_i] + [margin - dist(j, k) for k in negatives_j]
            value = ref._logsumexp(exps) + dist(i, j) if exps else -math.inf
            terms.append(max(value, 0.0) ** 2)
    return 0.5 * sum(terms) / len(terms) if terms else 0.0


def circle(labels, sim, m, gamma):
    """Sun et al. eq. (6-8), pair labels; mean over anchors with a positive and a negative."""
    values = []
    for i in range(len(labels)):
        positives, negatives = _sets(labels, i)
        if not positives or not negatives:
            continue
        logits = []
        for n in negatives:
            s_n = sim(i, n)
            logits.append(gamma * max(s_n + m, 0.0) * (s_n - m))
        lse_n = ref._logsumexp(logits)
        logits = []
        for p in positives:
            s_p = sim(i, p)
            logits.append(-gamma * max(1.0 + m - s_p, 0.0) * (s_p - (1.0 - m)))
        lse_p = ref._logsumexp(logits)
        x = lse_n + lse_p
        values.append(max(x, 0.0) + math.log1p(math.exp(-abs(x))))
    return sum(values) / len(values) if values else 0.0


def loss_value(name, labels, anchors, grid, params):
    """Loss ``name`` (``contrastive``, ``multi_similarity``, ``lifted``, ``circle``) on ``s(ã_i, ñ_ij)``."""
    labels = [int(v) for v in labels]
    if name == "contrastive":
        return contrastive(labels, euclidean(anchors, grid), params["margin"])
    if name == "multi_similarity":
        return multi_similarity(
            labels, cosine(anchors, grid), params["alpha"], params["beta"], params["base"], params.get("epsilon")
        )
    if name == "lifted":
        return lifted(labels, euclidean(anchors, grid), params["margin"])
    if name == "circle":
        return circle(labels, cosine(anchors, grid), params["m"], params["gamma"])
    raise ValueError(name)


# ------------------------------------------------------------------ one step
def pair_hdml_step(
    features, labels, params, loss, loss_params, *, alpha, beta, j_avg, j_gen, soft_weight=0.5, softmax_factor=1e4
):
    """Every HDML term of one step with a pair-based loss (no weight decay), from the features ``y``.

    Returns:
        dict with ``J_m, J_syn, J_metric, J_recon, J_soft, J_gen, J_cls, w, total`` and ``z``,
        ``grid``, ``pulled_mask``.
    """
    y = _as64(features)
    labels = [int(v) for v in np.asarray(labels).reshape(-1)]
    count = len(labels)
    proj, gen, cls = params["projector"], params["generator"], params["classifier"]
    z, _, _ = ref.projector(y, proj)
    j_m = loss_value(loss, labels, z, batch_pairs(z), loss_params)
    grid, mask = pull_pair_negatives(z, labels, j_avg, alpha)
    rows = np.array([grid[i, j] for i in range(count) for j in range(count)])  # row i*B + j
    decoded, _, _ = ref.generator(np.concatenate([z, rows]), gen)
    j_recon = sum((y[r, f] - decoded[r, f]) ** 2 for r in range(count) for f in range(y.shape[1]))
    synthetic_labels = labels + [labels[j] for i in range(count) for j in range(count)]
    j_soft = ref.softmax_cross_entropy(ref.dense(decoded, cls["kernel"], cls["bias"]), synthetic_labels)
    j_gen_step = (1.0 - soft_weight) * j_recon + soft_weight * softmax_factor * j_soft
    projected, _, _ = ref.projector(decoded, proj)
    anchors = projected[:count]
    syn_grid = [[projected[count + i * count + j] for j in range(count)] for i in range(count)]
    j_syn = loss_value(loss, labels, anchors, syn_grid, loss_params)
    w = ref.synthetic_weight(beta, j_gen)
    j_metric = w * j_m + (1.0 - w) * j_syn
    j_cls = ref.softmax_cross_entropy(ref.dense(y, cls["kernel"], cls["bias"]), labels)
    return {
        "J_m": j_m,
        "J_syn": j_syn,
        "J_metric": j_metric,
        "J_recon": j_recon,
        "J_soft": j_soft,
        "J_gen": j_gen_step,
        "J_cls": j_cls,
        "w": w,
        "total": j_metric + j_gen_step + j_cls,
        "z": z,
        "grid": grid,
        "pulled_mask": mask,
    }
