"""kerasml's HDML against the independent float64 reference `hdml_reference` (written from HDML.md).

Covers the pure functions of `kerasml.hdml` (eq. (1) and its limits, the N-pair tiling, the factors
``λ₀`` and ``w``) and every loss term of one `HDMLModel` training step, on the active backend.
"""

import math

import hdml_reference as ref
import keras
import numpy as np
import pytest
from helpers import value_and_grad
from keras import ops

import kerasml
from kerasml.hdml import TERMS, HDMLModel
from kerasml.hdml import ops as H

ALPHA = 90.0
BETA = 5e3


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _f32(x):
    return np.asarray(x, dtype=np.float32)


# ----------------------------------------------------------------- eq. (1) data
def _triplet_rows(rng, dim=5):
    """Rows of (anchor, positive, negative) covering both branches of eq. (1) and the degenerate cases.

    Returns float32 ``a, p, n`` and the indices of the rows that are safely away from the branch
    boundary (the others sit on it by construction).
    """
    a, p, n = [], [], []
    for k in range(8):  # alternating: pulled (positive close, negative far) / already hard
        anchor = rng.normal(size=dim)
        near, far = rng.normal(size=dim), rng.normal(size=dim)
        near, far = 0.3 * near / np.linalg.norm(near), 2.0 * far / np.linalg.norm(far)
        a.append(anchor)
        p.append(anchor + (near if k % 2 == 0 else far))
        n.append(anchor + (far if k % 2 == 0 else near))
    smooth = list(range(8))
    anchor = rng.normal(size=dim)
    a.append(anchor), p.append(anchor + rng.normal(size=dim)), n.append(anchor.copy())  # duplicate: d⁻ = 0
    smooth.append(len(a) - 1)
    anchor = rng.normal(size=dim)
    a.append(anchor), p.append(anchor.copy()), n.append(anchor + rng.normal(size=dim))  # d⁺ = 0, pulled
    smooth.append(len(a) - 1)
    anchor, other = rng.normal(size=dim), rng.normal(size=dim)
    a.append(anchor), p.append(other), n.append(other.copy())  # negative == positive: d⁻ = d⁺, kept
    anchor = rng.normal(size=dim)
    a.append(anchor), p.append(anchor.copy()), n.append(anchor.copy())  # all three equal: kept
    return _f32(a), _f32(p), _f32(n), smooth


def _t(x):
    return ops.convert_to_tensor(_f32(x))


def _pull(a, p, n, j_avg):
    return _np(H.pull_negatives(_t(a), _t(p), _t(n), j_avg, ALPHA))


@pytest.mark.parametrize("j_avg", [2.0, 90.0, 500.0])
def test_pull_negatives_matches_reference_and_keeps_hard_rows_exactly(j_avg):
    a, p, n, _ = _triplet_rows(np.random.default_rng(0))
    got = _pull(a, p, n, j_avg)
    expected, pulled = ref.pull_negatives(a, p, n, j_avg, ALPHA)
    assert got.shape == n.shape and got.dtype == np.float32
    assert pulled.any() and (~pulled).any()
    assert pulled.tolist() == [True, False] * 4 + [False, True, False, False]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # rows with d⁻ <= d⁺ (incl. d⁻ = 0 duplicates, d⁻ = d⁺, all equal) come back bit for bit
    np.testing.assert_array_equal(got[~pulled], n[~pulled])
    # a pulled negative lies between the positive's distance and where it was, on the ray a → n
    for i in np.flatnonzero(pulled):
        d_pos, d_neg, d_new = (float(np.linalg.norm(v - a[i])) for v in (p[i], n[i], got[i]))
        assert d_pos * (1 - 1e-5) <= d_new <= d_neg * (1 + 1e-5)


@pytest.mark.parametrize("j_avg", [1e30, np.inf])
def test_pull_negatives_infinite_j_avg_pulls_nothing(j_avg):
    a, p, n, _ = _triplet_rows(np.random.default_rng(1))
    got = _pull(a, p, n, j_avg)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, n, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, ref.pull_negatives(a, p, n, j_avg, ALPHA)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("j_avg", [0.0, 1e-30])
def test_pull_negatives_zero_j_avg_pulls_to_the_positive_distance(j_avg):
    a, p, n, _ = _triplet_rows(np.random.default_rng(2))
    got = _pull(a, p, n, j_avg)
    assert np.all(np.isfinite(got))
    expected, pulled = ref.pull_negatives(a, p, n, j_avg, ALPHA)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[~pulled], n[~pulled])
    for i in np.flatnonzero(pulled):
        a64, p64, n64, g64 = (np.float64(v[i]) for v in (a, p, n, got))
        d_pos = np.linalg.norm(p64 - a64)
        step = g64 - a64
        assert np.linalg.norm(step) == pytest.approx(d_pos, rel=1e-5, abs=1e-6)
        if d_pos > 0:  # same direction as n − a
            unit = (n64 - a64) / np.linalg.norm(n64 - a64)
            np.testing.assert_allclose(step / np.linalg.norm(step), unit, atol=1e-5)
        else:  # d⁺ = 0: pulled onto the anchor
            np.testing.assert_allclose(g64, a64, atol=1e-6)


