"""The pair-based losses of issue 12 against the loop references of tests/reference_pairs.py.

MultiSimilarityLoss, CircleLoss, SupConLoss, NTXentLoss, TupletMarginLoss and
FastAPLoss: values (class and functional form, with and without miners and
distances) on several batch shapes, finite-difference gradients, degenerate
batches, 16-bit inputs with large class ids, configs and the registry, and a
compile/fit that lowers the loss, on the active backend.
"""

import doctest
import importlib
import math
import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reference as ref
import reference_pairs as rp
from helpers import random_labels, value_and_grad

from kerasml import losses
from kerasml.losses import distances, miners

RTOL, ATOL = 1e-4, 1e-5
GRAD_RTOL, GRAD_ATOL = 2e-2, 2e-3
DECISION_GAP = 1e-3


MARGIN_MINER = {"type": "pair_margin", "pos_margin": 0.6, "neg_margin": 0.2}


def _ms_pairs(labels, x, epsilon=0.1, distance="cosine"):
    return rp.multi_similarity_pairs(labels, rp.dissimilarity(x, distance), epsilon)


def _margin_pairs(labels, x):
    return rp.pair_margin(labels, rp.matrix(x, "cosine"), True, 0.6, 0.2)


def _fast_ap_gap(labels, x):
    return rp.fast_ap_gap(x)


# id -> (loss, functional form (labels, x) -> value, reference (labels, x) -> value, decision gap or None)
CASES = {
    "ms": (
        losses.MultiSimilarityLoss(),
        lambda y, x: losses.multi_similarity_loss(y, x),
        lambda y, x: rp.multi_similarity(y, x, pairs=_ms_pairs(y, x)[0]),
        lambda y, x: _ms_pairs(y, x)[1],
    ),
    "ms-all": (
        losses.MultiSimilarityLoss(alpha=2.0, beta=10.0, base=0.3, miner=None),
        lambda y, x: losses.multi_similarity_loss(y, x, 2.0, 10.0, 0.3, miner="all"),
        lambda y, x: rp.multi_similarity(y, x, 2.0, 10.0, 0.3),
        None,
    ),
    "ms-euclidean": (
        losses.MultiSimilarityLoss(alpha=2.0, beta=10.0, base=1.0, miner=None, distance="euclidean"),
        lambda y, x: losses.multi_similarity_loss(y, x, 2.0, 10.0, 1.0, None, "euclidean"),
        lambda y, x: rp.multi_similarity(y, x, 2.0, 10.0, 1.0, distance="euclidean"),
        None,
    ),
    "ms-pair-margin": (
        losses.MultiSimilarityLoss(miner=miners.PairMarginMiner(0.6, 0.2)),
        lambda y, x: losses.multi_similarity_loss(
            y, x, miner={"type": "pair_margin", "pos_margin": 0.6, "neg_margin": 0.2}
        ),
        lambda y, x: rp.multi_similarity(y, x, pairs=_margin_pairs(y, x)[0]),
        lambda y, x: _margin_pairs(y, x)[1],
    ),
    "circle": (
        losses.CircleLoss(),
        lambda y, x: losses.circle_loss(y, x),
        lambda y, x: rp.circle(y, x),
        None,
    ),
    "circle-small": (
        losses.CircleLoss(m=0.4, gamma=8.0),
        lambda y, x: losses.circle_loss(y, x, 0.4, 8.0),
        lambda y, x: rp.circle(y, x, 0.4, 8.0),
        None,
    ),
    "circle-ms-miner": (
        losses.CircleLoss(m=0.4, gamma=8.0, miner="multi_similarity"),
        lambda y, x: losses.circle_loss(y, x, 0.4, 8.0, miners.MultiSimilarityMiner()),
        lambda y, x: rp.circle(y, x, 0.4, 8.0, pairs=_ms_pairs(y, x)[0]),
        lambda y, x: _ms_pairs(y, x)[1],
    ),
    "supcon": (
        losses.SupConLoss(),
        lambda y, x: losses.supcon_loss(y, x),
        lambda y, x: rp.supcon(y, x),
        None,
    ),
    "supcon-ms-miner": (
        losses.SupConLoss(temperature=0.5, miner="multi_similarity"),
        lambda y, x: losses.supcon_loss(y, x, 0.5, "multi_similarity"),
        lambda y, x: rp.supcon(y, x, 0.5, pairs=_ms_pairs(y, x)[0]),
        lambda y, x: _ms_pairs(y, x)[1],
    ),
    "ntxent": (
        losses.NTXentLoss(),
        lambda y, x: losses.ntxent_loss(y, x),
        lambda y, x: rp.ntxent(y, x),
        None,
    ),
    "ntxent-ms-miner": (
        losses.NTXentLoss(temperature=0.5, miner="multi_similarity"),
        lambda y, x: losses.ntxent_loss(y, x, 0.5, "multi_similarity"),
        lambda y, x: rp.ntxent(y, x, 0.5, pairs=_ms_pairs(y, x)[0]),
        lambda y, x: _ms_pairs(y, x)[1],
    ),
    "tuplet": (
        losses.TupletMarginLoss(),
        lambda y, x: losses.tuplet_margin_loss(y, x),
        lambda y, x: rp.tuplet_margin(y, x),
        None,
    ),
    "tuplet-small": (
        losses.TupletMarginLoss(margin_degrees=10.0, scale=16.0),
        lambda y, x: losses.tuplet_margin_loss(y, x, 10.0, 16.0),
        lambda y, x: rp.tuplet_margin(y, x, 10.0, 16.0),
        None,
    ),
    "fast_ap": (
        losses.FastAPLoss(),
        lambda y, x: losses.fast_ap_loss(y, x),
        lambda y, x: rp.fast_ap(y, x),
        _fast_ap_gap,
    ),
    "fast_ap-4": (
        losses.FastAPLoss(bins=4),
        lambda y, x: losses.fast_ap_loss(y, x, bins=4),
        lambda y, x: rp.fast_ap(y, x, bins=4),
        lambda y, x: rp.fast_ap_gap(x, bins=4),
    ),
}
IDS = list(CASES)
SIZES = [(4, 2, 2), (12, 8, 3), (24, 64, 5)]


