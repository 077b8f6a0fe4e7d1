"""Proxy, margin-softmax and margin losses: values and gradients vs NumPy references, training, saving.

The references (`reference_proxy`) are written from the papers with plain loops in float64;
gradients are checked against their finite differences, with respect to the embeddings and
to the proxies (class weights, ``β``).
"""

import math
import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))

import reference as ref
import reference_proxy as rp
from helpers import random_labels, value_and_grad

import kerasml
from kerasml import losses as L

RTOL, ATOL = 1e-4, 1e-5
GRAD_RTOL, GRAD_ATOL = 2e-2, 2e-3
KINK_GAP = 1e-2
B, D, C = 8, 4, 3


def to_float(value):
    return float(np.asarray(keras.ops.convert_to_numpy(value)))


def normal(rng, *shape):
    return rng.normal(size=shape).astype(np.float32)


# Each case: (name, class, class arguments, functional form, reference, parameters ``[C, ...]`` shape tail,
# reference gap function or None). The functional form and the reference take (labels, x, params, **arguments).
CASES = {
    "proxy_anchor": (L.ProxyAnchorLoss, {"margin": 0.1, "alpha": 32.0}, L.proxy_anchor_loss, rp.proxy_anchor, (D,)),
    "proxy_nca": (L.ProxyNCALoss, {"softmax_scale": 3.0}, L.proxy_nca_loss, rp.proxy_nca, (D,)),
    "normalized_softmax": (
        L.NormalizedSoftmaxLoss,
        {"temperature": 0.25},
        L.normalized_softmax_loss,
        rp.normalized_softmax,
        (D,),
    ),
    "soft_triple": (
        L.SoftTripleLoss,
        {"centers_per_class": 2, "la": 8.0, "gamma": 0.2, "margin": 0.05, "tau": 0.2},
        lambda y, x, p, **kw: L.soft_triple_loss(y, x, p, **{k: v for k, v in kw.items() if k != "centers_per_class"}),
        lambda y, x, p, **kw: rp.soft_triple(y, x, p, **{k: v for k, v in kw.items() if k != "centers_per_class"}),
        (2, D),
    ),
    "arcface": (L.ArcFaceLoss, {"margin": 28.6, "scale": 8.0}, L.arcface_loss, rp.arcface, (D,)),
    "sub_center_arcface": (
        L.SubCenterArcFaceLoss,
        {"margin": 20.0, "scale": 8.0, "sub_centers": 3},
        lambda y, x, p, **kw: L.arcface_loss(y, x, p, **{k: v for k, v in kw.items() if k != "sub_centers"}),
        lambda y, x, p, **kw: rp.arcface(y, x, p, **{k: v for k, v in kw.items() if k != "sub_centers"}),
        (3, D),
    ),
    "cosface": (L.CosFaceLoss, {"margin": 0.35, "scale": 8.0}, L.cosface_loss, rp.cosface, (D,)),
}


def make_loss(name, **overrides):
    cls, arguments, *_ = CASES[name]
    return cls(num_classes=C, embedding_dim=D, **{**arguments, **overrides})


def sub_center_gap(x, proxies):
    """Smallest gap between the two nearest sub-centres of a class (the max is not smooth at a tie)."""
    gap = np.inf
    for xi in x:
        for sub in proxies:
            sims = sorted(rp._cos(xi, w) for w in sub)
            gap = min(gap, sims[-1] - sims[-2])
    return gap


