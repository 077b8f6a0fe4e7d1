"""Miners and distances against the loop references of tests/reference_pairs.py, on the active backend.

What each miner selects (pairs, triplets, weights), the triplet and contrastive
losses over mined sets (values and finite-difference gradients), the `mining`
shorthands of `TripletLoss`, degenerate batches, configs, tracing under
``jax.jit`` / ``tf.function`` with an unknown batch size, and O(B²) memory
(no ``[B, B, B]`` intermediate, checked on the JAX program).
"""

import math
import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reference as ref
import reference_pairs as rp
from helpers import BACKEND, random_labels, value_and_grad

from kerasml import losses
from kerasml.losses import distances, miners

RTOL, ATOL = 1e-4, 1e-5
GRAD_RTOL, GRAD_ATOL = 2e-2, 2e-3
DECISION_GAP = 1e-3  # every mining decision this far from its boundary (float32 cannot flip it)
B, D = 10, 4


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def draw(seed, b=B, d=D, classes=3, spread=1.0, gap=None):
    """Labels and float32 points; with ``gap(labels, x)``, redrawn until every decision is clear."""
    rng = np.random.default_rng(seed)
    for _ in range(500):
        labels = random_labels(rng, b, classes)
        x = (rng.normal(size=(b, d)) * spread / math.sqrt(2.0 * d)).astype(np.float32)
        if gap is None or gap(labels, x) > DECISION_GAP:
            return labels, x
    raise AssertionError("could not draw a batch with clear mining decisions")


def dis(x, distance):
    return rp.dissimilarity(np.asarray(x, dtype=np.float64), distance)


def mined_sets(mined, d):
    """``(triplets {(a, p, n): weight} or None, (positive pairs, negative pairs))`` of a kerasml result."""
    d = to_numpy(d)
    pairs = mined.pairs(keras.ops.convert_to_tensor(d))
    positive = {tuple(map(int, ij)) for ij in np.argwhere(to_numpy(pairs.positive))}
    negative = {tuple(map(int, ij)) for ij in np.argwhere(to_numpy(pairs.negative))}
    if isinstance(mined, miners.Pairs):
        return None, (positive, negative)
    chosen = to_numpy(mined.positive)
    triplets = {}
    if mined.choice is not None:
        choice = to_numpy(mined.choice)
        for a, p in np.argwhere(chosen):
            triplets[(int(a), int(p), int(choice[a, p]))] = 1.0
    else:
        weights = to_numpy(mined.negative)
        for a, p in np.argwhere(chosen):
            for n in np.flatnonzero(weights[a] > 0):
                if mined.low < d[a, n] - d[a, p] <= mined.high:
                    triplets[(int(a), int(p), int(n))] = float(weights[a, n])
    return triplets, (positive, negative)


def run_miner(miner, labels, x, distance):
    dist = distances.get(distance)
    matrix = dist.pairwise(x)
    d = dist.dissimilarity(matrix)
    return miner(labels, x, distance), d


# Triplet miners: (id, miner, reference of (labels, x, D) -> (triplets, gap)).
TRIPLET_MINERS = [
    ("batch_hard", miners.BatchHardMiner(), lambda y, x, d: rp.batch_hard(y, d)),
    ("easy_semihard", miners.BatchEasyHardMiner(), lambda y, x, d: rp.batch_easy_hard(y, d)),
    (
        "easy_hard",
        miners.BatchEasyHardMiner("easy", "hard"),
        lambda y, x, d: rp.batch_easy_hard(y, d, "easy", "hard"),
    ),
    (
        "semihard_easy",
        miners.BatchEasyHardMiner("semihard", "easy"),
        lambda y, x, d: rp.batch_easy_hard(y, d, "semihard", "easy"),
    ),
    (
        "hard_semihard",
        miners.BatchEasyHardMiner("hard", "semihard"),
        lambda y, x, d: rp.batch_easy_hard(y, d, "hard", "semihard"),
    ),
    ("semihard", miners.SemiHardMiner(), lambda y, x, d: rp.semihard(y, d)),
    *[
        (
            f"margin_{kind}",
            miners.TripletMarginMiner(0.3, kind),
            lambda y, x, d, kind=kind: rp.triplet_margin(y, d, 0.3, kind),
        )
        for kind in ("all", "hard", "semihard", "easy")
    ],
    ("distance_weighted", miners.DistanceWeightedMiner(), lambda y, x, d: rp.distance_weighted(y, x)),
]
TRIPLET_IDS = [case[0] for case in TRIPLET_MINERS]