def draw(seed, b, d, classes, gap=None, spread=1.0):
    rng = np.random.default_rng(seed)
    for _ in range(500):
        labels = random_labels(rng, b, classes)
        x = (rng.normal(size=(b, d)) * spread / math.sqrt(d)).astype(np.float32)
        if gap is None or gap(labels, x) > DECISION_GAP:
            return labels, x
    raise AssertionError("could not draw a batch with clear decisions")


# ------------------------------------------------------------------- by hand


def test_references_by_hand():
    # Two classes at right angles, two samples each: S = 1 within, 0 across.
    labels = np.array([0, 0, 1, 1])
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    ms = 0.5 * math.log1p(math.exp(-1.0)) + math.log1p(2.0 * math.exp(-25.0)) / 50.0
    assert rp.multi_similarity(labels, x) == pytest.approx(ms, abs=1e-12)
    np.testing.assert_allclose(float(losses.MultiSimilarityLoss(miner=None)(labels, x)), ms, rtol=1e-6)
    # The MS miner keeps the positive (1 + 0.1 > min negative similarity... in D: -1 + 0.1 > 0? no):
    # with D = -S, positives need D_ap + 0.1 > min D_an = 0, i.e. -0.9 > 0: none; negatives need
    # D_an - 0.1 < max D_ap = -1: none. Nothing is hard: the loss is 0.
    assert float(losses.MultiSimilarityLoss()(labels, x)) == 0.0
    # Circle, m = 0.25, gamma = 1: a_p = 0.25, s_p - 0.75 = 0.25; a_n = 0.25, s_n - 0.25 = -0.25.
    circle = math.log1p(2.0 * math.exp(-0.0625) * math.exp(-0.0625))
    assert rp.circle(labels, x, 0.25, 1.0) == pytest.approx(circle, abs=1e-12)
    # FastAP: the positive at distance 0, the negatives at 2 (bin centres 0, 0.4, ..., 4): AP = 1.
    assert rp.fast_ap(labels, x) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(float(losses.FastAPLoss()(labels, x)), 0.0, atol=1e-6)
    # Reversed: positives opposite (distance 4), negatives at 2 (bin 5): h+ only at bin 10, H_10 = 3.
    # FastAP = h+_10 H+_10 / H_10 / 1 = 1 * 1 / 3 -> loss 2/3.
    y = np.array([0, 1, 1, 0])
    flipped = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [-1.0, 0.0]])
    assert rp.fast_ap(y, flipped) == pytest.approx(2.0 / 3.0, abs=1e-12)
    np.testing.assert_allclose(float(losses.FastAPLoss()(y, flipped)), 2.0 / 3.0, rtol=1e-5)
    # Tuplet with beta = 0: log(1 + exp(s (s_an - s_ap))) for each of the 4 pairs, s_an = 0, s_ap = 1.
    assert rp.tuplet_margin(labels, x, 0.0, 2.0) == pytest.approx(math.log1p(2.0 * math.exp(-2.0)), abs=1e-12)


# ------------------------------------------------------------------- values


