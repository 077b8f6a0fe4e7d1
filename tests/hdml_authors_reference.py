"""Independent float64 NumPy reference of one HDML training step *as the authors' code computes it*.

Written from the formulas of the HDML authors' TensorFlow 1 release (the public repository
``wzzheng/HDML``; files ``main_npair.py``, ``main_triplet.py``, ``lib/HDML.py``, ``lib/Loss_ops.py``,
``lib/nn_Ops.py``); each step cites the file and line it follows. Nothing here is shared with
kerasml or with `hdml_reference` (the kerasml-convention reference).

Where the authors' graph is not finite, this reference still follows their formula and only
guards the division by ``d⁻`` on rows their mask discards (lib/HDML.py:17-29), which changes no
value. The batch layout is theirs: N-pair ``[a_1..a_N; p_1..p_N]``, triplet ``[anchors; positives;
negatives]``. Their N-pair code hard-codes N = 64 (``half_batch_size``, lib/Loss_ops.py:250); the
formula is written for any N here.

The network of the test: backbone ``y = x W_b + b_b`` (one dense layer), projector ``z = BN(y) W + b``
(``BN1`` then ``fc1``, main_npair.py:44-50), generator ``Dense → ReLU → BN → Dense`` (``fc_block``,
lib/nn_Ops.py:102-110, with ``is_relu`` and ``is_bn`` for ``generator1``, main_npair.py:87-96),
softmax classifier ``y W_s + b_s`` (lib/HDML.py:72-78).

Gradients are central differences of each group's objective with respect to that group's own
variables, as the three optimizers of main_npair.py:142-144 see them: the backbone and projector
(scope ``Classifier``) minimise ``J_metric``, the generator (``Generator``) ``J_gen``, the softmax
classifier (``Softmax_classifier``) its cross-entropy on the real features.
"""

import numpy as np

#: ``tf.layers.batch_normalization``'s defaults (lib/nn_Ops.py:81-84): momentum 0.99, epsilon 1e-3.
BN_EPSILON = 1e-3
GROUPS = {
    "metric": (
        ("backbone", "kernel"),
        ("backbone", "bias"),
        *(("projector", k) for k in ("gamma", "beta", "kernel", "bias")),
    ),
    "generator": tuple(
        ("generator", k) for k in ("hidden_kernel", "hidden_bias", "gamma", "beta", "output_kernel", "output_bias")
    ),
    "classifier": (("classifier", "kernel"), ("classifier", "bias")),
}
OBJECTIVE = {"metric": "J_metric", "generator": "J_gen", "classifier": "J_cls"}


def batch_norm(x, gamma, beta):
    """Training-mode batch-norm: batch mean, biased batch variance. Returns ``(out, mean, variance)``."""
    mean = x.mean(axis=0)
    variance = ((x - mean) ** 2).mean(axis=0)
    return (x - mean) / np.sqrt(variance + BN_EPSILON) * gamma + beta, mean, variance


def distance(u, v):
    """``nn_Ops.distance``: Euclidean distance of matching rows, ``[M, 1]`` (lib/nn_Ops.py:59-66)."""
    return np.sqrt(np.sum((u - v) ** 2, axis=1, keepdims=True))


def pulling(anc, pos, neg, j_avg, alpha):
    """``HDML.Pulling`` on matching rows (lib/HDML.py:17-29 N-pair, 38-50 triplet).

    ``n̂ = a + (n − a) (d_ap + (d_an − d_ap) exp(−α/J_avg)) / d_an``, kept as ``n`` where
    ``d_ap >= d_an``. Returns ``(rows, pulled_mask)``.
    """
    d_ap, d_an = distance(anc, pos), distance(anc, neg)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.exp(-alpha / j_avg) if j_avg > 0 else 0.0
    keep = d_ap >= d_an
    safe_d_an = np.where(keep, 1.0, d_an)  # rows with d_an = 0 are always kept
    moved = anc + (neg - anc) * ((d_ap + (d_an - d_ap) * lam) / safe_d_an)
    return np.where(keep, neg, moved), ~keep[:, 0]


def pulling_output(z, layout, j_avg, alpha):
    """The tensor ``HDML.Pulling`` returns: ``[anc; neg_tile]`` (lib/HDML.py:30) or ``[anc; pos; neg]`` (:53).

    N-pair tiles (lib/HDML.py:13-15): row ``i·N + j`` pairs anchor ``a_i`` and its positive ``p_i``
    with ``p_j`` as the negative. Returns ``(output, pulled_mask)``.
    """
    if layout == "npair":
        n = len(z) // 2
        anc, pos = z[:n], z[n:]
        anc_tile = np.repeat(anc, n, axis=0)
        pos_tile = np.repeat(pos, n, axis=0)
        neg_tile = np.tile(pos, (n, 1))
        rows, mask = pulling(anc_tile, pos_tile, neg_tile, j_avg, alpha)
        return np.concatenate([anc, rows]), mask.reshape(n, n)
    n = len(z) // 3
    anc, pos, neg = z[:n], z[n : 2 * n], z[2 * n :]
    rows, mask = pulling(anc, pos, neg, j_avg, alpha)
    return np.concatenate([anc, pos, rows]), mask


