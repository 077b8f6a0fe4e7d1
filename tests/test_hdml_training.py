"""HDMLModel trains on every backend: routing, safety, the study's failing configurations."""

import keras
import numpy as np
import pytest
from helpers import BACKEND, digits_npair_batches, digits_triplet_batches, tiny_backbone

import kerasml
from kerasml.hdml import HDMLModel, ParameterGroupOptimizer
from kerasml.models import MetricModel

GROUPS = ("metric", "generator", "classifier")


def _model(loss="npair", **kwargs):
    options = dict(embedding_dim=6, num_classes=10, generator_units=16, block_size=4)
    options.update(kwargs)
    return HDMLModel(tiny_backbone(), loss=loss, **options)


def _group_values(model):
    groups = {group: [] for group in GROUPS}
    for variable in model.trainable_variables:
        groups[model.optimizer.group_of(variable)].append(np.array(keras.ops.convert_to_numpy(variable)))
    return groups


class Scaled(HDMLModel):
    """An HDMLModel whose three objectives can be zeroed, to check gradient routing."""

    scales = {"metric": 1.0, "generator": 1.0, "classifier": 1.0}

    def objective(self, j_metric, j_gen, j_cls):
        s = self.scales
        return s["metric"] * j_metric + s["generator"] * j_gen + s["classifier"] * j_cls


def test_gradient_routing_each_group_learns_from_its_own_objective():
    rng = np.random.default_rng(0)
    x, y = digits_npair_batches(rng, steps=1, pairs=5)
    template = Scaled(
        tiny_backbone(), embedding_dim=6, num_classes=10, generator_units=16, alpha=700.0, beta=700.0, initial_mean=1e3
    )  # λ₀ ≈ w ≈ 0.5: every term active
    initial = template.get_weights()

    def one_step(**scales):
        model = Scaled.from_config(template.get_config())
        model.set_weights(initial)
        model.scales = {**Scaled.scales, **scales}
        model.compile(optimizer={g: keras.optimizers.SGD(0.05) for g in GROUPS})
        before = _group_values(model)
        model.fit(x, y, batch_size=len(y), epochs=1, shuffle=False, verbose=0)
        after = _group_values(model)
        return {g: [a - b for a, b in zip(after[g], before[g])] for g in GROUPS}

    full = one_step()
    for group in GROUPS:
        assert any(np.abs(d).max() > 0 for d in full[group]), f"{group} did not move"
    for zeroed in GROUPS:
        delta = one_step(**{zeroed: 0.0})
        for group in GROUPS:
            for got, expected in zip(delta[group], full[group]):
                if group == zeroed:
                    assert np.all(got == 0.0), f"{group} moved although its objective was zeroed"
                else:
                    np.testing.assert_allclose(
                        got, expected, rtol=2e-4, atol=1e-7, err_msg=f"zeroing {zeroed} changed the update of {group}"
                    )


def test_parameter_group_optimizer_equals_separate_optimizers():
    rng = np.random.default_rng(1)
    shapes = [(3, 2), (2,), (4,)]
    paths = ["body", "head", "gen"]
    values = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [[keras.ops.convert_to_tensor(rng.normal(size=s).astype("float32")) for s in shapes] for _ in range(3)]

    def variables():
        return [keras.Variable(v, name=p) for v, p in zip(values, paths)]

    grouped_vars = variables()
    grouped = ParameterGroupOptimizer(
        {
            "a": keras.optimizers.Adam(0.1, epsilon=1e-8),
            "b": keras.optimizers.SGD(0.01, momentum=0.9),
            "c": keras.optimizers.Adam(0.3),
        },
        prefixes={"b": ["head"], "c": ["gen"]},
    )
    separate_vars = variables()
    separate = [
        keras.optimizers.Adam(0.1, epsilon=1e-8),
        keras.optimizers.SGD(0.01, momentum=0.9),
        keras.optimizers.Adam(0.3),
    ]
    for step in grads:
        grouped.apply(step, grouped_vars)
        for opt, g, v in zip(separate, step, separate_vars):
            opt.apply([g], [v])
    for a, b in zip(grouped_vars, separate_vars):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert int(grouped.iterations) == 3