@pytest.mark.parametrize("distance", ["squared", "cosine"])
@pytest.mark.parametrize(("name", "miner", "reference"), TRIPLET_MINERS, ids=TRIPLET_IDS)
def test_triplet_miner_selects_the_reference_triplets(name, miner, reference, distance):
    labels, x = draw(10, gap=lambda y, z: reference(y, z, dis(z, distance))[1])
    want, _ = reference(labels, x, dis(x, distance))
    mined, d = run_miner(miner, labels, x, distance)
    got, (positive, negative) = mined_sets(mined, d)
    want = want if isinstance(want, dict) else dict.fromkeys(want, 1.0)
    assert want, "the case must select some triplets"
    assert set(got) == set(want)
    np.testing.assert_allclose([got[k] for k in sorted(want)], [want[k] for k in sorted(want)], rtol=1e-4)
    want_positive, want_negative = rp.pairs_of_triplets(want)
    assert (positive, negative) == (want_positive, want_negative)


PAIR_MINERS = [
    ("multi_similarity", miners.MultiSimilarityMiner(0.1), lambda y, m, sim, d: rp.multi_similarity_pairs(y, d, 0.1)),
    ("ms_wide", miners.MultiSimilarityMiner(0.5), lambda y, m, sim, d: rp.multi_similarity_pairs(y, d, 0.5)),
    ("pair_margin", miners.PairMarginMiner(0.3, 0.6), lambda y, m, sim, d: rp.pair_margin(y, m, sim, 0.3, 0.6)),
]


@pytest.mark.parametrize("distance", ["squared", "euclidean", "cosine", "dot"])
@pytest.mark.parametrize(("name", "miner", "reference"), PAIR_MINERS, ids=[c[0] for c in PAIR_MINERS])
def test_pair_miner_selects_the_reference_pairs(name, miner, reference, distance):
    is_similarity = rp.DISTANCES[distance][1]

    def run_reference(y, z):
        return reference(y, rp.matrix(z, distance), is_similarity, dis(z, distance))

    labels, x = draw(20, gap=lambda y, z: run_reference(y, z)[1])
    (want_positive, want_negative), _ = run_reference(labels, x)
    mined, d = run_miner(miner, labels, x, distance)
    got, pairs = mined_sets(mined, d)
    assert got is None
    assert pairs == (want_positive, want_negative)
    # As triplets: every mined positive pair with every mined negative pair of its anchor.
    triplets, _ = mined_sets(mined.triplets(), d)
    assert set(triplets) == set(rp.triplets_of_pairs(want_positive, want_negative))


# ------------------------------------------------------------ losses over mined sets


@pytest.mark.parametrize(("name", "miner", "reference"), TRIPLET_MINERS, ids=TRIPLET_IDS)
def test_triplet_loss_with_a_triplet_miner(name, miner, reference):
    distance, margin = ("euclidean", 0.3) if name != "distance_weighted" else ("cosine", 0.2)
    labels, x = draw(30, gap=lambda y, z: reference(y, z, dis(z, distance))[1])
    triplets, _ = reference(labels, x, dis(x, distance))
    want = rp.triplet_hinge(triplets, dis(x, distance), margin)
    loss = losses.TripletLoss(margin=margin, distance=distances.get(distance), miner=miner)
    np.testing.assert_allclose(float(loss(labels, x)), want, rtol=RTOL, atol=ATOL)
    function = losses.triplet_loss(labels, x, margin, distance={"type": distance}, miner=miner)
    np.testing.assert_allclose(float(function), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("name", "miner", "reference"), PAIR_MINERS, ids=[c[0] for c in PAIR_MINERS])