def _reference_gradient(a, p, n, weights, j_avg, eps=1e-6):
    """Central differences of ``Σ weights · n̂`` of the float64 reference w.r.t. ``[a; p; n]``."""
    x = np.concatenate([a, p, n]).astype(np.float64)
    rows = len(a)

    def value(v):
        pulled, _ = ref.pull_negatives(v[:rows], v[rows : 2 * rows], v[2 * rows :], j_avg, ALPHA)
        return float(np.sum(weights * pulled))

    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += eps
        down[index] -= eps
        grad[index] = (value(up) - value(down)) / (2 * eps)
    return grad


@pytest.mark.parametrize("j_avg", [0.0, 90.0])
def test_pull_negatives_gradients_finite_and_match_reference(j_avg):
    rng = np.random.default_rng(3)
    a, p, n, smooth = _triplet_rows(rng)
    rows = len(a)
    weights = rng.normal(size=a.shape)
    x = np.concatenate([a, p, n])

    def fn(t):
        pulled = H.pull_negatives(t[:rows], t[rows : 2 * rows], t[2 * rows :], j_avg, ALPHA)
        return ops.sum(ops.convert_to_tensor(_f32(weights)) * pulled)

    value, grad = value_and_grad(fn, x)
    assert math.isfinite(value) and np.all(np.isfinite(grad))
    expected = _reference_gradient(a, p, n, weights, j_avg)
    # compare the rows where the map is differentiable (the boundary rows only need to be finite)
    idx = np.array(smooth)
    for block in range(3):
        np.testing.assert_allclose(
            grad[block * rows + idx],
            expected[block * rows + idx],
            rtol=2e-3,
            atol=2e-4,
            err_msg=f"gradient w.r.t. {'apn'[block]}",
        )
    # a kept duplicate (d⁻ = 0) passes its negative's gradient straight through
    dup = 8
    np.testing.assert_allclose(grad[2 * rows + dup], weights[dup], rtol=1e-6)
    np.testing.assert_array_equal(grad[dup], 0.0)


# ------------------------------------------------------------------ N-pair tiling
@pytest.mark.parametrize("j_avg", [0.0, 90.0, 1e30])
def test_pull_npair_negatives_tiles_every_pair(j_avg):
    rng = np.random.default_rng(4)
    count, dim = 5, 4
    anchors = rng.normal(size=(count, dim))
    positives = anchors + rng.normal(size=(count, dim)) * np.array([[0.2], [2.0], [0.5], [1.0], [0.1]])
    positives[3] = anchors[1] + 0.1 * rng.normal(size=dim)  # p_3 is close to a_1: (1, 3) stays
    anchors, positives = _f32(anchors), _f32(positives)
    got = _np(H.pull_npair_negatives(_t(anchors), _t(positives), j_avg, ALPHA))
    expected, pulled = ref.pull_npair_negatives(anchors, positives, j_avg, ALPHA)
    assert got.shape == (count, count, dim)
    off = ~np.eye(count, dtype=bool)
    assert pulled[off].any() and (~pulled[off]).any()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    for i in range(count):
        np.testing.assert_array_equal(got[i, i], positives[i])
        for j in range(count):
            if not pulled[i, j]:
                np.testing.assert_array_equal(got[i, j], positives[j])
            # entry (i, j) is the triplet rule on (a_i, p_i, p_j)
            row = _pull(anchors[i : i + 1], positives[i : i + 1], positives[j : j + 1], j_avg)[0]
            np.testing.assert_allclose(got[i, j], row, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ factors
J_GRID = [0.0, 1e-30, 1e-12, 1e-3, 1.0, 2.0, 90.0, 5e3, 1e6, 1e30, np.inf]


@pytest.mark.parametrize(
    "fn,ref_fn,c", [(H.hardness_factor, ref.hardness_factor, ALPHA), (H.synthetic_weight, ref.synthetic_weight, BETA)]
)
def test_factors_limits_and_values(fn, ref_fn, c):
    got = [float(_np(fn(c, j))) for j in J_GRID]
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in got)
    assert got[0] == 0.0 and got[1] == 0.0
    assert got[-2] == 1.0 and got[-1] == 1.0
    for j, value in zip(J_GRID, got, strict=True):
        assert value == pytest.approx(ref_fn(c, j), rel=2e-5, abs=1e-30), j  # float32 exp of a rounded argument
    assert float(_np(fn(c, 1e6))) == pytest.approx(math.exp(-c / 1e6), rel=1e-6)


