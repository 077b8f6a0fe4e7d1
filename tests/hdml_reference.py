"""Independent float64 NumPy reference of HDML (Zheng et al., CVPR 2019), written from /work/shared/HDML.md.

Nothing here is derived from kerasml's vectorisation: every pull is computed one (anchor, positive,
negative) row at a time, every N-pair / triplet term is a Python loop over its tuples, batch-norm
computes its moments one feature at a time, and cross-entropies are one row at a time with a manual
max shift. Slow by design: keep batches small.

Conventions (HDML.md and `kerasml.models.HDMLModel`'s docstring):

- eq. (1) with Euclidean ``d⁺ = ‖p − a‖``, ``d⁻ = ‖n − a‖``, ``λ₀ = exp(−α / J_avg)``:
  ``n̂ = a + (d⁺ + λ₀ (d⁻ − d⁺)) (n − a) / d⁻`` if ``d⁻ > d⁺``, else ``n̂ = n``;
- projector ``f``: batch-norm (training mode: batch mean, biased variance, ε 1e-3) then linear;
- generator ``i``: Dense → ReLU → batch-norm (training mode) → Dense (linear);
- ``J_gen = (1 − λ) J_recon + λ c_soft J_soft``, ``w = exp(−β / J̄_gen)``,
  ``J_metric = w (J_m + weight decay) + (1 − w) J_syn``.
"""

import math

import numpy as np

BN_EPSILON = 1e-3


def _as64(x):
    return np.array(x, dtype=np.float64)


def _norm(v):
    return math.sqrt(float(np.sum(_as64(v) ** 2)))


def _logsumexp(values):
    values = [float(v) for v in values]
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


# --------------------------------------------------------------------- factors
def hardness_factor(alpha, j_avg):
    """``λ₀ = exp(−α / J_avg)`` with its limits: 0 at ``J_avg = 0``, 1 at ``J_avg = ∞``."""
    j_avg = float(j_avg)
    if j_avg <= 0.0:
        return 0.0
    if math.isinf(j_avg):
        return 1.0
    return math.exp(-float(alpha) / j_avg)


def synthetic_weight(beta, j_gen):
    """``w = exp(−β / J̄_gen)`` with the same limits as `hardness_factor`."""
    return hardness_factor(beta, j_gen)


# ------------------------------------------------------------------ eq. (1)
def pull_one(anchor, positive, negative, lam):
    """One row of eq. (1). Returns ``(n̂, pulled)``, ``pulled`` true when ``d⁻ > d⁺``."""
    a, p, n = _as64(anchor), _as64(positive), _as64(negative)
    d_pos = _norm(p - a)
    d_neg = _norm(n - a)
    if d_neg > d_pos:
        step = d_pos + lam * (d_neg - d_pos)
        return a + step * (n - a) / d_neg, True
    return n.copy(), False


def pull_negatives(anchors, positives, negatives, j_avg, alpha):
    """Eq. (1) row by row on ``[n, D]`` arrays. Returns ``(n̂ [n, D], pulled [n] bool)``."""
    lam = hardness_factor(alpha, j_avg)
    rows, flags = [], []
    for a, p, n in zip(anchors, positives, negatives, strict=True):
        row, flag = pull_one(a, p, n, lam)
        rows.append(row)
        flags.append(flag)
    return np.array(rows).reshape(np.shape(anchors)), np.array(flags, dtype=bool)


def pull_npair_negatives(anchors, positives, j_avg, alpha):
    """``[N, N, D]``: entry ``(i, j)`` is ``p_j`` pulled toward ``a_i`` with ``d⁺ = ‖p_i − a_i‖``.

    Returns ``(tuples, pulled [N, N] bool)``.
    """
    lam = hardness_factor(alpha, j_avg)
    count, dim = np.shape(anchors)
    out = np.zeros((count, count, dim))
    pulled = np.zeros((count, count), dtype=bool)
    for i in range(count):
        for j in range(count):
            out[i, j], pulled[i, j] = pull_one(anchors[i], positives[i], positives[j], lam)
    return out, pulled


def branch_margin(anchor, positive, negative):
    """``|d⁻ − d⁺| / max(d⁺, d⁻)``: how far a row is from the branch boundary of eq. (1)."""
    a = _as64(anchor)
    d_pos, d_neg = _norm(_as64(positive) - a), _norm(_as64(negative) - a)
    return abs(d_neg - d_pos) / max(d_pos, d_neg, 1e-30)