def draw(name, seed):
    """Labels, embeddings and proxies of a case away from the loss's kinks."""
    rng = np.random.default_rng(seed)
    for _ in range(200):
        labels = random_labels(rng, B, C)
        x = normal(rng, B, D)
        proxies = normal(rng, C, *CASES[name][4])
        if name != "sub_center_arcface" or sub_center_gap(x, proxies) > KINK_GAP:
            return labels, x, proxies
    raise AssertionError("could not draw a case away from the kinks")


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("name", sorted(CASES))
def test_value_matches_reference(name):
    _, arguments, function, reference, _ = CASES[name]
    labels, x, proxies = draw(name, 0)
    loss = make_loss(name)
    loss.proxies = proxies
    want = reference(labels, x.astype(np.float64), proxies.astype(np.float64), **arguments)
    np.testing.assert_allclose(to_float(loss(labels, x)), want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(to_float(function(labels, x, proxies, **arguments)), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(CASES))
def test_default_arguments_match_reference(name):
    cls, _, _, reference, _ = CASES[name]
    labels, x, _ = draw(name, 7)
    loss = cls(num_classes=C, embedding_dim=D)
    proxies = normal(np.random.default_rng(8), *loss.proxies.shape)
    loss.set_proxies(proxies)
    config = {k: v for k, v in loss.get_config().items() if k in ("margin", "alpha", "softmax_scale", "temperature")}
    config.update({k: v for k, v in loss.get_config().items() if k in ("la", "gamma", "tau", "scale")})
    want = reference(labels, x.astype(np.float64), proxies.astype(np.float64), **config)
    np.testing.assert_allclose(to_float(loss(labels, x)), want, rtol=RTOL, atol=ATOL)


def test_papers_defaults():
    pa = L.ProxyAnchorLoss()
    assert (pa.margin, pa.alpha, pa.lr_multiplier) == (0.1, 32.0, 100.0)
    arc = L.ArcFaceLoss()
    assert (arc.margin, arc.scale) == (28.6, 64.0) and abs(math.radians(arc.margin) - 0.5) < 2e-3
    assert (L.CosFaceLoss().margin, L.CosFaceLoss().scale) == (0.35, 64.0)
    assert L.SubCenterArcFaceLoss().sub_centers == 3 and L.NormalizedSoftmaxLoss().temperature == 0.05
    st = L.SoftTripleLoss()
    assert (st.centers_per_class, st.la, st.gamma, st.margin, st.tau) == (10, 20.0, 0.1, 0.01, 0.2)
    margin = L.MarginLoss()
    assert (margin.margin, margin.initial_beta, margin.learn_beta, margin.nu) == (0.2, 1.2, True, 0.0)


def margin_case(seed, per_class):
    rng = np.random.default_rng(seed)
    for _ in range(500):
        labels = random_labels(rng, B, C)
        x = normal(rng, B, D)
        beta = (1.0 + 0.4 * rng.random(C) if per_class else np.float64(1.0 + 0.4 * rng.random())).astype(np.float32)
        gaps = [abs(0.2 + sign * gap) for gap, sign in rp.margin_terms(labels, x.astype(np.float64), beta)]
        if min(gaps) > KINK_GAP:
            return labels, x, beta
    raise AssertionError("could not draw a margin case away from the kinks")


@pytest.mark.parametrize("per_class", [False, True])
@pytest.mark.parametrize("nu", [0.0, 0.1])
def test_margin_value_matches_reference(per_class, nu):
    labels, x, beta = margin_case(3, per_class)
    loss = L.MarginLoss(margin=0.2, beta=1.0, nu=nu, num_classes=C if per_class else None)
    loss.beta.assign(beta)
    want = rp.margin(labels, x.astype(np.float64), beta.astype(np.float64), margin=0.2, nu=nu)
    np.testing.assert_allclose(to_float(loss(labels, x)), want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(to_float(L.margin_loss(labels, x, beta, nu=nu)), want, rtol=RTOL, atol=ATOL)
    fixed = L.MarginLoss(beta=float(np.mean(beta)), learn_beta=False)
    assert fixed.parameters is None
    want_fixed = rp.margin(labels, x.astype(np.float64), float(np.mean(beta)))
    np.testing.assert_allclose(to_float(fixed(labels, x)), want_fixed, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------ gradients


def check_gradient(fn, reference, point, min_grad=5e-2):
    point = np.asarray(point, dtype=np.float32)
    value, grad = value_and_grad(fn, point)
    want_grad = ref.numerical_gradient(reference, point.astype(np.float64), eps=1e-5)
    assert np.abs(want_grad).max() > min_grad, "vanishing reference gradient"
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, reference(point.astype(np.float64)), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(grad, want_grad, rtol=GRAD_RTOL, atol=GRAD_ATOL)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_wrt_embeddings_and_proxies(name):
    _, arguments, function, reference, _ = CASES[name]
    labels, x, proxies = draw(name, 11)
    p64, x64 = proxies.astype(np.float64), x.astype(np.float64)
    check_gradient(
        lambda t: function(labels, t, proxies, **arguments), lambda z: reference(labels, z, p64, **arguments), x
    )
    check_gradient(
        lambda t: function(labels, x, t, **arguments), lambda p: reference(labels, x64, p, **arguments), proxies
    )


@pytest.mark.parametrize("per_class", [False, True])
def test_margin_gradient_wrt_embeddings_and_beta(per_class):
    labels, x, beta = margin_case(5, per_class)
    b64, x64 = beta.astype(np.float64), x.astype(np.float64)
    check_gradient(lambda t: L.margin_loss(labels, t, beta, nu=0.1), lambda z: rp.margin(labels, z, b64, nu=0.1), x)
    check_gradient(
        lambda t: L.margin_loss(labels, x, t, nu=0.1),
        lambda b: rp.margin(labels, x64, b, nu=0.1),
        beta,
        min_grad=1e-2,
    )


# ----------------------------------------------------------------- degenerate batches

DEGENERATE = {
    "one_class": lambda rng: (np.zeros(B, "int64"), normal(rng, B, D)),
    "identical": lambda rng: (random_labels(rng, B, C), np.tile(normal(rng, 1, D), (B, 1))),
    "zeros": lambda rng: (random_labels(rng, B, C), np.zeros((B, D), "float32")),
    "single": lambda rng: (np.array([1]), normal(rng, 1, D)),
}


@pytest.mark.parametrize("batch", sorted(DEGENERATE))
@pytest.mark.parametrize("name", [*sorted(CASES), "margin"])
def test_degenerate_batches_stay_finite(name, batch):
    rng = np.random.default_rng(2)
    labels, x = DEGENERATE[batch](rng)
    if name == "margin":
        beta = np.full(C, 1.2, "float32")
        parts = [lambda t: L.margin_loss(labels, t, beta), lambda t: L.margin_loss(labels, x, t)]
        points = [x, beta]
    else:
        _, arguments, function, _, tail = CASES[name]
        proxies = normal(rng, C, *tail)
        parts = [lambda t: function(labels, t, proxies, **arguments), lambda t: function(labels, x, t, **arguments)]
        points = [x, proxies]
    for fn, point in zip(parts, points):
        value, grad = value_and_grad(fn, point)
        assert np.isfinite(value) and np.all(np.isfinite(grad)), (name, batch)


# ------------------------------------------------------------------- API and errors


def test_registry_names_and_config_round_trip():
    for name in [*CASES, "margin"]:
        cls = L.loss_class(name)
        assert cls.names[0] == name and name in [entry.name for entry in L.catalog()]
    loss = L.get({"type": "proxy_anchor", "num_classes": C, "embedding_dim": D, "alpha": 16})
    assert isinstance(loss, L.ProxyAnchorLoss) and loss.alpha == 16.0 and tuple(loss.proxies.shape) == (C, D)
    for name in CASES:
        loss = make_loss(name)
        clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
        assert type(clone) is type(loss) and clone.get_config() == loss.get_config()
        assert tuple(clone.proxies.shape) == tuple(loss.proxies.shape)
    margin = L.MarginLoss(num_classes=C, nu=0.1, miner="distance_weighted")
    clone = L.MarginLoss.from_config(margin.get_config())
    assert clone.get_config() == margin.get_config() and tuple(clone.beta.shape) == (C,)


def test_proxies_are_a_settable_variable():
    loss = L.ProxyAnchorLoss(num_classes=C, embedding_dim=D)
    assert isinstance(loss.proxies, keras.Variable) and loss.proxies.trainable
    values = np.arange(C * D, dtype="float32").reshape(C, D)
    loss.proxies = values
    np.testing.assert_array_equal(loss.proxies.numpy(), values)
    loss.set_proxies(values + 1)
    np.testing.assert_array_equal(loss.proxies.numpy(), values + 1)
    with pytest.raises(ValueError, match=r"Invalid value for `proxies` of ProxyAnchorLoss\. Expected .*\(3, 4\)"):
        loss.set_proxies(np.zeros((C, D + 1)))
    assert tuple(L.SoftTripleLoss(C, D, centers_per_class=4).proxies.shape) == (C, 4, D)


def test_sizes_missing_or_contradicting_raise():
    x = np.zeros((2, D), "float32")
    with pytest.raises(ValueError, match=r"ProxyAnchorLoss has no parameters yet: it needs `num_classes` and `emb"):
        L.ProxyAnchorLoss()(np.array([0, 1]), x)
    loss = L.ArcFaceLoss(num_classes=C).configure(embedding_dim=D)
    assert tuple(loss.proxies.shape) == (C, D)
    with pytest.raises(ValueError, match=r"built with embedding_dim=4\. Received: embedding_dim=5"):
        loss.configure(embedding_dim=5)
    with pytest.raises(
        ValueError, match=r"`num_classes` of CosFaceLoss\. Expected an int >= 1 or None\. Received: num_clas"
    ):
        L.CosFaceLoss(num_classes=0)
    for bad in (2.5, True, "3"):  # refused, never truncated to an int
        with pytest.raises(ValueError, match=r"`centers_per_class` of SoftTripleLoss\. Expected an int >= 1\."):
            L.SoftTripleLoss(num_classes=C, centers_per_class=bad)
        with pytest.raises(ValueError, match=r"`sub_centers` of SubCenterArcFaceLoss\. Expected an int >= 1\."):
            L.SubCenterArcFaceLoss(num_classes=C, sub_centers=bad)
    with pytest.raises(ValueError, match=r"Invalid value for argument `lr_multiplier`"):
        L.ProxyNCALoss(lr_multiplier=0)
    assert L.MarginLoss().configure(num_classes=C, embedding_dim=D).beta.shape == ()  # one β stays one β
    backbone = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6)])
    with pytest.raises(ValueError, match=r"it needs `num_classes`"):
        kerasml.models.MetricModel(backbone, embedding_dim=D, loss=L.ProxyAnchorLoss())