@pytest.mark.parametrize("size", SIZES, ids=[f"B{b}-D{d}-C{c}" for b, d, c in SIZES])
@pytest.mark.parametrize("case", IDS)
def test_value_matches_reference(case, size):
    loss, function, reference, gap = CASES[case]
    b, d, c = size
    labels, x = draw(100 + b + d, b, d, c, gap)
    want = reference(labels, x)
    np.testing.assert_allclose(float(loss(labels, x)), want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(float(function(labels, x)), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", ["ms", "circle", "supcon", "ntxent", "tuplet", "fast_ap"])
@pytest.mark.parametrize("labels", [[3, 3, 3, 3, 3, 3], [0, 1, 2, 3, 4, 5]], ids=["one-class", "distinct"])
def test_value_on_degenerate_labels(case, labels):
    loss, _, reference, _ = CASES[case]
    labels = np.array(labels)
    x = np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32)
    want = reference(labels, x)
    value, grad = value_and_grad(lambda t: loss(labels, t), x)
    np.testing.assert_allclose(value, want, rtol=RTOL, atol=ATOL)
    assert np.all(np.isfinite(grad))
    if want == 0.0:
        np.testing.assert_allclose(grad, 0.0, atol=1e-6)


# ------------------------------------------------------------------- gradients


GRADIENT_CASES = ["ms", "ms-all", "ms-euclidean", "circle", "circle-small", "supcon", "ntxent", "tuplet", "fast_ap"]


@pytest.mark.parametrize("case", GRADIENT_CASES)
def test_gradient_matches_finite_differences(case):
    """Autodiff (float32) against central differences of the float64 reference.

    Circle holds its weights α at the evaluation point (the reference too); miners' selections
    are held (every decision at least DECISION_GAP from its boundary).
    """
    loss, _, reference, gap = CASES[case]
    labels, x = draw(7, 10, 4, 3, gap)
    x64 = x.astype(np.float64)
    if case.startswith("circle"):
        m, gamma = loss.m, loss.gamma

        def fixed(z):
            return rp.circle(labels, z, m, gamma, weights_at=x64)

    elif case == "ms":
        pairs, _ = _ms_pairs(labels, x)

        def fixed(z):
            return rp.multi_similarity(labels, z, pairs=pairs)

    else:

        def fixed(z):
            return reference(labels, z)

    value, grad = value_and_grad(lambda t: loss(labels, t), x)
    want = ref.numerical_gradient(fixed, x64, eps=1e-6 if case == "circle" else 1e-5)
    assert np.abs(want).max() > 5e-2, "test case has a vanishing reference gradient"
    np.testing.assert_allclose(value, fixed(x64), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(grad, want, rtol=GRAD_RTOL, atol=GRAD_ATOL * max(1.0, np.abs(want).max() / 10))


# ------------------------------------------------------------- numerics


DEFAULTS = ["ms", "ms-euclidean", "circle", "supcon", "ntxent", "tuplet", "fast_ap"]


@pytest.mark.parametrize("case", DEFAULTS)
@pytest.mark.parametrize("embeddings", ["identical", "zeros", "duplicate_pairs", "huge_norm", "tiny_norm"])
def test_degenerate_embeddings_are_finite(case, embeddings):
    loss = CASES[case][0]
    rng = np.random.default_rng(3)
    b, d = 12, 8
    labels = np.arange(b) % 3
    x = {
        "identical": np.tile(rng.normal(size=(1, d)), (b, 1)),
        "zeros": np.zeros((b, d)),
        "duplicate_pairs": np.concatenate([rng.normal(size=(b // 2, d))] * 2),
        "huge_norm": rng.normal(size=(b, d)) * 1e4,
        "tiny_norm": rng.normal(size=(b, d)) * 1e-20,
    }[embeddings].astype(np.float32)
    value, grad = value_and_grad(lambda t: loss(labels, t), x)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", DEFAULTS)
def test_low_precision_inputs_keep_label_identity(case, dtype):
    """Class ids above 2048 stay distinct with 16-bit embeddings or a 16-bit loss dtype."""
    loss = CASES[case][0]
    rng = np.random.default_rng(4)
    small = np.arange(12) % 4
    x = (rng.normal(size=(12, 8)) / math.sqrt(8)).astype(np.float32)
    x16 = keras.ops.cast(keras.ops.convert_to_tensor(x), dtype)
    back = np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x16, "float32")))
    expected = float(loss(small, back))
    low = type(loss).from_config({**loss.get_config(), "dtype": dtype})
    for candidate in (loss, low):
        value = float(keras.ops.convert_to_numpy(keras.ops.cast(candidate(2049 + small, x16), "float32")))
        assert value == pytest.approx(expected, rel=2e-2, abs=2e-2)


# ------------------------------------------------------------- API


@pytest.mark.parametrize("case", IDS)
def test_config_round_trip(case):
    loss = CASES[case][0]
    config = loss.get_config()
    assert type(loss).from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(revived) is type(loss) and revived.get_config() == config
    assert keras.saving.get_registered_name(type(loss)) == f"kerasml>{type(loss).__name__}"
    spec_form = {"type": type(loss).names[0], **{k: v for k, v in config.items() if k not in ("name", "reduction")}}
    assert losses.get(spec_form).get_config() == config


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("multi_similarity", losses.MultiSimilarityLoss),
        ("MultiSimilarityLoss", losses.MultiSimilarityLoss),
        ("ms", losses.MultiSimilarityLoss),
        ("circle", losses.CircleLoss),
        ("supcon", losses.SupConLoss),
        ("SupervisedContrastive", losses.SupConLoss),
        ("nt_xent", losses.NTXentLoss),
        ("InfoNCE", losses.NTXentLoss),
        ("tuplet_margin", losses.TupletMarginLoss),
        ("fast-ap", losses.FastAPLoss),
        ("FastAPLoss", losses.FastAPLoss),
    ],
)
def test_registry_names(name, cls):
    assert type(losses.get(name)) is cls
    entry = next(entry for entry in losses.catalog() if entry.cls is cls)
    assert entry.layout == "any labelled batch"
    if cls in (losses.MultiSimilarityLoss, losses.CircleLoss):  # HDML's pair synthesis (tests/test_hdml_pairs.py)
        assert entry.hdml.startswith("yes: one synthetic negative per anchor–negative pair")
    else:
        assert entry.hdml == ""


@pytest.mark.parametrize(
    ("factory", "pattern"),
    [
        (lambda: losses.SupConLoss(temperature=0.0), r"argument `temperature`.*> 0.*Received: temperature=0.0"),
        (lambda: losses.FastAPLoss(bins=0), r"argument `bins`.*int >= 1.*Received: bins=0"),
        (lambda: losses.CircleLoss(miner="semihardd"), r"argument `miner`.*Did you mean 'semihard'"),
    ],
)
def test_bad_arguments_are_refused(factory, pattern):
    with pytest.raises(ValueError, match=pattern):
        factory()


@pytest.mark.filterwarnings("ignore:Skipping variable loading")
def test_compiled_loss_with_a_miner_survives_keras_file(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    loss = losses.MultiSimilarityLoss(miner=miners.PairMarginMiner(0.5, 0.3), distance=distances.Euclidean(True))
    model.compile(optimizer="adam", loss=loss)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras").loss
    assert isinstance(restored, losses.MultiSimilarityLoss)
    assert restored.get_config() == loss.get_config()
    assert restored.miner == loss.miner and restored.distance == loss.distance


MODULES = [
    "kerasml.losses.distances",
    "kerasml.losses.miners",
    "kerasml.losses.multi_similarity",
    "kerasml.losses.circle",
    "kerasml.losses.supcon",
    "kerasml.losses.tuplet_margin",
    "kerasml.losses.fast_ap",
]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


# ------------------------------------------------------------- fit


FIT_CASES = [
    ("ms", lambda: losses.MultiSimilarityLoss()),
    ("circle", lambda: losses.CircleLoss(m=0.4, gamma=80.0)),
    ("supcon", lambda: losses.SupConLoss()),
    ("ntxent", lambda: losses.NTXentLoss(temperature=0.1)),
    ("tuplet", lambda: losses.TupletMarginLoss()),
    ("fast_ap", lambda: losses.FastAPLoss()),
    ("triplet-margin-miner", lambda: losses.TripletLoss(margin=0.5, miner=miners.TripletMarginMiner(0.5))),
    ("contrastive-distance-weighted", lambda: losses.ContrastiveLoss(margin=2.0, miner="distance_weighted")),
]


@pytest.mark.parametrize(("name", "make_loss"), FIT_CASES, ids=[c[0] for c in FIT_CASES])
def test_fit_lowers_the_loss(name, make_loss):
    classes, features, steps = 6, 16, 16
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(classes, features)) * 1.5
    y = np.concatenate([rng.permutation(np.repeat(np.arange(classes), 4)) for _ in range(steps)]).astype("int32")
    x = (centres[y] + 0.6 * rng.normal(size=(y.size, features))).astype("float32")
    model = keras.Sequential(
        [keras.Input((features,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(8)]
    )
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=make_loss())
    before = model.evaluate(x, y, batch_size=24, verbose=0)
    history = model.fit(x, y, batch_size=24, epochs=2, shuffle=False, verbose=0)
    after = model.evaluate(x, y, batch_size=24, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert after < 0.8 * before, f"{name}: loss {before:.4f} -> {after:.4f}"
