"""HDML with pair-based losses (contrastive, multi-similarity, lifted, circle) against `hdml_pairs_reference`.

The synthetic negatives of every anchor–negative pair (eq. 1 with the anchor's farthest positive),
each loss's ``J_syn`` on them (values and gradients), every term of one `HDMLModel` step, degenerate
batches, a few training steps on the active backend, and the spec.
"""

import math

import hdml_pairs_reference as pref
import hdml_reference as ref
import keras
import numpy as np
import pytest
from helpers import digits_npair_batches, tiny_backbone, value_and_grad
from keras import ops

import kerasml
from kerasml.hdml import TERMS, HDMLModel
from kerasml.hdml import ops as H
from kerasml.spec import SpecError, parse_spec

ALPHA, BETA = 90.0, 5e3
# The losses and the arguments both sides use (circle's γ small enough for finite differences).
LOSSES = {
    "contrastive": ({"margin": 1.5}, {"margin": 1.5}),
    "multi_similarity": (
        {"alpha": 2.0, "beta": 10.0, "base": 0.5},
        {"alpha": 2.0, "beta": 10.0, "base": 0.5, "epsilon": 0.1},
    ),
    "lifted": ({"margin": 1.0}, {"margin": 1.0}),
    "circle": ({"m": 0.25, "gamma": 8.0}, {"m": 0.25, "gamma": 8.0}),
}


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _f32(x):
    return np.asarray(x, dtype=np.float32)


def _loss(name):
    return kerasml.losses.get({"type": name, **LOSSES[name][0]})


def _batch(rng, dim=4):
    """Embeddings of 3 classes of sizes 3, 3, 2 plus a singleton class; both branches of eq. (1)."""
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 3], dtype=np.int32)
    centres = {c: 2.0 * rng.normal(size=dim) for c in range(4)}
    z = np.array([centres[c] + 0.4 * rng.normal(size=dim) for c in labels])
    z[5] = z[0] + 0.05 * rng.normal(size=dim)  # a negative of 0 nearer than its positives: already hard
    return _f32(z), labels


# ------------------------------------------------------------------ eq. (1) on pairs
@pytest.mark.parametrize("j_avg", [0.0, 90.0, 1e30])
def test_pull_pair_negatives_matches_reference(j_avg):
    z, labels = _batch(np.random.default_rng(0))
    got = _np(H.pull_pair_negatives(z, labels, j_avg, ALPHA))
    expected, pulled = pref.pull_pair_negatives(z, labels, j_avg, ALPHA)
    assert got.shape == (len(z), len(z), z.shape[1])
    negative = labels[:, None] != labels[None, :]
    if j_avg < 1e30:
        assert pulled.any() and (negative & ~pulled).any()  # both branches of eq. (1)
    assert not pulled[8].any() and not pulled[~negative].any()  # no positive / not a negative: kept
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    for i, j in zip(*np.nonzero(~pulled)):
        np.testing.assert_array_equal(got[i, j], z[j])
    for i, j in zip(*np.nonzero(pulled)):  # never closer than the anchor's farthest positive
        k = pref.farthest_positive(z, labels, i)
        d_pos, d_neg, d_new = (np.linalg.norm(v - z[i]) for v in (z[k], z[j], got[i, j]))
        assert d_pos * (1 - 1e-5) <= d_new <= d_neg * (1 + 1e-5)