def test_out_of_range_labels_raise_on_concrete_batches():
    loss = make_loss("cosface")
    with pytest.raises(ValueError, match=r"CosFaceLoss has num_classes=3, so labels must lie in \[0, 3\)\. Received"):
        loss(np.array([0, 3]), np.ones((2, D), "float32"))
    per_class = L.MarginLoss(num_classes=C)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        per_class(np.array([-1, 0]), np.ones((2, D), "float32"))
    L.MarginLoss()(np.array([-1, 7]), np.ones((2, D), "float32"))  # one β: any label


def test_hdml_does_not_apply():
    for name in [*CASES, "margin"]:
        loss = L.get({"type": name, "num_classes": C})
        assert loss.hdml_layout is None and "trainable parameters" in loss.hdml_problem()


# ------------------------------------------------------------------ training and saving

FEATURES, CLASSES = 6, 4


def _data(seed=0, per_class=12):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLASSES, FEATURES)) * 2.0
    y = np.tile(np.arange(CLASSES), per_class).astype("int32")
    x = (centres[y] + 0.5 * rng.normal(size=(y.size, FEATURES))).astype("float32")
    return x, y


def _backbone():
    return keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(16, activation="relu")])


TRAINED = {
    "proxy_anchor": lambda: L.ProxyAnchorLoss(num_classes=CLASSES),
    "proxy_nca": lambda: L.ProxyNCALoss(num_classes=CLASSES, softmax_scale=8.0),
    "normalized_softmax": lambda: L.NormalizedSoftmaxLoss(num_classes=CLASSES, temperature=0.1),
    "soft_triple": lambda: L.SoftTripleLoss(num_classes=CLASSES, centers_per_class=2),
    "arcface": lambda: L.ArcFaceLoss(num_classes=CLASSES, scale=16.0),
    "sub_center_arcface": lambda: L.SubCenterArcFaceLoss(num_classes=CLASSES, scale=16.0, sub_centers=2),
    "cosface": lambda: L.CosFaceLoss(num_classes=CLASSES, scale=16.0),
    "margin": lambda: L.MarginLoss(num_classes=CLASSES),
}


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_metric_model_trains_the_parameters_and_lowers_the_loss(name):
    """The documented one line for a user's own Keras model: wrap it in MetricModel."""
    x, y = _data()
    loss = TRAINED[name]()
    model = kerasml.models.MetricModel(_backbone(), embedding_dim=8, loss=loss)
    model.compile(learning_rates={"metric": 3e-3})
    assert model.loss_parameters is loss.parameters and model.parameter_groups == ("metric", "loss")
    assert model.optimizer.group_of(loss.parameters.trainable_variables[0]) == "loss"
    group_rate = float(model.optimizer.group_optimizers["loss"].learning_rate)
    np.testing.assert_allclose(group_rate, 3e-3 * loss.lr_multiplier, rtol=1e-6)
    before_values = [np.array(v.numpy()) for v in loss.parameters.trainable_variables]
    before = model.evaluate(x, y, batch_size=16, verbose=0)[0]
    history = model.fit(x, y, batch_size=16, epochs=4, shuffle=False, verbose=0)
    after = model.evaluate(x, y, batch_size=16, verbose=0)[0]
    assert np.all(np.isfinite(history.history["loss"]))
    assert after < 0.9 * before, f"{name}: {before:.4f} -> {after:.4f}"
    for old, variable in zip(before_values, loss.parameters.trainable_variables):
        assert np.abs(variable.numpy() - old).max() > 1e-3, f"{name}: {variable.path} did not train"


