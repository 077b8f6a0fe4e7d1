"""Cross-batch memory (`kerasml.losses.CrossBatchMemory`): FIFO, values and gradients, fit, saving, errors."""

import math

import keras
import numpy as np
import pytest
from helpers import BACKEND, tiny_backbone, value_and_grad
from reference import numerical_gradient

import kerasml
from kerasml import losses as L

# ----------------------------------------------------------------------------- reference


def _pairs(y, mem_y):
    """Anchors ``i`` of the batch with partners ``k`` of ``[batch; memory]``, ``k != i``: (positive, negative)."""
    everything = list(y) + list(mem_y)
    positive = [(i, k) for i in range(len(y)) for k in range(len(everything)) if k != i and y[i] == everything[k]]
    negative = [(i, k) for i in range(len(y)) for k in range(len(everything)) if y[i] != everything[k]]
    return positive, negative


def _cos(u, v):
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def _lse(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def xbm_reference(name, y, x, mem_y, mem_x):
    """The wrapped loss with the batch's anchors against batch + memory, from the papers (float64 loops)."""
    y, mem_y = [int(v) for v in y], [int(v) for v in mem_y]
    refs = np.concatenate([np.asarray(x, np.float64), np.asarray(mem_x, np.float64).reshape(-1, x.shape[1])])
    positive, negative = _pairs(y, mem_y)
    if name == "contrastive":  # ½ mean_P d² + ½ mean_N max(1 − d, 0)²
        pos = [np.sum((x[i] - refs[k]) ** 2) for i, k in positive]
        neg = [max(1.0 - np.linalg.norm(x[i] - refs[k]), 0.0) ** 2 for i, k in negative]
        return 0.5 * (np.mean(pos) if pos else 0.0) + 0.5 * (np.mean(neg) if neg else 0.0)
    if name == "multi_similarity":  # α = 2, β = 50, λ = 0.5, every pair, mean over the B anchors
        total = 0.0
        for i in range(len(y)):
            pos = [-2.0 * (_cos(x[i], refs[k]) - 0.5) for a, k in positive if a == i]
            neg = [50.0 * (_cos(x[i], refs[k]) - 0.5) for a, k in negative if a == i]
            total += _lse([0.0, *pos]) / 2.0 + _lse([0.0, *neg]) / 50.0
        return total / len(y)
    if name == "supcon":  # τ = 0.1, mean over anchors with a positive
        losses = []
        for i in range(len(y)):
            pos = [k for a, k in positive if a == i]
            if pos:
                others = pos + [k for a, k in negative if a == i]
                log_den = _lse([_cos(x[i], refs[k]) / 0.1 for k in others])
                losses.append(-sum(_cos(x[i], refs[p]) / 0.1 - log_den for p in pos) / len(pos))
        return float(np.mean(losses)) if losses else 0.0
    if name == "triplet":  # every valid (a, p, n), squared Euclidean, margin 1, mean
        hinges = [
            max(np.sum((x[i] - refs[p]) ** 2) - np.sum((x[i] - refs[n]) ** 2) + 1.0, 0.0)
            for i, p in positive
            for a, n in negative
            if a == i
        ]
        return float(np.mean(hinges)) if hinges else 0.0
    raise ValueError(name)


LOSSES = {
    "contrastive": lambda: L.ContrastiveLoss(),
    "multi_similarity": lambda: L.MultiSimilarityLoss(miner=None),
    "supcon": lambda: L.SupConLoss(),
    "triplet": lambda: L.TripletLoss(mining="all"),
}


def _batch(rng, size, classes, dim=3):
    return rng.integers(0, classes, size=size), rng.normal(size=(size, dim)).astype("float32")


def _held(bank):
    """A stateless scope over the memory's variables: a call inside it changes nothing (and JAX leaks no tracer)."""
    return keras.StatelessScope(state_mapping=[(v, v.value) for v in bank.variables])


# ----------------------------------------------------------------------------- the FIFO


def test_memory_holds_the_last_rows_in_fifo_order_with_wrap_around():
    rng = np.random.default_rng(0)
    xbm = L.CrossBatchMemory("contrastive", memory_size=10, embedding_dim=3)
    seen_x, seen_y = [], []
    for k in range(1, 5):  # 4, 8, 12, 16 rows seen: wraps after the third batch
        y, x = _batch(rng, 4, 3)
        if k == 1:
            xbm(y, x)  # a step of the loss enqueues its batch
        else:
            xbm.memory.enqueue(x, y)
        seen_x.append(x)
        seen_y.append(y)
        stored_x, stored_y = xbm.memory.contents()
        expected = min(4 * k, 10)
        np.testing.assert_array_equal(stored_x, np.concatenate(seen_x)[-expected:])
        np.testing.assert_array_equal(stored_y, np.concatenate(seen_y)[-expected:])
    assert int(xbm.memory.steps.numpy()) == 4


def test_a_batch_larger_than_the_memory_keeps_its_last_rows():
    rng = np.random.default_rng(1)
    xbm = L.CrossBatchMemory("multi_similarity", memory_size=3, embedding_dim=3)
    for _ in range(2):
        y, x = _batch(rng, 5, 2)
        xbm.memory.enqueue(x, y)
        stored_x, stored_y = xbm.memory.contents()
        np.testing.assert_array_equal(stored_x, x[-3:])
        np.testing.assert_array_equal(stored_y, y[-3:])


def test_start_step_delays_reading_and_writing():
    rng = np.random.default_rng(2)
    xbm = L.CrossBatchMemory("contrastive", memory_size=8, embedding_dim=3, start_step=2)
    for _ in range(2):
        y, x = _batch(rng, 4, 2)
        np.testing.assert_allclose(float(xbm(y, x)), float(L.ContrastiveLoss()(y, x)), rtol=1e-6)
        assert xbm.memory.contents()[0].shape == (0, 3)
    y, x = _batch(rng, 4, 2)
    xbm(y, x)
    np.testing.assert_array_equal(xbm.memory.contents()[0], x)


# ----------------------------------------------------------------------------- values and gradients


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_value_and_batch_gradient_match_the_reference_on_batch_plus_memory(name):
    rng = np.random.default_rng(3)
    xbm = L.CrossBatchMemory(LOSSES[name](), memory_size=12, embedding_dim=3)
    for _ in range(2):  # 8 of 12 slots filled: the empty ones must take no part
        y, x = _batch(rng, 4, 3)
        xbm.memory.enqueue(x, y)
    mem_x, mem_y = xbm.memory.contents()
    y, x = _batch(rng, 5, 3)
    with _held(xbm.memory):
        value, grad = value_and_grad(lambda t: xbm(y, t), x)
    expected = xbm_reference(name, y, x.astype(np.float64), mem_y, mem_x)
    np.testing.assert_allclose(value, expected, rtol=2e-5, atol=1e-6)
    numeric = numerical_gradient(lambda t: xbm_reference(name, y, t, mem_y, mem_x), x.astype(np.float64))
    np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=2e-4)
    np.testing.assert_array_equal(xbm.memory.contents()[0], mem_x)  # the held scope changed nothing