def test_hdml_logs_every_term_and_tracks_the_block_means():
    rng = np.random.default_rng(2)
    x, y = digits_npair_batches(rng, steps=8, pairs=5)
    model = _model(block_size=4)
    model.compile()
    history = model.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0).history
    for term in ("J_m", "J_syn", "J_metric", "J_recon", "J_soft", "J_gen", "J_cls", "w", "loss"):
        assert np.isfinite(history[term][0]), term
    assert 0.0 < history["w"][0] < 1.0
    # 8 steps, blocks of 4: both block means have left their 1e6 start.
    assert float(model.augmentation.j_avg.value) < 1e3
    assert float(model.j_gen_mean.value) < 1e6


@pytest.mark.parametrize(
    ("loss", "batch"),
    [
        (kerasml.losses.TripletLoss(mining="structured"), 15),
        (kerasml.losses.NPairLoss(l2_reg=0.0015), 16),
        (kerasml.losses.NPairLoss(l2_reg=0.0015), 18),
    ],
    ids=["triplet-hdml-15", "npair-hdml-16", "npair-hdml-18"],
)
def test_the_study_failing_configurations_run_100_finite_steps(loss, batch):
    """The study got NaN (triplet, batch 15) or refusals (N-pair, batches not dividing 128)."""
    rng = np.random.default_rng(3)
    if batch % 3 == 0 and isinstance(loss, kerasml.losses.TripletLoss):
        x, y = digits_triplet_batches(rng, steps=100, n=batch // 3)
    else:
        x, y = digits_npair_batches(rng, steps=100, pairs=batch // 2)
    model = _model(loss=loss, block_size=16, beta=1e4)
    model.compile()
    history = model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0).history
    assert model.optimizer.iterations.numpy() == 100
    for term, values in history.items():
        assert np.all(np.isfinite(values)), f"{term} is not finite"
    for variable in model.weights:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(variable))), variable.path


@pytest.mark.parametrize("case", ["duplicate_images", "j_avg_zero", "j_avg_huge", "j_gen_zero", "j_gen_huge"])
@pytest.mark.parametrize("loss", ["npair", "triplet"])
def test_degenerate_first_steps_stay_finite(case, loss):
    rng = np.random.default_rng(4)
    if loss == "npair":
        x, y = digits_npair_batches(rng, steps=3, pairs=4)
        base = kerasml.losses.NPairLoss()
    else:
        x, y = digits_triplet_batches(rng, steps=3, n=4)
        base = kerasml.losses.TripletLoss(mining="structured")
    if case == "duplicate_images":
        x = np.repeat(x[:1], len(x), axis=0)  # every z identical: d⁺ = d⁻ = 0
    model = _model(loss=base)
    if case.startswith("j_avg"):
        model.augmentation.j_avg.value.assign(0.0 if case.endswith("zero") else 1e30)
    if case.startswith("j_gen"):
        model.j_gen_mean.value.assign(0.0 if case.endswith("zero") else 1e30)
    model.compile()
    history = model.fit(x, y, batch_size=len(y) // 3, epochs=1, shuffle=False, verbose=0).history
    for term, values in history.items():
        assert np.all(np.isfinite(values)), f"{term} is not finite"
    for variable in model.trainable_variables:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(variable))), variable.path


def test_triplet_batch_of_one_class():
    """Eagerly, the layout error names the rule; compiled, the step stays finite."""
    rng = np.random.default_rng(5)
    x, _ = digits_triplet_batches(rng, steps=1, n=4)
    y = np.zeros(12, dtype="int32")
    model = _model(loss=kerasml.losses.TripletLoss(mining="structured"))
    model.compile()
    with pytest.raises(ValueError, match=r"labels\[0\] and labels\[8\] are both 0"):
        model.compute_loss(x=x, y=y, y_pred=model(x, training=True), training=True)
    if BACKEND != "torch":  # torch's fit is eager, so it raises as above
        history = model.fit(x, y, batch_size=12, epochs=1, verbose=0).history
        assert all(np.isfinite(v[0]) for v in history.values())