def test_keras_keras_file_round_trip_keeps_proxies_and_their_group(tmp_path):
    x, y = _data()
    loss = L.ProxyAnchorLoss(num_classes=CLASSES)
    model = kerasml.models.MetricModel(_backbone(), embedding_dim=8, loss=loss)
    model.compile()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "proxy.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(restored.base_loss.proxies.numpy(), loss.proxies.numpy())
    assert restored.loss_parameters is restored.base_loss.parameters
    assert restored.optimizer.group_of(restored.base_loss.proxies) == "loss"
    np.testing.assert_allclose(
        restored.evaluate(x, y, batch_size=16, verbose=0), model.evaluate(x, y, batch_size=16, verbose=0), rtol=1e-5
    )
    kept = restored.base_loss.proxies.numpy().copy()
    restored.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.abs(restored.base_loss.proxies.numpy() - kept).max() > 1e-4  # still trained after loading


def test_compile_alone_saves_but_does_not_train_the_proxies(tmp_path):
    """What Keras 3 does with a loss's variables (kerasml.losses.parametric explains why): kept, not trained."""
    x, y = _data()
    loss = L.NormalizedSoftmaxLoss(num_classes=CLASSES, embedding_dim=8)
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(8)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    before = loss.proxies.numpy().copy()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    np.testing.assert_array_equal(loss.proxies.numpy(), before)
    loss.proxies = before + 1.0
    path = tmp_path / "plain.keras"
    model.save(path)
    np.testing.assert_array_equal(keras.saving.load_model(path).loss.proxies.numpy(), before + 1.0)


class OwnModel(keras.Model):
    """A user's subclassed model that owns its loss's parameters (the docstring's second recipe)."""

    def __init__(self, loss):
        super().__init__()
        self.body = keras.layers.Dense(8)
        self.loss_parameters = loss.parameters

    def call(self, x):
        return self.body(x)


def test_a_subclassed_model_owning_the_parameters_trains_them():
    x, y = _data()
    loss = L.CosFaceLoss(num_classes=CLASSES, embedding_dim=8, scale=16.0)
    model = OwnModel(loss)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    before = loss.proxies.numpy().copy()
    first = model.evaluate(x, y, batch_size=16, verbose=0)
    model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert np.abs(loss.proxies.numpy() - before).max() > 1e-3
    assert model.evaluate(x, y, batch_size=16, verbose=0) < first
