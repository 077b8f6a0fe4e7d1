"""Hardness-aware deep metric learning (HDML, Zheng et al., CVPR 2019): the maths.

Pure ``keras.ops`` functions used by `kerasml.hdml.HardnessAwareAugmentation`
and `kerasml.hdml.HDMLModel`; each can be called on its own. The synthetic
loss ``J_syn`` of each base loss lives with that loss
(`kerasml.losses.MetricLoss.synthetic_loss`).

Eq. (1), hardness-aware augmentation, with Euclidean distances
``d⁺ = ‖z⁺ − z‖``, ``d⁻ = ‖z⁻ − z‖`` and ``λ₀ = exp(−α / J_avg)``::

    ẑ⁻ = z + (d⁺ + λ₀ (d⁻ − d⁺)) · (z⁻ − z) / d⁻    if d⁻ > d⁺
    ẑ⁻ = z⁻                                          otherwise

Eq. (2), the adaptive metric objective, with ``w = exp(−β / J̄_gen)``::

    J_metric = w · J_m + (1 − w) · J_syn
"""

from keras import ops

from kerasml import losses
from kerasml.losses.pairwise import label_masks, safe_sqrt

# Denominators of exp(−c / J) are floored here: J = 0 gives exp(−c / 1e-12) = 0, not NaN.
_TINY = 1e-12


def hardness_factor(alpha, j_avg):
    """``λ₀ = exp(−α / J_avg)``: 1 keeps negatives where they are, 0 pulls them to ``d⁺``.

    Finite for every ``J_avg ≥ 0``: ``J_avg → 0`` gives 0, ``J_avg → ∞`` gives 1.
    """
    j_avg = ops.stop_gradient(ops.cast(j_avg, "float32"))
    return ops.exp(-alpha / ops.maximum(j_avg, _TINY))


def synthetic_weight(beta, j_gen):
    """``w = exp(−β / J̄_gen)``, the weight of the real-sample loss in eq. (2).

    ``J̄_gen → ∞`` (the start) gives 1 (trust real samples), ``J̄_gen → 0`` gives 0.
    """
    j_gen = ops.stop_gradient(ops.cast(j_gen, "float32"))
    return ops.exp(-beta / ops.maximum(j_gen, _TINY))


def _norm(x):
    return safe_sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True))


def pull_negatives(anchor, positive, negative, j_avg, alpha):
    """Eq. (1): move each negative toward its anchor, never closer than the positive.

    Args:
        anchor: ``z``, float ``[..., D]``.
        positive: ``z⁺``, broadcastable to ``anchor``.
        negative: ``z⁻``, broadcastable to ``anchor``.
        j_avg: the running metric loss ``J_avg`` (scalar, no gradient).
        alpha: the pulling factor ``α``.

    Returns:
        ``ẑ⁻`` with the broadcast shape of the inputs: rows with ``d⁻ ≤ d⁺``
        (already hard, or duplicates with ``d⁻ = 0``) are returned unchanged.
        Gradients flow to ``anchor``, ``positive`` and ``negative``.
    """
    anchor, positive, negative = (ops.convert_to_tensor(t, "float32") for t in (anchor, positive, negative))
    d_pos = _norm(positive - anchor)
    return _pull_toward(anchor, d_pos, negative, _norm(negative - anchor), hardness_factor(alpha, j_avg))


def _pull_toward(anchor, d_pos, negative, d_neg, lam, allowed=None):
    """Eq. (1) given the distances ``d⁺`` and ``d⁻``; ``allowed`` (bool) rules rows out of pulling."""
    pull = d_neg > d_pos
    if allowed is not None:
        pull = ops.logical_and(pull, allowed)
    safe_d_neg = ops.where(pull, d_neg, 1.0)
    scale = (d_pos + lam * (d_neg - d_pos)) / safe_d_neg
    pulled = anchor + scale * (negative - anchor)
    return ops.where(pull, pulled, negative + ops.zeros_like(pulled))


def pull_npair_negatives(anchors, positives, j_avg, alpha):
    """Eq. (1) on an N-pair batch: every other pair's positive is a negative.

    Args:
        anchors: ``a_1..a_N``, float ``[N, D]``.
        positives: ``p_1..p_N``, float ``[N, D]`` (same classes, same order).
        j_avg: ``J_avg``; alpha: ``α``.

    Returns:
        ``[N, N, D]``: row ``i``, column ``j`` is ``p_j`` pulled toward ``a_i``
        (with ``d⁺ = ‖p_i − a_i‖``); the diagonal ``j = i`` is ``p_i`` itself.
    """
    a = ops.expand_dims(anchors, 1)  # [N, 1, D]
    p_own = ops.expand_dims(positives, 1)  # [N, 1, D]
    p_all = ops.expand_dims(positives, 0)  # [1, N, D]
    return pull_negatives(a, p_own, p_all, j_avg, alpha)