def cross_entropy(logits, labels):
    """Per-row ``sparse_softmax_cross_entropy_with_logits``."""
    top = logits.max(axis=1, keepdims=True)
    log_sum = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return log_sum - logits[np.arange(len(labels)), labels]


def soft_target_cross_entropy(logits, target):
    """``softmax_cross_entropy_with_logits`` with a (normalised) target distribution, per row."""
    top = logits.max(axis=1, keepdims=True)
    log_probs = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    return -(target * log_probs).sum(axis=1)


def npairs_loss(positive_labels, anchors, positives, l2):
    """``Loss_ops.npairs_loss`` (lib/Loss_ops.py:298 ff.), the real N-pair ``J_m``.

    ``mean_i CE(a_i·p_j over j; target: positives sharing the label of p_i)`` +
    ``0.25 · l2 · (mean‖a‖² + mean‖p‖²)`` (lines 324-329); called with the positives' labels
    (lib/Loss_ops.py ``Loss``, ``"NpairLoss"``).
    """
    same = (positive_labels[:, None] == positive_labels[None, :]).astype(float)
    target = same / same.sum(axis=1, keepdims=True)
    xent = soft_target_cross_entropy(anchors @ positives.T, target).mean()
    return xent + 0.25 * l2 * ((anchors**2).sum(1).mean() + (positives**2).sum(1).mean())


def new_npair_loss(labels, anchors, tuples, l2):
    """``Loss_ops.new_npair_loss`` with ``equal_shape=False`` (lib/Loss_ops.py:250-295), the N-pair ``J_syn``.

    ``anchors [N, D]``, ``tuples [N², D]`` (row ``i·N + j``). ``l2loss = 0.25 · l2 · (mean‖ã‖² +
    mean‖ñ‖²)`` over the N anchors and all N² tuples (lines 261-266); anchor ``i`` scores the N
    tuples of its own block (lines 272-273, 279-291) with target ``label_anc_i == label_pos_j``
    (lines 283-286); the cross-entropies are averaged (line 293).
    """
    n = len(anchors)
    anchor_labels, positive_labels = labels[:n], labels[n : 2 * n]
    blocks = tuples.reshape(n, n, -1)
    logits = np.einsum("id,ijd->ij", anchors, blocks)
    same = (anchor_labels[:, None] == positive_labels[None, :]).astype(float)
    xent = soft_target_cross_entropy(logits, same / same.sum(axis=1, keepdims=True)).mean()
    return xent + 0.25 * l2 * ((anchors**2).sum(1).mean() + (tuples**2).sum(1).mean())


def triplet_loss(z, margin=1.0):
    """``Loss_ops.triplet_loss`` (lib/Loss_ops.py:164-168): ``Σ max(‖a−p‖² − ‖a−n‖² + m, 0)``, summed."""
    n = len(z) // 3
    a, p, q = z[:n], z[n : 2 * n], z[2 * n :]
    hinge = ((a - p) ** 2).sum(1) - ((a - q) ** 2).sum(1) + margin
    return np.maximum(hinge, 0.0).sum(), hinge