def test_batch_hard_mining_runs_over_batch_plus_memory():
    rng = np.random.default_rng(7)
    xbm = L.CrossBatchMemory(L.TripletLoss(mining="hard"), memory_size=10, embedding_dim=3)
    mem_y, mem_x = _batch(rng, 6, 3)
    xbm.memory.enqueue(mem_x, mem_y)
    y, x = _batch(rng, 5, 3)
    refs, ref_y = np.concatenate([x, mem_x]).astype(np.float64), np.concatenate([y, mem_y])
    hinges = []
    for i in range(5):  # the farthest positive and the nearest negative among batch + memory
        d = np.sum((refs - refs[i]) ** 2, axis=1)
        positive = [d[k] for k in range(11) if k != i and ref_y[k] == y[i]]
        negative = [d[k] for k in range(11) if ref_y[k] != y[i]]
        if positive and negative:
            hinges.append(max(max(positive) - min(negative) + 1.0, 0.0))
    np.testing.assert_allclose(float(xbm(y, x)), np.mean(hinges), rtol=1e-5)


@pytest.mark.parametrize(
    "loss",  # [B, N] paths: count_below, Triplets.pairs in window and in choice form
    [
        lambda: L.TripletLoss(miner="semihard"),
        lambda: L.ContrastiveLoss(miner="triplet_margin"),
        lambda: L.ContrastiveLoss(miner="batch_easy_hard"),
    ],
)
def test_triplet_miners_mine_batch_plus_memory(loss):
    rng = np.random.default_rng(8)
    xbm = L.CrossBatchMemory(loss(), memory_size=10, embedding_dim=3)
    xbm.memory.enqueue(*reversed(_batch(rng, 6, 3)))
    assert np.isfinite(float(xbm(*_batch(rng, 5, 3))))