def test_factors_at_the_models_start():
    model = _build("npair", 0.0, assign=False)
    assert float(_np(model.augmentation.hardness())) == pytest.approx(math.exp(-ALPHA / 1e6), rel=1e-6)
    assert float(_np(H.synthetic_weight(BETA, model.j_gen_mean.value))) == pytest.approx(
        math.exp(-BETA / 1e6), rel=1e-6
    )


# ------------------------------------------------------------ one HDML step
FEATURES, EMBEDDING, CLASSES, UNITS = 10, 4, 7, 8
COUNT = 4  # N pairs / n triplets


def _build(layout, decay, block_size=2, j_avg=75.0, j_gen=5e3, seed=0, assign=True):
    loss = (
        kerasml.losses.NPairLoss(l2_reg=0.01)
        if layout == "npair"
        else kerasml.losses.TripletLoss(mining="structured", margin=1.0)
    )
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(FEATURES, name="feat")], name="backbone")
    model = HDMLModel(
        backbone,
        embedding_dim=EMBEDDING,
        loss=loss,
        num_classes=CLASSES,
        generator_units=UNITS,
        alpha=ALPHA,
        beta=BETA,
        block_size=block_size,
        weight_decay=decay,
    )
    if not assign:
        return model
    rng = np.random.default_rng(seed)
    state = {"j_avg/value": j_avg, "j_gen_mean/value": j_gen}
    for variable in model.weights:
        name = variable.path.split("/")[-1]
        shape = tuple(variable.shape)
        if variable.path in state:
            value = np.full(shape, state[variable.path])
        elif name in ("total", "count"):
            value = np.zeros(shape)
        elif name in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, size=shape)
        else:  # kernels, biases, beta, moving_mean
            value = rng.normal(0.0, 0.6, size=shape)
        variable.assign(_f32(value))
    return model


def _params(model):
    g = model.generator
    return {
        "backbone": {
            "kernel": _np(model.backbone.get_layer("feat").kernel),
            "bias": _np(model.backbone.get_layer("feat").bias),
        },
        "projector": {k: _np(getattr(model.projector, k)) for k in ("gamma", "beta", "kernel", "bias")},
        "generator": {
            k: _np(getattr(g, k))
            for k in ("hidden_kernel", "hidden_bias", "gamma", "beta", "output_kernel", "output_bias")
        },
        "classifier": {"kernel": _np(model.classifier.kernel), "bias": _np(model.classifier.bias)},
    }


def _batch(layout, rng):
    """Inputs whose embeddings have pulled and already-hard negatives, and their labels."""
    anchors = rng.normal(size=(COUNT, 6))
    near = 0.15 * rng.normal(size=(COUNT, 6))
    far = 1.5 * rng.normal(size=(COUNT, 6))
    if layout == "npair":
        positives = anchors + far
        positives[1] = anchors[0] + near[1]  # p_1 near a_0: (0, 1) is already hard
        positives[2] = anchors[2] + near[2]  # row 2: every other p_j is pulled
        x = np.concatenate([anchors, positives])
        labels = np.array([3, 0, 6, 2] * 2)
    else:
        even = (np.arange(COUNT) % 2 == 0)[:, None]
        positives = anchors + np.where(even, near, far)
        negatives = anchors + np.where(even, far, near)
        x = np.concatenate([anchors, positives, negatives])
        labels = np.array([1, 4, 0, 5, 1, 4, 0, 5, 2, 6, 3, 1])
    return _f32(x), labels.astype(np.int32)


