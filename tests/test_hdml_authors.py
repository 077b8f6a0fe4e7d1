"""``HDMLModel(convention="authors")`` against `hdml_authors_reference` (the HDML authors' step in NumPy).

One step, N-pair and triplet, at the first step (``J_avg = J̄_gen = 1e6``), mid-training, with
``J_avg`` tiny and with ``J̄_gen = 0``: every logged term, what the block means record, the
generator's batch-norm statistics and the gradient each parameter group receives, to 1e-4
relative on the active backend. Also: `BlockMean` skips non-finite values, degenerate batches stay
finite, and a ``.keras`` file keeps its convention on every backend.

``python tests/test_hdml_authors.py load DIR`` (used by the cross-backend test) prints, as JSON,
the convention and terms of the model saved in ``DIR``.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hdml_authors_reference as ref
import keras
import numpy as np
import pytest
from keras import ops

import kerasml
from kerasml.hdml import HDML_ARGUMENTS, TERMS, BlockMean, HDMLModel

ALPHA, BETA = 90.0, 5e3
INPUTS, FEATURES, EMBEDDING, CLASSES, UNITS = 6, 10, 4, 7, 8
COUNT = 4  # N pairs / n triplets
AUTHORS_L2 = 0.02  # FLAGS loss_l2_reg; kerasml's NPairLoss(l2_reg) is half of it
MOMENTUM = 0.99
BACKENDS = ("tensorflow", "torch", "jax")


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _f32(x):
    return np.asarray(x, dtype=np.float32)


class GradientCapture(keras.optimizers.Optimizer):
    """Sets every variable to its gradient: after one training step the weights *are* the gradients."""

    def __init__(self, name="gradient_capture", **kwargs):
        super().__init__(learning_rate=1.0, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        self.assign(variable, ops.cast(gradient, variable.dtype))


# ------------------------------------------------------------------ the model and its batch
def _loss(layout):
    if layout == "npair":
        return kerasml.losses.NPairLoss(l2_reg=AUTHORS_L2 / 2)
    return kerasml.losses.TripletLoss(mining="structured", margin=1.0)


def _build(layout, convention="authors", decay=0.0, j_avg=1e6, j_gen=1e6, block_size=2, seed=0):
    backbone = keras.Sequential([keras.Input((INPUTS,)), keras.layers.Dense(FEATURES, name="feat")], name="backbone")
    model = HDMLModel(
        backbone,
        embedding_dim=EMBEDDING,
        loss=_loss(layout),
        num_classes=CLASSES,
        generator_units=UNITS,
        alpha=ALPHA,
        beta=BETA,
        block_size=block_size,
        weight_decay=decay,
        convention=convention,
    )
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


def _variables(model):
    """``{(group, name): variable}`` in the reference's naming."""
    g = model.generator
    feat = model.backbone.get_layer("feat")
    found = {("backbone", "kernel"): feat.kernel, ("backbone", "bias"): feat.bias}
    found.update({("projector", k): getattr(model.projector, k) for k in ("gamma", "beta", "kernel", "bias")})
    found.update({key: getattr(g, key[1]) for key in ref.GROUPS["generator"]})
    found.update({("classifier", k): getattr(model.classifier, k) for k in ("kernel", "bias")})
    return found


def _params(model):
    params = {}
    for (group, name), variable in _variables(model).items():
        params.setdefault(group, {})[name] = _np(variable).astype(np.float64)
    return params


def _batch(layout, seed=3):
    """Inputs whose embeddings have pulled and already-hard negatives, and their labels."""
    rng = np.random.default_rng(seed)
    anchors = rng.normal(size=(COUNT, INPUTS))
    near = 0.15 * rng.normal(size=(COUNT, INPUTS))
    far = 1.5 * rng.normal(size=(COUNT, INPUTS))
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


def _options(j_avg, j_gen, decay):
    return dict(
        alpha=ALPHA,
        beta=BETA,
        j_avg=j_avg,
        j_gen=j_gen,
        l2=AUTHORS_L2,
        margin=1.0,
        soft_weight=0.5,
        softmax_factor=1e4,
        regular_factor=decay,
    )


