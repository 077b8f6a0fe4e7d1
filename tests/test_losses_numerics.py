"""Degenerate batches give finite losses and finite gradients, on every backend.

Identical embeddings, zero vectors, one class, no valid triplet, huge norms,
float16/bfloat16 inputs; plus the label-precision trap of low-precision losses.
"""

import numpy as np
import pytest
from helpers import npair_labels, triplet_labels, value_and_grad
from keras import ops

import kerasml.losses as L

RNG_SEED = 7
B, D = 12, 8


def _configs():
    yield "contrastive", L.ContrastiveLoss(), "any"
    for mining in ("all", "hard", "semihard"):
        for distance in ("squared", "euclidean"):
            yield f"triplet-{mining}-{distance}", L.TripletLoss(mining=mining, distance=distance), "any"
    for distance in ("squared", "euclidean"):
        yield f"triplet-structured-{distance}", L.TripletLoss(mining="structured", distance=distance), "triplet"
    yield "lifted", L.LiftedStructureLoss(), "any"
    yield "npair", L.NPairLoss(), "npair"
    yield "angular", L.AngularLoss(npair_weight=1.0, angular_weight=2.0, l2_reg=0.01), "npair"
    yield "angular-raw", L.AngularLoss(normalize=False), "npair"


CONFIGS = list(_configs())
IDS = [name for name, _, _ in CONFIGS]


def _labels(layout, rng, one_class=False):
    if layout == "npair":
        return npair_labels(rng, B // 2)
    if layout == "triplet":
        return triplet_labels(rng, B // 3, classes=4)
    if one_class:
        return np.zeros(B, dtype=np.int64)
    return np.arange(B) % 3


def _assert_finite(loss, labels, x):
    value, grad = value_and_grad(lambda t: loss(labels, t), x.astype(np.float32))
    assert np.isfinite(value), f"loss is {value}"
    assert np.all(np.isfinite(grad)), "gradient has non-finite entries"
    return value, grad


@pytest.mark.parametrize(("name", "loss", "layout"), CONFIGS, ids=IDS)
@pytest.mark.parametrize(
    "embeddings",
    ["identical", "zeros", "duplicate_pairs", "huge_norm", "tiny_norm"],
)
def test_degenerate_embeddings_are_finite(name, loss, layout, embeddings):
    rng = np.random.default_rng(RNG_SEED)
    labels = _labels(layout, rng)
    if embeddings == "identical":
        x = np.tile(rng.normal(size=(1, D)), (B, 1))
    elif embeddings == "zeros":
        x = np.zeros((B, D))
    elif embeddings == "duplicate_pairs":
        x = rng.normal(size=(B // 2, D))
        x = np.concatenate([x, x])
    elif embeddings == "huge_norm":
        x = rng.normal(size=(B, D)) * 1e4
    else:
        x = rng.normal(size=(B, D)) * 1e-20
    _assert_finite(loss, labels, x)


@pytest.mark.parametrize(
    ("name", "loss", "layout"), [c for c in CONFIGS if c[2] == "any"], ids=lambda v: v if isinstance(v, str) else ""
)
def test_one_class_batch_is_finite(name, loss, layout):
    rng = np.random.default_rng(RNG_SEED)
    labels = np.full(B, 5)
    x = rng.normal(size=(B, D))
    value, _ = _assert_finite(loss, labels, x)
    if name.startswith("triplet") or name == "lifted":
        assert value == 0.0, "no negative: no triplet and no lifted pair can be formed"


@pytest.mark.parametrize(
    ("name", "loss", "layout"), [c for c in CONFIGS if c[2] == "any"], ids=lambda v: v if isinstance(v, str) else ""
)
def test_all_distinct_labels_have_no_positive(name, loss, layout):
    rng = np.random.default_rng(RNG_SEED)
    labels = np.arange(B)
    x = rng.normal(size=(B, D)) * 0.05  # within the margin of each other
    value, grad = _assert_finite(loss, labels, x)
    if name.startswith("triplet") or name == "lifted":
        assert value == 0.0
        assert np.all(grad == 0.0)
    else:  # contrastive keeps its negative term
        assert value > 0.0


@pytest.mark.parametrize(
    "fn",
    [
        lambda y, x: L.npair_loss(y, x),
        lambda y, x: L.angular_loss(y, x, npair_weight=1.0),
        lambda y, x: L.triplet_loss(y, x, mining="structured"),
    ],
    ids=["npair", "angular", "triplet-structured"],
)
def test_broken_layout_in_functional_form_is_finite(fn):
    """Inside a compiled graph the layout check cannot run: the maths must stay finite."""
    rng = np.random.default_rng(RNG_SEED)
    x = rng.normal(size=(B, D)).astype(np.float32)
    for labels in (np.zeros(B, dtype=np.int64), np.arange(B)):
        value, grad = value_and_grad(lambda t, labels=labels: fn(labels, t), x)
        assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_divergence_degenerate_heads():
    x = np.zeros((4, 3, 5), dtype=np.float32)
    value, grad = value_and_grad(lambda t: L.DivergenceLoss()(np.zeros(4), t), x)
    assert value == pytest.approx(1.0)
    assert np.all(np.isfinite(grad))
    single = np.ones((4, 1, 5), dtype=np.float32)
    value, grad = value_and_grad(lambda t: L.DivergenceLoss()(np.zeros(4), t), single)
    assert value == 0.0 and np.all(grad == 0.0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize(("name", "loss", "layout"), CONFIGS, ids=IDS)
def test_low_precision_inputs_keep_label_identity(name, loss, layout, dtype):
    """Labels above 2048 must stay distinct when embeddings (or the loss) are 16-bit.

    In bfloat16, 2049..2055 round to 2048 or 2056: a loss that cast labels to its
    dtype would merge those classes and change its value.
    """
    rng = np.random.default_rng(RNG_SEED)
    small = _labels(layout, rng)
    _, codes = np.unique(small, return_inverse=True)
    large = 2049 + codes  # same partition of the batch, ids that 16-bit floats merge
    x = rng.normal(size=(B, D)).astype(np.float32)
    x16 = ops.cast(ops.convert_to_tensor(x), dtype)
    x_back = np.asarray(ops.convert_to_numpy(ops.cast(x16, "float32")))
    expected = float(loss(small, x_back))
    low = type(loss).from_config({**loss.get_config(), "dtype": dtype})
    for candidate in (loss, low):
        value = float(ops.convert_to_numpy(ops.cast(candidate(large, x16), "float32")))
        assert np.isfinite(value)
        assert value == pytest.approx(expected, rel=1e-2, abs=1e-2)