def test_empty_memory_gives_the_wrapped_loss_and_memory_changes_the_value():
    rng = np.random.default_rng(4)
    loss = L.MultiSimilarityLoss()  # with its miner
    xbm = L.CrossBatchMemory(loss, memory_size=16, embedding_dim=3)
    y, x = np.array([0, 0, 0, 1, 1, 1]), rng.normal(size=(6, 3)).astype("float32")
    alone = float(loss(y, x))
    np.testing.assert_allclose(float(xbm(y, x)), alone, rtol=1e-6)
    assert not np.isclose(float(xbm(y, x)), alone)  # now against its own copy in memory


# ----------------------------------------------------------------------------- training and saving


def _data(rng, n=24):
    return rng.normal(size=(n, 8, 8, 1)).astype("float32"), np.arange(n) % 3


def test_metric_model_fit_fills_the_memory_and_keras_file_keeps_it(tmp_path):
    rng = np.random.default_rng(5)
    x, y = _data(rng)
    xbm = L.CrossBatchMemory("multi_similarity", memory_size=20)
    model = kerasml.models.MetricModel(tiny_backbone(), embedding_dim=4, loss=xbm)
    assert model.parameter_groups == ("metric",)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    stored_x, stored_y = xbm.memory.contents()
    assert stored_x.shape == (20, 4) and np.abs(stored_x).sum() > 0
    np.testing.assert_array_equal(stored_y, y[-20:])
    assert int(xbm.memory.steps.numpy()) == 3
    path = tmp_path / "xbm.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    memory = restored.base_loss.memory
    np.testing.assert_array_equal(memory.contents()[0], stored_x)
    np.testing.assert_array_equal(memory.contents()[1], stored_y)
    assert restored.base_loss.memory_size == 20 and isinstance(restored.base_loss.loss, L.MultiSimilarityLoss)
    restored.fit(x[:8], y[:8], batch_size=8, epochs=1, shuffle=False, verbose=0)  # the resumed run continues the FIFO
    assert int(memory.steps.numpy()) == 4
    np.testing.assert_array_equal(memory.contents()[1], np.concatenate([y[-12:], y[:8]]))


def _user_model():
    inputs = keras.Input((5,))
    return keras.Model(inputs, keras.layers.Dense(3)(inputs))


def test_a_users_functional_model_owning_the_memory_fills_it():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(16, 5)).astype("float32"), np.arange(16) % 4
    xbm = L.CrossBatchMemory("contrastive", memory_size=12, embedding_dim=3)
    model = _user_model()
    model.loss_memory = xbm.memory  # the one line
    model.compile(optimizer="sgd", loss=xbm)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_array_equal(xbm.memory.contents()[1], y[-12:])