def _assert_smooth(expected, layout):
    """The reference's step is differentiable here: no pull, hinge or ReLU at its kink."""
    mask = expected["pulled_mask"]
    candidates = mask[~np.eye(COUNT, dtype=bool)] if layout == "npair" else mask
    assert candidates.any() and (~candidates).any(), mask
    z = expected["z"]
    if layout == "npair":
        a, p = z[:COUNT], z[COUNT:]
        rows = [(a[i], p[i], p[j]) for i in range(COUNT) for j in range(COUNT) if i != j]
    else:
        rows = [(z[i], z[COUNT + i], z[2 * COUNT + i]) for i in range(COUNT)]
    for anchor, positive, negative in rows:
        d_pos, d_neg = np.linalg.norm(positive - anchor), np.linalg.norm(negative - anchor)
        assert abs(d_neg - d_pos) / max(d_pos, d_neg) > 1e-3
    for hinges in expected["hinges"]:
        if hinges is not None:
            assert np.min(np.abs(hinges)) > 1e-3, hinges
    assert np.min(np.abs(expected["relu_inputs"])) > 1e-4


CASES = [
    pytest.param(1e6, 1e6, 0.0, id="first-step"),
    pytest.param(75.0, 7.2e3, 0.05, id="mid-training"),
    pytest.param(1e-30, 7.2e3, 0.05, id="j_avg-tiny"),
    pytest.param(75.0, 0.0, 0.05, id="j_gen-zero"),
]


def run_step(layout, j_avg, j_gen, decay):
    """One authors'-convention step on the active backend and in the reference.

    Returns ``(model, got, expected, before)``: ``got`` the logged terms and the total,
    ``before`` the non-trainable state before the step.
    """
    model = _build(layout, decay=decay, j_avg=j_avg, j_gen=j_gen)
    params = _params(model)
    before = {v.path: _np(v).copy() for v in model.non_trainable_weights}
    x, labels = _batch(layout)
    expected = ref.authors_step(x, labels, params, layout, **_options(j_avg, j_gen, decay))
    y_pred = model(x, training=True)
    total = model.compute_loss(x=x, y=labels, y_pred=y_pred, training=True)
    got = {name: float(_np(model.term_trackers[name].result())) for name in TERMS}
    got["total"] = float(_np(total))
    got["z"] = _np(y_pred)
    return model, got, expected, before


def step_gradients(layout, j_avg, j_gen, decay):
    """``(got, expected)``: ``{(group, name): gradient}`` of one training step and of the reference."""
    model = _build(layout, decay=decay, j_avg=j_avg, j_gen=j_gen)
    params = _params(model)
    x, labels = _batch(layout)
    expected = ref.group_gradients(x, labels, params, layout, **_options(j_avg, j_gen, decay))
    model.compile(optimizer=GradientCapture(), run_eagerly=True)
    model.train_on_batch(x, labels)
    got = {key: _np(variable).astype(np.float64) for key, variable in _variables(model).items()}
    return got, expected


def relative_error(got, expected, floor=0.0):
    """``max |got − expected| / max(max |expected|, floor)``: the error relative to the array's scale.

    ``floor`` stands in for the scale of a gradient that is zero in exact arithmetic (the bias
    before a batch-norm), where only rounding remains.
    """
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    scale = max(float(np.max(np.abs(expected))), floor)
    return float(np.max(np.abs(got - expected)) / scale)


def gradient_errors(got, expected):
    """``{(group, name): relative error}``; the floor of each variable is 1e-2 of its group's largest gradient.

    A gradient a hundred times smaller than its group's largest is float32 rounding of cancelling terms
    (the backbone bias before the projector's batch-norm has, exactly, only its weight decay).
    """
    errors = {}
    for keys in ref.GROUPS.values():
        group_scale = max(float(np.max(np.abs(expected[key]))) for key in keys)
        for key in keys:
            errors[key] = relative_error(got[key], expected[key], floor=1e-2 * group_scale)
    return errors