def test_pull_pair_negatives_on_an_npair_batch_equals_the_npair_tuples():
    """An N-pair anchor's only positive is its pair: its negatives p_j are pulled exactly as in N-pair HDML."""
    rng = np.random.default_rng(1)
    count = 4
    anchors = rng.normal(size=(count, 3))
    z = _f32(np.concatenate([anchors, anchors + rng.normal(size=(count, 3)) * 0.5]))
    labels = np.r_[np.arange(count), np.arange(count)].astype(np.int32)
    grid = _np(H.pull_pair_negatives(z, labels, 40.0, ALPHA))
    tuples = _np(H.pull_npair_negatives(z[:count], z[count:], 40.0, ALPHA))
    np.testing.assert_allclose(grid[:count, count:], tuples, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ J_syn
@pytest.mark.parametrize("name", list(LOSSES))
def test_synthetic_loss_matches_reference(name):
    rng = np.random.default_rng(2)
    _, labels = _batch(rng)
    count = len(labels)
    anchors = _f32(rng.normal(size=(count, 4)))
    tuples = _f32(rng.normal(size=(count, count, 4)))
    got = float(_np(_loss(name).synthetic_loss(labels, anchors, tuples)))
    expected = pref.loss_value(name, labels, anchors, tuples, LOSSES[name][1])
    assert expected > 0
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # on the real batch's own grid (tuples[i, j] = z_j) J_syn is the loss itself
    z = anchors
    real_grid = np.broadcast_to(z[None], (count, count, 4))
    assert float(_np(_loss(name).synthetic_loss(labels, z, real_grid))) == pytest.approx(
        float(_np(_loss(name)(labels, z))), rel=1e-4, abs=1e-6
    )


def _composite_reference(name, labels, j_avg, x):
    grid, _ = pref.pull_pair_negatives(x, labels, j_avg, ALPHA)
    return pref.loss_value(name, labels, x, grid, LOSSES[name][1])


@pytest.mark.parametrize("name", ["contrastive", "multi_similarity", "lifted"])
def test_synthetic_loss_through_the_pulling_value_and_gradient(name):
    """``J_syn(z, pull(z))`` (generator and projector as identity): value and gradient w.r.t. ``z``."""
    z, labels = _batch(np.random.default_rng(3))
    j_avg = 60.0
    value, grad = value_and_grad(
        lambda t: _loss(name).synthetic_loss(labels, t, H.pull_pair_negatives(t, labels, j_avg, ALPHA)), z
    )
    assert value == pytest.approx(_composite_reference(name, labels, j_avg, z), rel=1e-5)
    x, eps = z.astype(np.float64), 1e-6
    expected = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += eps
        down[index] -= eps
        expected[index] = (
            _composite_reference(name, labels, j_avg, up) - _composite_reference(name, labels, j_avg, down)
        ) / (2 * eps)
    assert np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(grad, expected, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("name", list(LOSSES))
def test_degenerate_pairs_stay_finite(name):
    """An anchor equal to a negative (d⁻ = 0), all embeddings equal, J_avg = 0: finite values and gradients."""
    z, labels = _batch(np.random.default_rng(4))
    z[1] = z[0]  # anchor 0 equals its negative 1
    for x, j_avg in ((z, 0.0), (z, 1e-30), (np.repeat(z[:1], len(z), axis=0), 0.0)):
        value, grad = value_and_grad(
            lambda t, j_avg=j_avg: _loss(name).synthetic_loss(
                labels, t, H.pull_pair_negatives(t, labels, j_avg, ALPHA)
            ),
            x,
        )
        assert math.isfinite(value) and np.all(np.isfinite(grad))
        grid = _np(H.pull_pair_negatives(x, labels, j_avg, ALPHA))
        np.testing.assert_array_equal(grid[0, 1], x[1])  # d⁻ = 0: kept


def test_authors_convention_is_refused_for_pair_losses():
    loss = _loss("multi_similarity")
    assert loss.hdml_layout == "any" and loss.hdml_conventions == ("kerasml",)
    with pytest.raises(ValueError, match=r"N-pair and triplet batches only.*'kerasml'"):
        loss.synthetic_loss(np.zeros(2, "int32"), np.zeros((2, 3)), np.zeros((2, 2, 3)), convention="authors")
    with pytest.raises(ValueError, match=r"argument `convention`.*CircleLoss.*convention='kerasml'"):
        HDMLModel(tiny_backbone(), num_classes=10, loss="circle", convention="authors")


# ------------------------------------------------------------------ one HDMLModel step
FEATURES, EMBEDDING, CLASSES, UNITS = 10, 4, 5, 8


def _step_model(name, j_avg, j_gen, seed=0):
    backbone = keras.Sequential([keras.Input((6,)), keras.layers.Dense(FEATURES, name="feat")], name="backbone")
    model = HDMLModel(
        backbone,
        embedding_dim=EMBEDDING,
        loss=_loss(name),
        num_classes=CLASSES,
        generator_units=UNITS,
        alpha=ALPHA,
        beta=BETA,
        block_size=2,
    )
    rng = np.random.default_rng(seed)
    state = {"j_avg/value": j_avg, "j_gen_mean/value": j_gen}
    for variable in model.weights:
        leaf, shape = variable.path.split("/")[-1], tuple(variable.shape)
        if variable.path in state:
            value = np.full(shape, state[variable.path])
        elif leaf in ("total", "count"):
            value = np.zeros(shape)
        elif leaf in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, size=shape)
        else:
            value = rng.normal(0.0, 0.6, size=shape)
        variable.assign(_f32(value))
    g = model.generator
    params = {
        "projector": {k: _np(getattr(model.projector, k)) for k in ("gamma", "beta", "kernel", "bias")},
        "generator": {
            k: _np(getattr(g, k))
            for k in ("hidden_kernel", "hidden_bias", "gamma", "beta", "output_kernel", "output_bias")
        },
        "classifier": {"kernel": _np(model.classifier.kernel), "bias": _np(model.classifier.bias)},
    }
    layer = backbone.get_layer("feat")
    return model, params, (_np(layer.kernel), _np(layer.bias))


# The step's plumbing is the same for every pair loss (each J_syn: test_synthetic_loss_matches_reference);
# multi-similarity (its miner on the synthetic matrix) and lifted (rows i and j in one term) cover it.
@pytest.mark.parametrize("name", ["multi_similarity", "lifted"])
def test_hdml_step_terms_match_reference(name):
    j_avg, j_gen = 75.0, 5e3
    model, params, (kernel, bias) = _step_model(name, j_avg, j_gen)
    rng = np.random.default_rng(5)
    labels = np.array([0, 1, 2, 0, 1, 2, 3], dtype=np.int32)
    x = _f32(rng.normal(size=(len(labels), 6)))
    expected = pref.pair_hdml_step(
        ref.dense(x, kernel, bias),
        labels,
        params,
        name,
        LOSSES[name][1],
        alpha=ALPHA,
        beta=BETA,
        j_avg=j_avg,
        j_gen=j_gen,
    )
    mask, negative = expected["pulled_mask"], labels[:, None] != labels[None, :]
    assert mask.any() and (negative & ~mask).any()
    y_pred = model(x, training=True)
    total = model.compute_loss(x=x, y=labels, y_pred=y_pred, training=True)
    np.testing.assert_allclose(_np(y_pred), expected["z"], rtol=1e-4, atol=1e-5)
    got = {term: float(_np(model.term_trackers[term].result())) for term in TERMS}
    got["total"] = float(_np(total))
    assert 0.05 < expected["w"] < 0.95 and expected["J_syn"] > 0
    for term in (*TERMS, "total"):
        assert got[term] == pytest.approx(expected[term], rel=2e-4, abs=1e-5), (term, got[term], expected[term])


# ------------------------------------------------------------------ training
# Each loss trains with one degenerate condition (an all-identical batch is `test_degenerate_pairs_stay_finite`'s).
@pytest.mark.parametrize(
    ("name", "case"),
    [
        ("contrastive", "duplicate_across_classes"),
        ("multi_similarity", "plain"),
        ("lifted", "j_avg_zero"),
        ("circle", "j_gen_zero"),
    ],
)
def test_hdml_model_trains_finite(name, case):
    rng = np.random.default_rng(6)
    x, y = digits_npair_batches(rng, steps=3, pairs=4)
    if case == "duplicate_across_classes":
        x[1::8] = x[0::8]  # samples 0 and 1 of every batch: one image, two classes
    model = HDMLModel(tiny_backbone(), embedding_dim=6, num_classes=10, generator_units=16, block_size=2, loss=name)
    if case == "j_avg_zero":
        model.augmentation.j_avg.value.assign(0.0)
    if case == "j_gen_zero":
        model.j_gen_mean.value.assign(0.0)
    model.compile()
    before = [np.array(_np(v)) for v in model.trainable_variables]
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    assert int(_np(model.optimizer.iterations)) == 3
    for term, values in history.items():
        assert np.all(np.isfinite(values)), f"{term} is not finite"
    after = [_np(v) for v in model.trainable_variables]
    assert all(np.all(np.isfinite(v)) for v in after)
    assert any(not np.array_equal(a, b) for a, b in zip(after, before, strict=True))


# ------------------------------------------------------------------ spec and catalog
SPEC = {
    "experiment": {"name": "t"},
    "data": {"builtin": "digits"},
    "model": {"backbone": "small_cnn", "backbone_options": {"feature_dim": 16}, "hdml": True},
    "loss": {"type": "multi_similarity"},
    "train": {"batch_size": 8, "max_steps": 10},
    "eval": {"ks": [1, 2]},
}


def test_spec_with_hdml_and_a_pair_loss_validates_and_authors_is_a_problem():
    spec = parse_spec(SPEC, check_files=False)
    assert spec.model.hdml and spec.loss.type == "multi_similarity"
    with pytest.raises(SpecError) as info:
        parse_spec({**SPEC, "hdml": {"convention": "authors"}}, check_files=False)
    (problem,) = info.value.problems
    assert problem.key == "hdml.convention" and "N-pair and triplet" in problem.hint


def test_catalog_lists_hdml_for_the_pair_losses():
    entries = {entry.name: entry.hdml for entry in kerasml.losses.catalog()}
    for name in LOSSES:
        assert "anchor–negative pair" in entries[name], name