def _step(layout, decay, block_size=2, j_avg=75.0, j_gen=5e3):
    """Build, assign, run one step; returns (model, got terms, reference, state before the step)."""
    model = _build(layout, decay, block_size=block_size, j_avg=j_avg, j_gen=j_gen)
    params = _params(model)
    before = {v.path: _np(v).copy() for v in model.non_trainable_weights}
    x, labels = _batch(layout, np.random.default_rng(3))

    features = ref.dense(x, params["backbone"]["kernel"], params["backbone"]["bias"])
    decay_term = ref.weight_decay(decay, [params["backbone"]["kernel"], params["projector"]["kernel"]])
    expected = ref.hdml_step(
        features,
        labels,
        params,
        layout,
        alpha=ALPHA,
        beta=BETA,
        j_avg=j_avg,
        j_gen=j_gen,
        l2_reg=0.01,
        margin=1.0,
        decay=decay_term,
    )
    # the batch exercises both branches of eq. (1), away from the boundary
    mask = expected["pulled_mask"]
    candidates = mask[~np.eye(COUNT, dtype=bool)] if layout == "npair" else mask
    assert candidates.any() and (~candidates).any(), mask
    z = expected["z"]
    if layout == "npair":
        a, p = z[:COUNT], z[COUNT:]
        margins = [ref.branch_margin(a[i], p[i], p[j]) for i in range(COUNT) for j in range(COUNT) if i != j]
    else:
        margins = [ref.branch_margin(z[i], z[COUNT + i], z[2 * COUNT + i]) for i in range(COUNT)]
    assert min(margins) > 1e-3

    y_pred = model(x, training=True)
    total = model.compute_loss(x=x, y=labels, y_pred=y_pred, training=True)
    got = {name: float(_np(model.term_trackers[name].result())) for name in TERMS}
    got["total"] = float(_np(total))
    got["z"] = _np(y_pred)
    return model, got, expected, before


STEP_CASES = [
    pytest.param("npair", 0.0, 75.0, id="npair-lambda0.30"),
    pytest.param("npair", 0.05, 2.0, id="npair-decay-lambda0~0"),
    pytest.param("triplet", 0.0, 75.0, id="triplet-lambda0.30"),
    pytest.param("triplet", 0.05, 2.0, id="triplet-decay-lambda0~0"),
]


@pytest.mark.parametrize("layout,decay,j_avg", STEP_CASES)
def test_hdml_step_terms_match_reference(layout, decay, j_avg):
    model, got, expected, _ = _step(layout, decay, j_avg=j_avg)
    np.testing.assert_allclose(got["z"], expected["z"], rtol=1e-4, atol=1e-5)
    assert 0.05 < expected["w"] < 0.95  # both sides of eq. (2) matter
    for name in (*TERMS, "total"):
        assert math.isfinite(got[name]), name
        assert got[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), (
            f"{name}: kerasml {got[name]!r}, reference {expected[name]!r}"
        )
    assert expected["J_syn"] > 0 and expected["J_soft"] > 0 and expected["J_recon"] > 0
    # block_size = 2: the block is half full; J_avg and J̄_gen keep their values until it closes
    assert float(_np(model.augmentation.j_avg.value)) == pytest.approx(j_avg, rel=1e-7)
    assert float(_np(model.augmentation.j_avg.count)) == 1.0
    assert float(_np(model.augmentation.j_avg.total)) == pytest.approx(expected["J_m"], rel=1e-4)
    assert float(_np(model.j_gen_mean.value)) == pytest.approx(5e3, rel=1e-7)
    assert float(_np(model.j_gen_mean.total)) == pytest.approx(expected["J_gen"], rel=1e-4)


@pytest.mark.parametrize("layout", ["npair", "triplet"])
def test_hdml_step_feeds_block_means(layout):
    model, got, expected, _ = _step(layout, 0.0, block_size=1)
    # J_avg averages the unweighted base loss J_m (HDMLModel's docstring); J̄_gen the step's J_gen
    assert float(_np(model.augmentation.j_avg.value)) == pytest.approx(expected["J_m"], rel=1e-4)
    assert float(_np(model.j_gen_mean.value)) == pytest.approx(expected["J_gen"], rel=1e-4)
    for mean in (model.augmentation.j_avg, model.j_gen_mean):
        assert float(_np(mean.count)) == 0.0 and float(_np(mean.total)) == 0.0
    # the step used the values from before it
    assert got["w"] == pytest.approx(math.exp(-BETA / 5e3), rel=1e-6)


@pytest.mark.parametrize("layout", ["npair", "triplet"])
def test_hdml_step_moving_statistics_come_from_real_batches_only(layout):
    """The projector's averages move with the real batch only (synthetic_statistics="batch"), the
    generator's with the generator pass only (the metric pass leaves them alone)."""
    model, _, expected, before = _step(layout, 0.0)
    momentum = 0.99
    layers = ((model.projector, expected["projector_stats"]), (model.generator, expected["generator_stats"]))
    for layer, stats in layers:
        for attribute, batch_value in zip(("moving_mean", "moving_variance"), stats, strict=True):
            variable = getattr(layer, attribute)
            wanted = momentum * before[variable.path].astype(np.float64) + (1 - momentum) * batch_value
            np.testing.assert_allclose(_np(variable), wanted, rtol=1e-5, atol=1e-6, err_msg=variable.path)


def test_pull_negatives_accepts_numpy_inputs():
    a, p, n, _ = _triplet_rows(np.random.default_rng(5))
    np.testing.assert_array_equal(_np(H.pull_negatives(a, p, n, 90.0, ALPHA)), _pull(a, p, n, 90.0))
