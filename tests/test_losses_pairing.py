"""N-pair and angular losses find their pairs from the labels, in any order, eagerly and in a graph.

The objective on a shuffled batch is the N-pair objective whose anchors are each class's first
sample: it equals the loss of the same batch rearranged as ``[a_1..a_N; p_1..p_N]`` (anchors in
order of first appearance, then their positives), value and gradient, on every backend.
"""

import keras
import numpy as np
import pytest
from helpers import BACKEND, value_and_grad

import kerasml
from kerasml.losses import layouts, pairing

N, D = 6, 5
LOSSES = {
    "npair": lambda: kerasml.losses.NPairLoss(l2_reg=0.002),
    "angular": lambda: kerasml.losses.AngularLoss(npair_weight=0.5, l2_reg=0.01),
    "angular_only": lambda: kerasml.losses.AngularLoss(alpha_degrees=35.0),
}


def _batch(seed):
    rng = np.random.default_rng(seed)
    classes = rng.choice(50, size=N, replace=False).astype("int32")
    labels = np.r_[classes, classes]
    x = rng.normal(size=(2 * N, D)).astype("float32")
    return rng, labels, x


def _halves_order(labels):
    """Row order that turns a batch with each class twice into [first samples; second samples]."""
    first = [i for i in range(len(labels)) if labels[i] not in labels[:i]]
    second = [next(j for j in range(i + 1, len(labels)) if labels[j] == labels[i]) for i in first]
    return np.array(first + second)


def _compiled_value_and_grad(loss, labels, x):
    """Value and gradient with the labels as a traced input (the graph path), where the backend has one."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, D], tf.float32)])
        def step(y, t):
            with tf.GradientTape() as tape:
                tape.watch(t)
                value = loss(y, t)
            return value, tape.gradient(value, t)

        value, grad = step(labels, x)
        return float(value), grad.numpy()
    if BACKEND == "jax":
        import jax

        value, grad = jax.jit(jax.value_and_grad(lambda t, y: loss(y, t)))(x, labels)
        return float(value), np.asarray(grad)
    return value_and_grad(lambda t: loss(labels, t), x)  # torch runs eagerly


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_shuffled_batch_equals_its_halves_order(name, seed, compiled):
    rng, labels, x = _batch(seed)
    perm = rng.permutation(2 * N)
    shuffled_labels, shuffled_x = labels[perm], x[perm]
    order = _halves_order(shuffled_labels)
    loss = LOSSES[name]()
    run = _compiled_value_and_grad if compiled else (lambda f, y, t: value_and_grad(lambda u: f(y, u), t))
    value, grad = run(loss, shuffled_labels, shuffled_x)
    ref_value, ref_grad = run(loss, shuffled_labels[order], shuffled_x[order])
    assert value == pytest.approx(ref_value, rel=1e-5)
    back = np.empty_like(ref_grad)
    back[order] = ref_grad  # row order[k] of the shuffled batch is row k of the halves batch
    np.testing.assert_allclose(grad, back, rtol=1e-5, atol=1e-7)
    assert np.abs(grad).max() > 1e-3  # the comparison is not between zeros


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_within_class_order_kept_gives_the_structured_value(name):
    # A shuffle that keeps each class's anchor before its positive is the same batch of pairs.
    rng, labels, x = _batch(2)
    perm = rng.permutation(2 * N)
    for c in labels[:N]:
        rows = np.flatnonzero(labels[perm] == c)
        if perm[rows[0]] >= N:  # the positive came first: swap the two back
            perm[rows[0]], perm[rows[1]] = perm[rows[1]], perm[rows[0]]
    loss = LOSSES[name]()
    assert float(loss(labels[perm], x[perm])) == pytest.approx(float(loss(labels, x)), rel=1e-5)


def test_pairs_from_labels_and_halves_detection():
    def run(values):
        y = keras.ops.convert_to_tensor(np.array(values, "int32"))
        anchor, partner = pairing.pairs_from_labels(y)
        halves = pairing.halves_are_pairs(y)
        return (
            keras.ops.convert_to_numpy(anchor).tolist(),
            keras.ops.convert_to_numpy(partner).tolist(),
            bool(keras.ops.convert_to_numpy(halves)),
        )

    assert run([3, 7, 3, 7]) == ([True, True, False, False], [2, 3, 0, 0], True)
    anchors, partners, halves = run([5, 3, 7, 7, 3, 5])
    assert (anchors, halves) == ([True, True, True, False, False, False], False)
    assert partners[:3] == [5, 4, 3]
    anchors, partners, halves = run([4, 4, 4, 4])  # a class seen 4 times: its first two pair up
    assert (anchors, partners[0], halves) == ([True, False, False, False], 1, False)
    assert run([1, 2, 3])[0] == [False, False, False]  # no class twice: no pair


@pytest.mark.parametrize(
    ("labels", "pattern"),
    [
        (np.array([0, 1, 0]), r"even batch.*Received a batch of 3.*NPairSampler"),
        (np.array([4, 4, 4, 4]), r"distinct classes, each exactly twice.*\[4\].*4: 4x.*NPairSampler"),
        (np.array([0, 1, 1, 2]), r"each exactly twice.*\[0, 2\].*NPairSampler"),
    ],
)
@pytest.mark.parametrize("name", ["npair", "angular"])
def test_a_class_not_exactly_twice_is_an_eager_error(name, labels, pattern):
    with pytest.raises(ValueError, match=pattern):
        LOSSES[name]()(labels, np.zeros((labels.shape[0], 2), dtype=np.float32))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_broken_batches_stay_finite_in_a_graph(name):
    if BACKEND == "torch":
        pytest.skip("torch runs eagerly: the layout check raises instead (test above)")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, D)).astype("float32")
    loss = LOSSES[name]()
    for labels in ([4, 4, 4, 4, 1, 2, 3, 5], [1, 2, 3, 4, 5, 6, 7, 8], [9, 9, 9, 9, 9, 9, 9, 9]):
        value, grad = _compiled_value_and_grad(loss, np.array(labels, "int32"), x)
        assert np.isfinite(value) and np.all(np.isfinite(grad)), labels


def test_the_layouts_say_it():
    assert kerasml.losses.NPairLoss().layout is layouts.PAIRS
    assert kerasml.losses.AngularLoss().layout is layouts.PAIRS
    assert layouts.PAIRS.sampler == layouts.NPAIR.sampler == "npair"
    assert layouts.PAIRS.batch_size_problem(7, "npair")[1] == "Use 6 or 8."
    # HDML still needs the halves: its augmentation reads the batch by position.
    with pytest.raises(ValueError, match=r"labels\[i\] == labels\[N \+ i\].*NPairSampler"):
        layouts.NPAIR.check_labels(np.array([0, 1, 1, 0]), "HDMLModel")