# ------------------------------------------------------------------ one step: terms and state
@pytest.mark.parametrize("layout", ["npair", "triplet"])
@pytest.mark.parametrize("j_avg,j_gen,decay", CASES)
def test_authors_step_terms_match_reference(layout, j_avg, j_gen, decay):
    model, got, expected, before = run_step(layout, j_avg, j_gen, decay)
    _assert_smooth(expected, layout)
    np.testing.assert_allclose(got["z"], expected["z"], rtol=1e-4, atol=1e-5)
    expected_total = expected["J_metric"] + expected["J_gen"] + expected["J_cls"]
    for name, value in (*((n, expected[n]) for n in TERMS), ("total", expected_total)):
        assert math.isfinite(got[name]), name
        assert got[name] == pytest.approx(value, rel=1e-4, abs=1e-6), f"{name}: kerasml {got[name]!r}, ref {value!r}"
    # the block means record what the authors' collectors record (block_size 2: half a block)
    j_avg_mean, j_gen_mean = model.augmentation.j_avg, model.j_gen_mean
    assert float(_np(j_avg_mean.count)) == 1.0 and float(_np(j_gen_mean.count)) == 1.0
    assert float(_np(j_avg_mean.total)) == pytest.approx(expected["J_avg_input"], rel=1e-4, abs=1e-6)
    assert float(_np(j_gen_mean.total)) == pytest.approx(expected["J_gen"], rel=1e-4)
    assert float(_np(j_avg_mean.value)) == pytest.approx(j_avg, rel=1e-6)
    # the generator's batch-norm statistics are those of the authors' batch [z; anchors(; positives); pulled]
    rows = {"npair": 3 * COUNT + COUNT**2, "triplet": 6 * COUNT}[layout]
    assert len(expected["generator_batch"]) == rows
    for attribute, batch_value in zip(("moving_mean", "moving_variance"), expected["generator_stats"], strict=True):
        variable = getattr(model.generator, attribute)
        wanted = MOMENTUM * before[variable.path].astype(np.float64) + (1 - MOMENTUM) * batch_value
        np.testing.assert_allclose(_np(variable), wanted, rtol=1e-5, atol=1e-6, err_msg=variable.path)


@pytest.mark.parametrize("layout", ["npair", "triplet"])
@pytest.mark.parametrize("j_avg,j_gen,decay", CASES)
def test_authors_step_gradients_match_reference(layout, j_avg, j_gen, decay):
    got, expected = step_gradients(layout, j_avg, j_gen, decay)
    for key, error in gradient_errors(got, expected).items():
        assert np.all(np.isfinite(got[key])), key
        assert error < 1e-4, f"gradient of {key}: relative error {error:.2e}"
    if j_gen == 0.0:  # w = 0: the metric group learns from J_syn alone, so nothing from weight decay
        assert np.max(np.abs(expected[("projector", "bias")])) > 0


def test_authors_convention_changes_the_step():
    """The same weights and batch under the two conventions: the differences of docs/hdml.md show."""
    x, labels = _batch("npair")
    terms = {}
    for convention in ("kerasml", "authors"):
        model = _build("npair", convention=convention, decay=0.05, j_avg=75.0, j_gen=7.2e3)
        model.compute_loss(x=x, y=labels, y_pred=model(x, training=True), training=True)
        terms[convention] = {name: float(_np(model.term_trackers[name].result())) for name in TERMS}
    assert terms["authors"]["w"] == pytest.approx(terms["kerasml"]["w"], rel=1e-6)
    for name in ("J_m", "J_syn", "J_recon", "J_soft", "J_gen", "J_metric"):
        assert terms["authors"][name] != pytest.approx(terms["kerasml"][name], rel=1e-3), name
    assert terms["authors"]["J_cls"] == pytest.approx(terms["kerasml"]["J_cls"], rel=1e-6)


# ------------------------------------------------------------------ BlockMean
def test_block_mean_skips_nan_and_inf():
    mean = BlockMean(block_size=4, initial=1e6)
    for value in (1.0, np.nan, 2.0, np.inf):
        mean.update(value)
    assert float(_np(mean.value)) == 1e6 and float(_np(mean.count)) == 2.0  # two finite values so far
    for value in (-np.inf, 3.0, 6.0):
        mean.update(value)
    assert float(_np(mean.value)) == pytest.approx(3.0)  # (1 + 2 + 3 + 6) / 4
    assert float(_np(mean.count)) == 0.0 and float(_np(mean.total)) == 0.0
    for _ in range(6):
        mean.update(np.nan)
    assert float(_np(mean.value)) == pytest.approx(3.0)  # no finite value: the last mean stays


# ------------------------------------------------------------------ safety and configuration
@pytest.mark.parametrize("layout", ["npair", "triplet"])
def test_authors_degenerate_batches_stay_finite(layout):
    """Every input identical (an anchor equal to its negatives): the authors' graph gives NaN
    gradients (it divides by d⁻ = 0 before masking); this one stays finite."""
    model = _build(layout, decay=0.05, j_avg=1e-30, j_gen=0.0)
    x, labels = _batch(layout)
    x = np.repeat(x[:1], len(x), axis=0)
    model.compile(optimizer=GradientCapture(), run_eagerly=True)
    logs = model.train_on_batch(x, labels, return_dict=True)
    assert all(math.isfinite(float(v)) for v in logs.values()), logs
    for variable in model.trainable_variables:
        assert np.all(np.isfinite(_np(variable))), variable.path