# ---------------------------------------------------------------- networks
def dense(x, kernel, bias):
    """``x W + b`` row by row."""
    x, kernel, bias = _as64(x), _as64(kernel), _as64(bias)
    return np.array([row @ kernel + bias for row in x])


def batch_norm_training(x, gamma, beta, epsilon=BN_EPSILON):
    """Training-mode batch-norm, one feature at a time.

    Returns ``(out, mean, variance)``; ``variance`` is the biased (divide by M) batch variance.
    """
    x = _as64(x)
    rows, features = x.shape
    out = np.zeros_like(x)
    means, variances = np.zeros(features), np.zeros(features)
    for f in range(features):
        column = [float(x[r, f]) for r in range(rows)]
        mean = sum(column) / rows
        variance = sum((v - mean) ** 2 for v in column) / rows
        scale = float(gamma[f]) / math.sqrt(variance + epsilon)
        for r in range(rows):
            out[r, f] = (column[r] - mean) * scale + float(beta[f])
        means[f], variances[f] = mean, variance
    return out, means, variances


def projector(y, params):
    """``f``: training-mode batch-norm of ``y`` then linear. Returns ``(z, bn_mean, bn_variance)``."""
    normed, mean, variance = batch_norm_training(y, params["gamma"], params["beta"])
    return dense(normed, params["kernel"], params["bias"]), mean, variance


def generator(z, params):
    """``i``: Dense → ReLU → training-mode batch-norm → Dense. Returns ``(y', bn_mean, bn_variance)``."""
    hidden = np.maximum(dense(z, params["hidden_kernel"], params["hidden_bias"]), 0.0)
    normed, mean, variance = batch_norm_training(hidden, params["gamma"], params["beta"])
    return dense(normed, params["output_kernel"], params["output_bias"]), mean, variance


# ------------------------------------------------------------------ losses
def softmax_cross_entropy(logits, labels):
    """Mean over rows of ``logsumexp(logits_r) − logits_r[label_r]``."""
    terms = [_logsumexp(row) - float(row[int(label)]) for row, label in zip(logits, labels, strict=True)]
    return sum(terms) / len(terms)


def npair_loss(anchors, positives, l2_reg):
    """``mean_i [logsumexp_j a_i·p_j − a_i·p_i] + l2_reg · mean over the 2N rows of ‖x‖²``."""
    count = len(anchors)
    terms = []
    for i in range(count):
        logits = [float(np.dot(_as64(anchors[i]), _as64(positives[j]))) for j in range(count)]
        terms.append(_logsumexp(logits) - logits[i])
    squares = [float(np.sum(_as64(row) ** 2)) for row in list(anchors) + list(positives)]
    return sum(terms) / count + l2_reg * sum(squares) / len(squares)


def npair_synthetic_loss(anchors, tuples):
    """``J_syn`` of the N×N form: ``mean_i [logsumexp_j ã_i·ñ_ij − ã_i·ñ_ii]`` (no L2 term)."""
    count = len(anchors)
    terms = []
    for i in range(count):
        logits = [float(np.dot(_as64(anchors[i]), _as64(tuples[i][j]))) for j in range(count)]
        terms.append(_logsumexp(logits) - logits[i])
    return sum(terms) / count


def structured_triplet_loss(anchors, positives, negatives, margin):
    """``mean_i max(‖a_i − p_i‖² − ‖a_i − n_i‖² + margin, 0)`` (squared Euclidean)."""
    terms = []
    for a, p, n in zip(anchors, positives, negatives, strict=True):
        d_ap = float(np.sum((_as64(a) - _as64(p)) ** 2))
        d_an = float(np.sum((_as64(a) - _as64(n)) ** 2))
        terms.append(max(d_ap - d_an + margin, 0.0))
    return sum(terms) / len(terms)


def weight_decay(rate, kernels):
    """``rate · Σ ½‖W‖²`` over the given kernels."""
    return rate * sum(0.5 * float(np.sum(_as64(k) ** 2)) for k in kernels)