@pytest.mark.skipif(BACKEND != "jax", reason="TensorFlow and PyTorch steps assign in place")
def test_jax_compile_without_owning_the_memory_raises():
    xbm = L.CrossBatchMemory("contrastive", memory_size=8, embedding_dim=3)
    model = _user_model()
    model.compile(optimizer="sgd", loss=xbm)
    x, y = np.ones((8, 5), "float32"), np.arange(8) % 2
    with pytest.raises(ValueError, match=r"loss_memory = xbm\.memory"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)


# ----------------------------------------------------------------------------- errors and config


@pytest.mark.parametrize(
    "loss, words",
    [
        ("npair", "needs batches"),
        ("fast_ap", "does not compare"),
        (lambda: L.TripletLoss(mining="structured"), "needs batches"),
        (lambda: L.ProxyAnchorLoss(num_classes=3), "does not compare"),
        (lambda: L.ContrastiveLoss(miner="distance_weighted"), "DistanceWeightedMiner"),
    ],
)
def test_a_loss_without_a_reference_form_raises(loss, words):
    with pytest.raises(ValueError, match=words) as error:
        L.CrossBatchMemory(loss() if callable(loss) else loss, memory_size=8)
    assert "Expected a pair-based kerasml loss" in str(error.value)


def test_bad_sizes_and_missing_embedding_dim_raise():
    with pytest.raises(ValueError, match="memory_size"):
        L.CrossBatchMemory("contrastive", memory_size=0)
    with pytest.raises(ValueError, match="needs `embedding_dim`"):
        L.CrossBatchMemory("contrastive").memory  # noqa: B018
    with pytest.raises(ValueError, match="embedding_dim=4"):
        L.CrossBatchMemory("contrastive", embedding_dim=4).configure(embedding_dim=5)


def test_config_round_trip():
    xbm = L.CrossBatchMemory(L.CircleLoss(m=0.4, gamma=80), memory_size=32, embedding_dim=6, start_step=5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(xbm))
    assert isinstance(restored, L.CrossBatchMemory) and isinstance(restored.loss, L.CircleLoss)
    assert (restored.memory_size, restored.embedding_dim, restored.start_step) == (32, 6, 5)
    assert restored.loss.gamma == 80 and restored.memory.embeddings.shape == (32, 6)


# ----------------------------------------------------------------------------- specs

_SPEC = """
[experiment]
name = "t"
[data]
builtin = "digits"
[model]
backbone = "small_cnn"
hdml = false
[loss]
type = "supcon"
memory = {size = 64, start_step = 3}
[train]
batch_size = 10
max_steps = 30
"""


def test_a_spec_memory_table_wraps_the_loss_and_round_trips():
    from kerasml.experiment import build_loss
    from kerasml.spec import dump_spec, parse_spec

    spec = parse_spec(_SPEC)
    assert (spec.loss.memory.size, spec.loss.memory.start_step) == (64, 3)
    assert parse_spec(dump_spec(spec)) == spec
    loss = build_loss(spec)
    assert isinstance(loss, L.CrossBatchMemory) and isinstance(loss.loss, L.SupConLoss)
    assert (loss.memory_size, loss.start_step) == (64, 3)
    assert parse_spec(_SPEC.replace("memory = {size = 64, start_step = 3}\n", "")).loss.memory is None


@pytest.mark.parametrize(
    "table, words",
    [
        ('type = "npair"\nmemory = {size = 64}', "NPairLoss needs batches"),
        ('type = "contrastive"\nmemory = {size = 0}', "size = <int >= 1>"),
        ('type = "contrastive"\nmemory = {sise = 3}', "size = <int >= 1>"),
    ],
)
def test_a_bad_spec_memory_is_a_problem_at_loss_memory(table, words):
    from kerasml.spec import SpecError, parse_spec

    with pytest.raises(SpecError) as error:
        parse_spec(_SPEC.replace('type = "supcon"\nmemory = {size = 64, start_step = 3}', table))
    assert "loss.memory" in str(error.value) and words in str(error.value)