def test_authors_model_evaluates_and_logs_weighted_j_m():
    """Outside training the authors log J_m as w (J_m + wd) too (no synthetic term exists there)."""
    model = _build("npair", decay=0.05, j_avg=75.0, j_gen=7.2e3)
    x, labels = _batch("npair")
    model.compile(run_eagerly=True)
    logs = model.evaluate(x, labels, batch_size=len(labels), verbose=0, return_dict=True)
    assert math.isfinite(logs["loss"]) and logs["loss"] > 0  # J_m + weight decay, in inference mode
    assert logs["J_m"] == pytest.approx(math.exp(-BETA / 7.2e3) * logs["loss"], rel=1e-5)


def test_convention_argument_config_and_errors():
    assert HDML_ARGUMENTS[-1] == "convention"
    model = _build("triplet")
    assert model.convention == "authors" and model.get_config()["convention"] == "authors"
    assert HDMLModel.from_config(model.get_config()).convention == "authors"
    assert _build("npair", convention="kerasml").convention == "kerasml"
    with pytest.raises(ValueError, match=r"argument `convention`.*Did you mean 'authors'"):
        _build("npair", convention="author")
    with pytest.raises(ValueError, match=r"argument `convention`"):
        _loss("npair").synthetic_loss(np.zeros(4), np.zeros((2, 3)), np.zeros((2, 2, 3)), convention="paper")


def test_losses_answer_for_the_authors_form():
    """Triplet J_m / J_syn sum over triplets; N-pair J_syn adds its L2 term on the synthetics."""
    _, labels = _batch("triplet")
    z = np.random.default_rng(0).normal(size=(3 * COUNT, EMBEDDING)).astype("float32")
    triplet = _loss("triplet")
    mean = float(_np(triplet.real_loss(labels, z)))
    assert float(_np(triplet.real_loss(labels, z, convention="authors"))) == pytest.approx(COUNT * mean, rel=1e-6)
    assert float(_np(triplet.synthetic_loss(labels, z, None, convention="authors"))) == pytest.approx(
        COUNT * mean, rel=1e-6
    )
    npair = _loss("npair")
    rng = np.random.default_rng(1)
    anchors, tuples = rng.normal(size=(COUNT, EMBEDDING)), rng.normal(size=(COUNT, COUNT, EMBEDDING))
    anchors, tuples = _f32(anchors), _f32(tuples)
    clean = float(_np(npair.synthetic_loss(None, anchors, tuples)))
    authors = float(_np(npair.synthetic_loss(None, anchors, tuples, convention="authors")))
    extra = 0.25 * AUTHORS_L2 * (np.mean(np.sum(anchors**2, 1)) + np.mean(np.sum(tuples**2, -1)))
    assert authors - clean == pytest.approx(extra, rel=1e-5)


# ------------------------------------------------------------------ .keras across backends
def _terms(model, x, y):
    for tracker in model.term_trackers.values():
        tracker.reset_state()
    model.compute_loss(x=x, y=y, y_pred=model(x, training=True), training=True)
    return {name: float(_np(t.result())) for name, t in model.term_trackers.items()}


def load_report(folder):
    """The convention and the terms of one step of the model saved in ``folder`` (active backend)."""
    folder = Path(folder)
    model = keras.saving.load_model(folder / "model.keras")
    batch = np.load(folder / "batch.npz")
    return {"convention": model.convention, "terms": _terms(model, batch["x"], batch["y"])}


def test_authors_model_file_keeps_its_convention_on_every_backend(tmp_path):
    model = _build("triplet", decay=0.05, j_avg=75.0, j_gen=7.2e3)
    x, labels = _batch("triplet")
    model.save(tmp_path / "model.keras")
    np.savez(tmp_path / "batch.npz", x=x, y=labels)
    here = keras.backend.backend()
    results = {here: load_report(tmp_path)}
    for backend in BACKENDS:
        if backend == here:
            continue
        done = subprocess.run(
            [sys.executable, str(Path(__file__)), "load", str(tmp_path)],
            env={**os.environ, "KERAS_BACKEND": backend},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        results[backend] = json.loads(done.stdout.strip().splitlines()[-1])
    reference = results[here]["terms"]
    for backend, result in results.items():
        assert result["convention"] == "authors", backend
        for name, value in reference.items():
            assert result["terms"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), f"{name} on {backend}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["load"]:
        print(json.dumps(load_report(sys.argv[2])))