def test_npair_hdml_accepts_any_even_batch_and_names_the_broken_rule():
    model = _model()
    x = np.zeros((14, 8, 8, 1), "float32")
    good = np.r_[np.arange(7), np.arange(7)].astype("int32")
    value = model.compute_loss(x=x, y=good, y_pred=model(x, training=True), training=True)
    assert np.isfinite(float(keras.ops.convert_to_numpy(value)))
    bad = np.r_[np.arange(7), np.arange(7)[::-1]].astype("int32")
    with pytest.raises(ValueError, match=r"labels\[i\] == labels\[N \+ i\].*NPairSampler"):
        model.compute_loss(x=x, y=bad, y_pred=model(x, training=True), training=True)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.9; received label\(s\) \[12\]"):
        labels = good.copy()
        labels[[0, 7]] = 12
        model.compute_loss(x=x, y=labels, y_pred=model(x, training=True), training=True)


@pytest.mark.parametrize(
    ("loss", "pattern"),
    [
        # contrastive and lifted have HDML's pair synthesis since issue 12 (tests/test_hdml_pairs.py)
        ("supcon", r"SupConLoss has no anchor/positive/negative tuples"),
        (kerasml.losses.TripletLoss(mining="semihard"), r"mining='semihard'.*TripletLoss\(mining='structured'\)"),
        ("fast_ap", r"FastAPLoss"),
    ],
)
def test_losses_without_synthesis_are_refused_clearly(loss, pattern):
    with pytest.raises(ValueError, match=pattern):
        _model(loss=loss)
    MetricModel(tiny_backbone(), embedding_dim=6, loss=loss)  # the plain model takes any loss


def test_construction_errors():
    with pytest.raises(ValueError, match=r"num_classes"):
        HDMLModel(tiny_backbone(), loss="npair")
    with pytest.raises(ValueError, match=r"synthetic_statistics"):
        _model(synthetic_statistics="both")
    with pytest.raises(ValueError, match=r"base loss at construction"):
        _model().compile(loss="mse")


def test_plain_model_trains_any_loss():
    rng = np.random.default_rng(6)
    x, y = digits_npair_batches(rng, steps=6, pairs=5)
    model = MetricModel(tiny_backbone(), embedding_dim=6, loss=kerasml.losses.ContrastiveLoss(), weight_decay=1e-3)
    model.compile(learning_rates={"metric": 1e-2})
    history = model.fit(x, y, batch_size=10, epochs=2, shuffle=False, verbose=0).history
    assert set(history) == {"loss", "J_m"}
    assert history["loss"][1] < history["loss"][0]
    assert model.embed(x[:4]).shape == (4, 6)


def test_200_steps_lower_j_m_and_j_gen():
    rng = np.random.default_rng(7)
    x, y = digits_npair_batches(rng, steps=200, pairs=5, noise=0.05)
    model = HDMLModel(tiny_backbone(features=32), embedding_dim=16, num_classes=10, generator_units=32, block_size=20)
    model.compile(learning_rates={"metric": 1e-3})
    history = model.fit(x, y, batch_size=10, epochs=10, steps_per_epoch=20, shuffle=False, verbose=0).history
    assert history["J_m"][-1] < 0.8 * history["J_m"][0], history["J_m"]
    assert history["J_gen"][-1] < 0.8 * history["J_gen"][0], history["J_gen"]


@pytest.mark.filterwarnings("error::UserWarning")
def test_keras_file_restores_optimizer_and_block_means_for_an_exact_resume(tmp_path):
    x, y = digits_npair_batches(np.random.default_rng(8), steps=4, pairs=5)
    model = _model(block_size=2)
    model.compile()
    model.fit(x[:20], y[:20], batch_size=10, epochs=1, shuffle=False, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(restored.optimizer, ParameterGroupOptimizer)
    assert int(restored.optimizer.iterations) == 2
    assert float(restored.augmentation.j_avg.value) == float(model.augmentation.j_avg.value) < 1e6
    for m in (model, restored):
        m.fit(x[20:], y[20:], batch_size=10, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), err_msg=a.path)