def test_triplet_loss_with_a_pair_miner(name, miner, reference):
    labels, x = draw(40, gap=lambda y, z: reference(y, rp.matrix(z, "squared"), False, dis(z, "squared"))[1])
    (positive, negative), _ = reference(labels, rp.matrix(x, "squared"), False, dis(x, "squared"))
    want = rp.triplet_hinge(rp.triplets_of_pairs(positive, negative), dis(x, "squared"), 1.0)
    np.testing.assert_allclose(float(losses.TripletLoss(miner=miner)(labels, x)), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    ("name", "miner", "reference"),
    [
        c
        for c in TRIPLET_MINERS
        if c[0] in ("batch_hard", "semihard", "margin_semihard", "margin_all", "distance_weighted")
    ]
    + PAIR_MINERS[:1],
    ids=["batch_hard", "semihard", "margin_all", "margin_semihard", "distance_weighted", "multi_similarity"],
)
def test_contrastive_loss_with_a_miner(name, miner, reference):
    """Contrastive ranks by Euclidean distance; a triplet miner contributes the pairs of its triplets."""

    def selected(y, z):
        if isinstance(miner, miners.MultiSimilarityMiner):
            return reference(y, rp.matrix(z, "euclidean"), False, dis(z, "euclidean"))
        triplets, gap = reference(y, z, dis(z, "euclidean"))
        return rp.pairs_of_triplets(triplets), gap

    labels, x = draw(50, gap=lambda y, z: selected(y, z)[1])
    want = rp.contrastive(selected(labels, x)[0], x, margin=0.5)
    np.testing.assert_allclose(float(losses.ContrastiveLoss(0.5, miner=miner)(labels, x)), want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(float(losses.contrastive_loss(labels, x, 0.5, miner)), want, rtol=RTOL, atol=ATOL)


def test_triplet_margin_window_by_hand():
    # Line: x0=0, x1=1 (class 0), x2=1.5, x3=-0.5 (class 1); squared distances from x0: p 1, n 2.25, 0.25.
    # Triplets of anchor 0: (0,1,2) D_an - D_ap = 1.25; (0,1,3) -0.75. Anchor 1: p=0 at 1; n2 0.25 -> -0.75,
    # n3 2.25 -> 1.25. Anchor 2: p3 at 4; n0 2.25 -> -1.75; n1 0.25 -> -3.75. Anchor 3: p2 at 4; n0 .25,
    # n1 2.25 -> -3.75, -1.75. With margin 1: "semihard" (0, 1] selects nothing; "easy" (1, inf) two
    # triplets with hinge 0; "hard" (-inf, 0] the other six: (0,1,3) 1.75, (1,0,2) 1.75, (2,3,0) 2.75,
    # (2,3,1) 4.75, (3,2,0) 4.75, (3,2,1) 2.75 -> mean 18.5 / 6.
    labels = np.array([0, 0, 1, 1])
    x = np.array([[0.0], [1.0], [1.5], [-0.5]], dtype=np.float32)
    for kind, want in (("semihard", 0.0), ("easy", 0.0), ("hard", 18.5 / 6), ("all", 18.5 / 6)):
        loss = losses.TripletLoss(margin=1.0, miner=miners.TripletMarginMiner(1.0, kind))
        np.testing.assert_allclose(float(loss(labels, x)), want, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------- gradients


GRADIENT_CASES = [
    ("margin_semihard", miners.TripletMarginMiner(0.3, "semihard"), "euclidean"),
    ("margin_all", miners.TripletMarginMiner(0.3, "all"), "squared"),
    ("easy_semihard", miners.BatchEasyHardMiner(), "euclidean"),
    ("distance_weighted", miners.DistanceWeightedMiner(), "cosine"),
    ("multi_similarity", miners.MultiSimilarityMiner(), "cosine"),
]


@pytest.mark.parametrize(("name", "miner", "distance"), GRADIENT_CASES, ids=[c[0] for c in GRADIENT_CASES])
def test_triplet_loss_with_a_miner_gradient(name, miner, distance):
    """Autodiff of the mined loss against finite differences of the reference with the selection held.

    The selection (and the distance weights) are constants of the gradient, so the reference
    mines once at ``x`` and differentiates the hinge over those triplets; every hinge and every
    mining decision is at least DECISION_GAP from its kink.
    """
    margin = 0.4
    by_name = dict((c[0], c[2]) for c in TRIPLET_MINERS)

    def select(y, z):
        if name == "multi_similarity":
            (positive, negative), gap = rp.multi_similarity_pairs(y, dis(z, distance), 0.1)
            return rp.triplets_of_pairs(positive, negative), gap
        return by_name[name](y, z, dis(z, distance))

    def gap(y, z):
        triplets, mining_gap = select(y, z)
        d = dis(z, distance)
        hinges = [abs(d[(a, p)] - d[(a, n)] + margin) for (a, p, n) in triplets]
        return min([mining_gap, *hinges])

    labels, x = draw(60, classes=2, gap=gap)
    triplets, _ = select(labels, x)
    assert triplets
    loss = losses.TripletLoss(margin=margin, distance=distances.get(distance), miner=miner)
    value, grad = value_and_grad(lambda t: loss(labels, t), x)
    want = ref.numerical_gradient(lambda z: rp.triplet_hinge(triplets, dis(z, distance), margin), x.astype(np.float64))
    assert np.abs(want).max() > 5e-2
    np.testing.assert_allclose(value, rp.triplet_hinge(triplets, dis(x, distance), margin), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(grad, want, rtol=GRAD_RTOL, atol=GRAD_ATOL)


def test_contrastive_with_a_miner_gradient():
    def gap(y, z):
        (pairs, mining_gap) = rp.multi_similarity_pairs(y, dis(z, "euclidean"), 0.1)
        d = rp.matrix(z, "euclidean")
        return min([mining_gap, *(abs(1.0 - d[k]) for k in pairs[1])])

    labels, x = draw(70, classes=2, gap=gap)
    pairs, _ = rp.multi_similarity_pairs(labels, dis(x, "euclidean"), 0.1)
    loss = losses.ContrastiveLoss(margin=1.0, miner="multi_similarity")
    value, grad = value_and_grad(lambda t: loss(labels, t), x)
    want = ref.numerical_gradient(lambda z: rp.contrastive(pairs, z, 1.0), x.astype(np.float64))
    np.testing.assert_allclose(value, rp.contrastive(pairs, x, 1.0), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(grad, want, rtol=GRAD_RTOL, atol=GRAD_ATOL)


# --------------------------------------------------------- shorthands, errors, configs


@pytest.mark.parametrize(("mining", "miner"), [("hard", miners.BatchHardMiner()), ("semihard", miners.SemiHardMiner())])
@pytest.mark.parametrize("distance", ["squared", "euclidean"])
def test_mining_shorthands_are_their_miners(mining, miner, distance):
    labels, x = draw(80)
    short = losses.TripletLoss(mining=mining, distance=distance)(labels, x)
    explicit = losses.TripletLoss(miner=miner, distance=distance)(labels, x)
    assert float(short) == pytest.approx(float(explicit), rel=1e-6, abs=1e-7)
    want = ref.triplet(labels, x, 1.0, mining, distance)
    np.testing.assert_allclose(float(short), want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    ("factory", "pattern"),
    [
        (lambda: losses.TripletLoss(mining="hard", miner="semihard"), r"argument `miner`.*mining='hard'"),
        (lambda: losses.TripletLoss(mining="structured", miner="batch_hard"), r"argument `miner`"),
        (lambda: losses.ContrastiveLoss(miner="batch_hardd"), r"argument `miner`.*Did you mean 'batch_hard'"),
        (lambda: losses.MultiSimilarityLoss(distance="cosin"), r"argument `distance`.*Did you mean 'cosine'"),
        (lambda: losses.TripletLoss(distance="cosine"), r"argument `distance`.*distances.Cosine\(\)"),
        (lambda: miners.BatchEasyHardMiner("semihard", "semihard"), r"cannot both be 'semihard'"),
        (lambda: miners.BatchEasyHardMiner(neg_strategy="hardest"), r"argument `neg_strategy`.*'hardest'"),
        (lambda: miners.TripletMarginMiner(type_of_triplets="semi"), r"argument `type_of_triplets`"),
        (lambda: miners.get({"type": "nope"}), r"argument `miner`.*Received"),
    ],
)
def test_bad_miner_and_distance_arguments(factory, pattern):
    with pytest.raises(ValueError, match=pattern):
        factory()


def test_triplet_loss_takes_other_distances_as_objects():
    labels, x = draw(90)
    for distance in ("cosine", "dot"):
        loss = losses.TripletLoss(margin=0.2, distance=distances.get(distance))
        want = rp.triplet_hinge(rp.all_triplets(labels), dis(x, distance), 0.2)
        np.testing.assert_allclose(float(loss(labels, x)), want, rtol=RTOL, atol=ATOL)
        config = loss.get_config()
        assert config["distance"] == {"type": distance}
        assert losses.TripletLoss.from_config(config).get_config() == config


MINER_OBJECTS = [
    miners.BatchHardMiner(),
    miners.BatchEasyHardMiner("hard", "easy"),
    miners.SemiHardMiner(),
    miners.TripletMarginMiner(0.1, "semihard"),
    miners.DistanceWeightedMiner(0.3, 1.2),
    miners.MultiSimilarityMiner(0.2),
    miners.PairMarginMiner(0.1, 0.9),
]


@pytest.mark.parametrize("miner", MINER_OBJECTS, ids=lambda m: m.name)
def test_miner_and_distance_configs_round_trip(miner):
    assert miners.get(distances.serialize(miner)) == miner
    assert miners.get(miner.name) == type(miner)()
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(miner))
    assert revived == miner
    for loss in (losses.ContrastiveLoss(miner=miner), losses.TripletLoss(miner=miner, distance="euclidean")):
        config = loss.get_config()
        assert type(loss).from_config(config).get_config() == config
        assert losses.get({"type": loss.names[0], **{k: config[k] for k in ("miner",)}}).miner == miner
    for distance in (distances.Euclidean(normalize=True), distances.SquaredEuclidean(), distances.Cosine()):
        assert distances.get(distances.serialize(distance)) == distance
    assert miners.get("all") is None and miners.get(None) is None


# ------------------------------------------------------------ degenerate batches


@pytest.mark.parametrize("miner", MINER_OBJECTS, ids=lambda m: m.name)
@pytest.mark.parametrize("case", ["one_class", "distinct", "zeros", "duplicates"])
def test_mined_losses_are_finite_on_degenerate_batches(miner, case):
    rng = np.random.default_rng(5)
    labels = {"one_class": np.zeros(B), "distinct": np.arange(B)}.get(case, np.arange(B) % 3).astype(np.int64)
    x = rng.normal(size=(B, D)).astype(np.float32)
    if case == "zeros":
        x = np.zeros_like(x)
    elif case == "duplicates":
        x = np.concatenate([x[: B // 2], x[: B // 2]])
    for loss in (losses.TripletLoss(miner=miner, distance="euclidean"), losses.ContrastiveLoss(miner=miner)):
        value, grad = value_and_grad(lambda t, loss=loss: loss(labels, t), x)
        assert np.isfinite(value) and np.all(np.isfinite(grad))
        if case in ("one_class", "distinct") and isinstance(loss, losses.TripletLoss):
            assert value == 0.0 and np.all(grad == 0.0)


# --------------------------------------------------------------------- tracing


def _compiled(fn, d):
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        signature = [tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, d], tf.float32)]
        return tf.function(fn, input_signature=signature)  # unknown batch size, as Keras' fit traces
    return fn  # torch runs eagerly


@pytest.mark.parametrize("miner", MINER_OBJECTS, ids=lambda m: m.name)
def test_mined_losses_trace_with_static_shapes(miner):
    labels, x = draw(100)
    labels = labels.astype(np.int32)
    for loss in (losses.TripletLoss(miner=miner), losses.ContrastiveLoss(miner=miner)):
        eager = float(loss(labels, x))
        traced = _compiled(lambda y, t, loss=loss: loss(y, t), D)
        got = to_numpy(traced(keras.ops.convert_to_tensor(labels), keras.ops.convert_to_tensor(x)))
        np.testing.assert_allclose(float(got), eager, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(BACKEND != "jax", reason="reads the traced JAX program")
@pytest.mark.parametrize(
    "loss",
    [
        losses.TripletLoss(mining="all"),
        losses.TripletLoss(mining="semihard"),
        losses.TripletLoss(mining="hard"),
        *(losses.TripletLoss(miner=miner) for miner in MINER_OBJECTS),
        *(losses.ContrastiveLoss(miner=miner) for miner in MINER_OBJECTS),
        losses.MultiSimilarityLoss(),
        losses.CircleLoss(miner="semihard"),
        losses.SupConLoss(),
        losses.NTXentLoss(),
        losses.TupletMarginLoss(),
        losses.FastAPLoss(),
    ],
    ids=lambda loss: f"{type(loss).__name__}-{loss.get_config().get('mining', '')}-{loss.get_config().get('miner')}",
)
def test_mining_never_builds_a_cubic_tensor(loss):
    """No value of the loss's program (forward and backward) has B³/4 elements or more."""
    import jax

    b = 24
    labels, x = draw(110, b=b, d=3, classes=4)

    def program(t):
        return loss(labels.astype(np.int32), t)

    jaxpr = jax.make_jaxpr(jax.value_and_grad(program))(x)
    sizes = []

    def walk(inner):
        for eqn in inner.eqns:
            sizes.extend(int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape"))
            for param in eqn.params.values():
                for sub in param if isinstance(param, (list, tuple)) else [param]:
                    if hasattr(sub, "jaxpr"):
                        walk(sub.jaxpr)
                    elif hasattr(sub, "eqns"):
                        walk(sub)

    walk(jaxpr.jaxpr)
    assert max(sizes) < b**3 // 4, f"largest intermediate has {max(sizes)} elements (B = {b})"