def authors_step(
    x,
    labels,
    params,
    layout,
    *,
    alpha,
    beta,
    j_avg,
    j_gen,
    l2=0.0,
    margin=1.0,
    soft_weight=0.5,
    softmax_factor=1e4,
    regular_factor=0.0,
):
    """Every quantity of one authors' step.

    Args:
        x: inputs of the one-layer backbone ``[B, I]``.
        labels: int labels ``[B]``.
        params: ``{"backbone": {kernel, bias}, "projector": {gamma, beta, kernel, bias},
            "generator": {hidden_kernel, hidden_bias, gamma, beta, output_kernel, output_bias},
            "classifier": {kernel, bias}}``.
        layout: ``"npair"`` or ``"triplet"``.
        alpha, beta: FLAGS ``alpha`` and ``beta``.
        j_avg, j_gen: the values fed to the ``Javg`` / ``Jgen`` placeholders (the collectors' means).
        l2: FLAGS ``loss_l2_reg`` (N-pair); margin: the triplet margin (1 in their code).
        soft_weight, softmax_factor: FLAGS ``_lambda`` and ``Softmax_factor``.
        regular_factor: FLAGS ``Regular_factor`` (weight decay).

    Returns:
        dict: ``J_m, J_syn, J_metric, J_recon, J_soft, J_gen, J_cls, w`` as the authors' session
        fetches them (weighted, main_npair.py:190-196), ``raw`` (the unweighted terms),
        ``J_avg_input`` (what the ``Jm`` collector records), ``generator_batch`` (the rows the
        generator decodes), ``generator_stats`` (its batch-norm mean and variance),
        ``projector_stats`` (BN1 on the real batch), ``z``, ``pulled_mask``, ``hinges``,
        ``relu_inputs``.
    """
    x = np.asarray(x, np.float64)
    labels = np.asarray(labels).reshape(-1)
    p = {group: {k: np.asarray(v, np.float64) for k, v in values.items()} for group, values in params.items()}
    bb, pr, gen, cls = p["backbone"], p["projector"], p["generator"], p["classifier"]

    def project(features):  # BN1 then fc1 (main_npair.py:44-50; reused at :100-107)
        normed, mean, variance = batch_norm(features, pr["gamma"], pr["beta"])
        return normed @ pr["kernel"] + pr["bias"], mean, variance

    y = x @ bb["kernel"] + bb["bias"]  # embedding_y_origin (main_npair.py:39-41)
    z, proj_mean, proj_var = project(y)
    # wdLoss: Regular_factor · Σ ½‖v‖² over trainable variables without "batch_normalization" in
    # their name, created so far: backbone and fc1, weights and biases (main_npair.py:60-64).
    wd = regular_factor * sum(0.5 * np.sum(v**2) for v in (bb["kernel"], bb["bias"], pr["kernel"], pr["bias"]))
    hinges = None
    if layout == "npair":
        n = len(z) // 2
        real_loss = npairs_loss(labels[n:], z[:n], z[n:], l2)
    else:
        real_loss, hinges = triplet_loss(z, margin)
    j_m = real_loss + wd  # main_npair.py:70

    quta, mask = pulling_output(z, layout, j_avg, alpha)  # main_npair.py:79
    batch = np.concatenate([z, quta])  # embedding_z_concate (main_npair.py:81)
    relu_inputs = batch @ gen["hidden_kernel"] + gen["hidden_bias"]
    hidden, gen_mean, gen_var = batch_norm(np.maximum(relu_inputs, 0.0), gen["gamma"], gen["beta"])
    decoded = hidden @ gen["output_kernel"] + gen["output_bias"]  # generator2 (main_npair.py:93-96)
    real = len(z)
    yp, yq = decoded[:real], decoded[real:]  # npairSplit (lib/HDML.py:61-67) / tf.split (main_triplet.py:98)
    z_syn, _, _ = project(yq)  # main_npair.py:100-107

    w = np.exp(-beta / j_gen) if j_gen > 0 else 0.0  # tf.exp(-FLAGS.beta / Jgen) (main_npair.py:118, 123)
    if layout == "npair":
        syn_raw = new_npair_loss(labels, z_syn[:n], z_syn[n:], l2)  # main_npair.py:110-122
        syn_hinges = None
    else:
        syn_raw, syn_hinges = triplet_loss(z_syn, margin)  # main_triplet.py:111
    j_syn = (1.0 - w) * syn_raw
    j_m_weighted = w * j_m  # main_npair.py:123
    j_metric = j_m_weighted + j_syn  # main_npair.py:124

    j_cls = cross_entropy(y @ cls["kernel"] + cls["bias"], labels).mean()  # lib/HDML.py:76-77
    recon_raw = np.sum((yp - y) ** 2)
    j_recon = (1.0 - soft_weight) * recon_raw  # main_npair.py:134
    logits = yq @ cls["kernel"] + cls["bias"]
    if layout == "npair":
        # genSoftmax (lib/HDML.py:83-95): anchors against their labels, tuple i·N + j against p_j's.
        tuple_labels = np.tile(labels[n:], n)
        soft_raw = cross_entropy(logits[n:], tuple_labels).mean() + cross_entropy(logits[:n], labels[:n]).mean()
    else:
        soft_raw = cross_entropy(logits, labels).mean()  # main_triplet.py:119-120
    j_soft = softmax_factor * soft_weight * soft_raw
    j_gen_step = j_recon + j_soft  # main_npair.py:139
    return {
        "J_m": j_m_weighted,
        "J_syn": j_syn,
        "J_metric": j_metric,
        "J_recon": j_recon,
        "J_soft": j_soft,
        "J_gen": j_gen_step,
        "J_cls": j_cls,
        "w": w,
        "raw": {"J_m": real_loss, "weight_decay": wd, "J_syn": syn_raw, "J_recon": recon_raw, "J_soft": soft_raw},
        "J_avg_input": j_m_weighted,  # the Jm collector records the fetched J_m (main_npair.py:199)
        "generator_batch": batch,
        "generator_stats": (gen_mean, gen_var),
        "projector_stats": (proj_mean, proj_var),
        "z": z,
        "pulled_mask": mask,
        "hinges": (hinges, syn_hinges),
        "relu_inputs": relu_inputs,
    }


def group_gradients(x, labels, params, layout, eps=1e-6, **options):
    """Central differences of each group's objective w.r.t. its own variables.

    Returns ``{(group, name): gradient array}`` for every variable of `GROUPS`.
    """
    params = {group: {k: np.array(v, np.float64) for k, v in values.items()} for group, values in params.items()}
    gradients = {}
    for group, keys in GROUPS.items():
        objective = OBJECTIVE[group]
        for key in keys:
            value = params[key[0]][key[1]]
            grad = np.zeros_like(value)
            for index in np.ndindex(value.shape):
                saved = value[index]
                value[index] = saved + eps
                up = authors_step(x, labels, params, layout, **options)[objective]
                value[index] = saved - eps
                down = authors_step(x, labels, params, layout, **options)[objective]
                value[index] = saved
                grad[index] = (up - down) / (2 * eps)
            gradients[key] = grad
    return gradients