# --------------------------------------------------------------- one step
def hdml_step(
    features,
    labels,
    params,
    layout,
    *,
    alpha,
    beta,
    j_avg,
    j_gen,
    l2_reg=0.0,
    margin=1.0,
    soft_weight=0.5,
    softmax_factor=1e4,
    decay=0.0,
):
    """Every HDML term of one training step, from the backbone features ``y`` of the batch.

    Args:
        features: ``y = g(x)`` ``[B, F]``.
        labels: int labels ``[B]`` (``[a; p]`` for ``"npair"``, ``[a; p; n]`` for ``"triplet"``).
        params: ``{"projector": {gamma, beta, kernel, bias}, "generator": {hidden_kernel,
            hidden_bias, gamma, beta, output_kernel, output_bias}, "classifier": {kernel, bias}}``.
        layout: ``"npair"`` or ``"triplet"``.
        alpha, beta: α of eq. (1), β of eq. (2).
        j_avg, j_gen: ``J_avg`` and ``J̄_gen`` *before* this step.
        l2_reg: `NPairLoss`'s ``l2_reg``; margin: the triplet margin.
        soft_weight, softmax_factor: λ and c_soft of ``J_gen``.
        decay: the weight-decay term already computed (`weight_decay`), added to ``J_m``'s side.

    Returns:
        dict with the terms ``J_m, J_syn, J_metric, J_recon, J_soft, J_gen, J_cls, w, total`` (floats)
        and intermediates ``z``, ``pulled`` (the pulled negatives), ``pulled_mask``,
        ``projector_stats`` (mean, variance of the real batch), ``generator_stats`` (of the
        generator pass batch).
    """
    y = _as64(features)
    labels = [int(v) for v in np.asarray(labels).reshape(-1)]
    proj, gen, cls = params["projector"], params["generator"], params["classifier"]

    z, proj_mean, proj_var = projector(y, proj)
    if layout == "npair":
        count = len(z) // 2
        real = 2 * count
        anchors, positives = z[:count], z[count:real]
        j_m = npair_loss(anchors, positives, l2_reg)
        tuples, mask = pull_npair_negatives(anchors, positives, j_avg, alpha)
        pulled = np.array([tuples[i, j] for i in range(count) for j in range(count)])  # row i*N + j
        pulled_labels = [labels[count + j] for i in range(count) for j in range(count)]
        synthetic_label_list = labels[:count] + pulled_labels
        kept_real = count  # decoded anchors that count as synthetics
    elif layout == "triplet":
        count = len(z) // 3
        real = 3 * count
        anchors, positives, negatives = z[:count], z[count : 2 * count], z[2 * count : real]
        j_m = structured_triplet_loss(anchors, positives, negatives, margin)
        pulled, mask = pull_negatives(anchors, positives, negatives, j_avg, alpha)
        synthetic_label_list = labels[: 2 * count] + labels[2 * count : real]
        kept_real = 2 * count  # decoded anchors and positives
    else:
        raise ValueError(layout)

    # (a) generator pass: real z and pulled negatives, one batch (its own batch-norm statistics).
    decoded, gen_mean, gen_var = generator(np.concatenate([z[:real], pulled]), gen)
    j_recon = 0.0
    for r in range(real):
        for f in range(y.shape[1]):
            j_recon += (y[r, f] - decoded[r, f]) ** 2
    synthetic = np.concatenate([decoded[:kept_real], decoded[real:]])
    j_soft = softmax_cross_entropy(dense(synthetic, cls["kernel"], cls["bias"]), synthetic_label_list)
    j_gen_step = (1.0 - soft_weight) * j_recon + soft_weight * softmax_factor * j_soft

    # (b) metric pass: the same synthetic features ỹ that J_soft judged, projected back.
    projected, _, _ = projector(synthetic, proj)
    if layout == "npair":
        syn_anchors = projected[:count]
        syn_tuples = [[projected[count + i * count + j] for j in range(count)] for i in range(count)]
        j_syn = npair_synthetic_loss(syn_anchors, syn_tuples)
    else:
        j_syn = structured_triplet_loss(
            projected[:count], projected[count : 2 * count], projected[2 * count : 3 * count], margin
        )

    w = synthetic_weight(beta, j_gen)
    j_metric = w * (j_m + decay) + (1.0 - w) * j_syn
    j_cls = softmax_cross_entropy(dense(y, cls["kernel"], cls["bias"]), labels)
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
        "pulled": pulled,
        "pulled_mask": mask,
        "projector_stats": (proj_mean, proj_var),
        "generator_stats": (gen_mean, gen_var),
    }