def pull_pair_negatives(embeddings, labels, j_avg, alpha):
    """Eq. (1) on any labelled batch: every anchor–negative pair ``(i, j)``, ``y_i ≠ y_j``.

    HDML beyond tuples (docs/hdml.md): sample ``z_j`` is pulled toward anchor
    ``z_i`` when it is a negative of ``i`` (``y_j ≠ y_i``), with ``d⁺_i`` the
    distance from ``z_i`` to its farthest positive (``max_{k ≠ i, y_k = y_i}
    ‖z_k − z_i‖``), so that no synthetic negative comes closer to its anchor
    than any of the anchor's positives. A positive (or ``j = i``), and every
    ``z_j`` seen from an anchor without a positive in the batch, is returned
    unchanged. On an N-pair batch the anchor ``a_i``'s only positive is
    ``p_i``, so entry ``(i, N + j)`` is `pull_npair_negatives`' ``(i, j)``.

    Args:
        embeddings: ``z``, float ``[B, D]``.
        labels: int ``[B]``.
        j_avg: ``J_avg`` (scalar, no gradient); alpha: ``α``.

    Returns:
        ``[B, B, D]``: row ``i``, column ``j`` is ``z_j`` pulled toward ``z_i``
        (or ``z_j``). O(B² D) memory, no ``[B, B, B]`` tensor. Gradients flow
        to every embedding (``d⁺_i`` to the farthest positive).
    """
    z = ops.convert_to_tensor(embeddings, "float32")
    labels = ops.reshape(ops.convert_to_tensor(labels), (-1,))
    anchor = ops.expand_dims(z, 1)  # [B, 1, D]
    others = ops.expand_dims(z, 0)  # [1, B, D]
    d = _norm(others - anchor)  # [B, B, 1]: ‖z_j − z_i‖
    positive, negative = (ops.expand_dims(mask, -1) for mask in label_masks(labels))  # [B, B, 1]
    # d⁺_i: the farthest positive (distances are >= 0, so -1 marks "none").
    d_pos = ops.max(ops.where(positive, d, -1.0), axis=1, keepdims=True)  # [B, 1, 1]
    allowed = ops.logical_and(negative, d_pos >= 0.0)
    return _pull_toward(anchor, d_pos, others, d, hardness_factor(alpha, j_avg), allowed)


def reconstruction_loss(features, reconstructed):
    """``J_recon = Σ (y − y')²`` over the batch and the features (HDML's authors), in float32.

    Under a mixed-precision policy the generator's output ``y'`` is float16 / bfloat16 while the
    features are float32: both are cast, and the sum is float32.
    """
    return ops.sum(ops.square(ops.cast(features, "float32") - ops.cast(reconstructed, "float32")))


def cross_entropy_rows(logits, labels, num_classes):
    """Softmax cross-entropy of each row of ``logits [M, C]`` against int ``labels [M]``: ``[M]``.

    Built on a one-hot target, so a label outside ``[0, C)`` contributes
    ``logsumexp(logits)`` (finite) instead of the NaN that a gather gives on GPUs. Computed in
    float32 whatever the logits' dtype (a mixed-precision classifier's are float16 / bfloat16).
    """
    logits = ops.cast(logits, "float32")
    target = ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype=logits.dtype)
    log_probs = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
    return -ops.sum(target * log_probs, axis=-1)


def soft_cross_entropy(logits, labels, num_classes):
    """Mean softmax cross-entropy of ``logits [M, C]`` against int ``labels [M]`` (see `cross_entropy_rows`)."""
    return ops.mean(cross_entropy_rows(logits, labels, num_classes))


def generator_loss(j_recon, j_soft, soft_weight=0.5, softmax_factor=1e4):
    """``J_gen = (1 − λ) J_recon + λ · c_soft · J_soft`` (λ = ``soft_weight``)."""
    return (1.0 - soft_weight) * j_recon + soft_weight * softmax_factor * j_soft


def metric_objective(j_m, j_syn, w):
    """Eq. (2): ``J_metric = w · J_m + (1 − w) · J_syn``."""
    return w * j_m + (1.0 - w) * j_syn


def synthesis_layout(loss, convention="kerasml"):
    """The batch layout HDML synthesises for ``loss``: the loss's ``hdml_layout``.

    ``"npair"`` (N² tuples), ``"triplet"`` (one negative per triplet) or ``"any"``
    (every anchor–negative pair of any labelled batch, `pull_pair_negatives`).

    Args:
        loss: the base loss.
        convention: the HDML convention's name; the loss must implement its
            synthetic loss (``loss.hdml_conventions``). Defaults to ``"kerasml"``.

    Raises:
        ValueError: for a loss whose negatives HDML cannot synthesise, saying why
            and which losses it supports (from `kerasml.losses.catalog`), or for a
            convention the loss has no synthetic form for.
    """
    if isinstance(loss, losses.MetricLoss):
        problem = loss.hdml_problem()
    else:
        problem = f"{type(loss).__name__} is not a kerasml loss"
    if problem is None:
        accepted = loss.hdml_conventions
        if convention not in accepted:
            raise ValueError(
                f"Invalid value for argument `convention`: {type(loss).__name__} takes HDML's "
                f"convention(s) {', '.join(repr(c) for c in accepted)} only. Received: convention={convention!r}. "
                f"{loss.hdml_convention_note} Use convention='kerasml'."
            )
        return loss.hdml_layout
    supported = "; ".join(f"{entry.name} ({entry.hdml})" for entry in losses.catalog() if entry.hdml)
    raise ValueError(
        f"HDML synthesises hard negatives for these losses only: {supported}. {problem}. "
        "Use one of those, or hdml=False for a plain model."
    )
