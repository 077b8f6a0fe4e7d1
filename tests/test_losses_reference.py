"""kerasml's losses against independent float64 NumPy references (tests/reference.py).

Values: every loss (every triplet mining mode and distance, angular with and
without its N-pair / L2 / normalisation options, divergence in both input
shapes), through the class call and the functional form, on random batches of
several sizes and D in {2, 8, 64, 512}.

Gradients: the active backend's autodiff gradient w.r.t. the embeddings
(float32) against central finite differences of the float64 reference, on
small, well-separated batches (no hinge, max/min or semi-hard choice within
1e-2 of a kink), each with a clearly non-zero reference gradient.

Also: the references themselves on tiny cases computed by hand.
"""

import math
import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import reference as ref
from helpers import npair_labels, random_labels, triplet_labels, value_and_grad

from kerasml import losses
from kerasml.losses import pairwise

RTOL, ATOL = 1e-4, 1e-5  # float32 loss values vs float64 reference
GRAD_RTOL, GRAD_ATOL = 2e-2, 2e-3  # float32 autodiff vs float64 finite differences
FD_EPS = 1e-5
KINK_GAP = 1e-2  # minimum distance of every hinge argument / tie to its kink
MIN_GRAD = 5e-2  # the reference gradient must be at least this large somewhere


# --------------------------------------------------------------------------- utils


def to_float(value):
    return float(np.asarray(keras.ops.convert_to_numpy(value)))


def assert_value(got, want):
    np.testing.assert_allclose(to_float(got), want, rtol=RTOL, atol=ATOL)


def points(rng, b, d, spread=1.0):
    """Float32 ``[b, d]`` Gaussian points whose typical pairwise distance is ``spread``."""
    return (rng.normal(size=(b, d)) * spread / math.sqrt(2.0 * d)).astype(np.float32)


def rows(rng, b, d, norm=1.0):
    """Float32 ``[b, d]`` Gaussian rows whose typical norm is ``norm``."""
    return (rng.normal(size=(b, d)) * norm / math.sqrt(d)).astype(np.float32)


def check_gradient(loss_fn, ref_fn, x, min_grad=MIN_GRAD):
    """Backend value and gradient of ``loss_fn`` at float32 ``x`` vs the reference's.

    ``min_grad`` (well above GRAD_ATOL) is the largest reference gradient entry the
    case must reach, so that a zero or tiny backend gradient cannot pass.
    """
    x = np.asarray(x, dtype=np.float32)
    value, grad = value_and_grad(loss_fn, x)
    x64 = x.astype(np.float64)
    want_value = ref_fn(x64)
    want_grad = ref.numerical_gradient(ref_fn, x64, eps=FD_EPS)
    # The case must be informative: a zero (or tiny) gradient would pass vacuously.
    assert np.abs(want_grad).max() > min_grad, "test case has a vanishing reference gradient"
    assert grad.shape == x.shape
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, want_value, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(grad, want_grad, rtol=GRAD_RTOL, atol=GRAD_ATOL)


def sample_until(rng, make, gap_fn, tries=2000):
    """Draw ``make(rng)`` until ``gap_fn`` (distance to the nearest kink) exceeds KINK_GAP."""
    for _ in range(tries):
        sample = make(rng)
        if gap_fn(*sample) > KINK_GAP:
            return sample
    raise AssertionError("could not draw a well-separated sample")


# ----------------------------------------------------- kink distances (loops, float64)


def _dist(x, squared):
    return ref._distance_table(np.asarray(x, dtype=np.float64), squared)


def contrastive_gap(labels, x, margin):
    d = _dist(x, squared=False)
    gaps = [abs(margin - d[(i, j)]) for (i, j) in d if labels[i] != labels[j]]
    return min(gaps, default=np.inf)


def triplet_gap(labels, x, margin, mining, distance):
    """Distance of (a, p, n) hinge arguments and of every min/max/semi-hard choice to a kink."""
    y = [int(v) for v in labels]
    b = len(y)
    d = _dist(x, squared=distance == "squared")
    gaps = [np.inf]
    if mining == "structured":
        n = b // 3
        for i in range(n):
            if y[i] == y[n + i] and y[i] != y[2 * n + i]:
                gaps.append(abs(d[(i, n + i)] - d[(i, 2 * n + i)] + margin))
        return min(gaps)
    for a in range(b):
        pos = [d[(a, p)] for p in range(b) if p != a and y[p] == y[a]]
        neg = [d[(a, q)] for q in range(b) if y[q] != y[a]]
        if not pos or not neg:
            continue
        if mining == "all":
            gaps += [abs(dp - dn + margin) for dp in pos for dn in neg]
        elif mining == "hard":
            sp, sn = sorted(pos), sorted(neg)
            if len(sp) > 1:
                gaps.append(sp[-1] - sp[-2])
            if len(sn) > 1:
                gaps.append(sn[1] - sn[0])
            gaps.append(abs(sp[-1] - sn[0] + margin))
        elif mining == "semihard":
            sn = sorted(neg)
            gaps += [sn[k + 1] - sn[k] for k in range(len(sn) - 1)]
            for dp in pos:
                gaps += [abs(dn - dp) for dn in neg]
                farther = [dn for dn in neg if dn > dp]
                chosen = min(farther) if farther else max(neg)
                gaps.append(abs(dp - chosen + margin))
    return min(gaps)


def lifted_gap(labels, x, margin):
    y = [int(v) for v in labels]
    b = len(y)
    d = _dist(x, squared=False)
    gaps = [np.inf]
    for i in range(b):
        for j in range(i + 1, b):
            if y[i] != y[j]:
                continue
            e = [margin - d[(i, k)] for k in range(b) if y[k] != y[i]]
            e += [margin - d[(j, k)] for k in range(b) if y[k] != y[j]]
            if e:
                gaps.append(abs(math.log(sum(math.exp(v) for v in e)) + d[(i, j)]))
    return min(gaps)


def divergence_gap(x, margin):
    x = np.asarray(x, dtype=np.float64)
    gaps = [np.inf]
    for s in range(x.shape[0]):
        for h in range(x.shape[1]):
            for k in range(h + 1, x.shape[1]):
                gaps.append(abs(margin - ref.squared_euclidean(x[s, h], x[s, k])))
    return min(gaps)


# ------------------------------------------------------ the references, by hand


def on_a_line(*coords):
    """Float32 ``[len(coords), 2]`` points ``(c, 0)``: 1-D cases in the 2-D shapes used below."""
    return np.array([[c, 0.0] for c in coords], dtype=np.float32)


def test_reference_contrastive_by_hand():
    # Line: x0=0, x1=0.5 (class 0), x2=2, x3=2.5 (class 1), margin 2.
    # P = (0,1),(1,0),(2,3),(3,2): d^2 = 0.25 each -> mean 0.25.
    # N (8 ordered pairs): d02=2 -> 0; d03=2.5 -> 0; d12=1.5 -> (2-1.5)^2 = 0.25; d13=2 -> 0.
    #   mean = 2 * 0.25 / 8 = 0.0625.
    # L = 0.5 * 0.25 + 0.5 * 0.0625 = 0.15625.
    labels = np.array([0, 0, 1, 1])
    x = on_a_line(0.0, 0.5, 2.0, 2.5)
    assert ref.contrastive(labels, x, margin=2.0) == pytest.approx(0.15625, abs=1e-12)
    assert_value(losses.ContrastiveLoss(margin=2.0)(labels, x), 0.15625)
    # Two points of one class at 0 and 1: L = 0.5 * 1 = 0.5; dL/dx0 = -1, dL/dx1 = +1.
    two = np.array([[0.0], [1.0]])
    assert ref.contrastive([0, 0], two) == pytest.approx(0.5)
    grad = ref.numerical_gradient(lambda z: ref.contrastive([0, 0], z), two)
    np.testing.assert_allclose(grad, [[-1.0], [1.0]], atol=1e-8)


def test_reference_triplet_by_hand():
    # Line: x0=0, x1=1 (class 0), x2=1.5, x3=4 (class 1), margin 1.
    # Squared distances: d01=1, d02=2.25, d03=16, d12=0.25, d13=9, d23=6.25.
    labels = np.array([0, 0, 1, 1])
    x = on_a_line(0.0, 1.0, 1.5, 4.0)
    # all: (0,1,2) 1-2.25+1=-.25->0; (0,1,3) ->0; (1,0,2) 1-.25+1=1.75; (1,0,3) ->0;
    #      (2,3,0) 6.25-2.25+1=5; (2,3,1) 6.25-.25+1=7; (3,2,0) ->0; (3,2,1) 6.25-9+1<0 ->0.
    #      mean = (1.75 + 5 + 7) / 8 = 1.71875.
    # hard: a0: 1-2.25+1 -> 0; a1: 1-.25+1 = 1.75; a2: 6.25-.25+1 = 7; a3: 6.25-9+1 -> 0.
    #      mean = 8.75 / 4 = 2.1875.
    # semihard: (0,1): negatives {2.25, 16} > 1 -> 2.25 -> 0; (1,0): {0.25, 9}, farther {9} -> 0;
    #      (2,3): {2.25, 0.25}, none > 6.25 -> farthest 2.25 -> 5; (3,2): {16, 9} -> 9 -> 0.
    #      mean = 5 / 4 = 1.25.
    # hard, euclidean: d01=1, d02=1.5, d03=4, d12=.5, d13=3, d23=2.5:
    #      a0: 1-1.5+1 = .5; a1: 1-.5+1 = 1.5; a2: 2.5-.5+1 = 3; a3: 2.5-3+1 = .5 -> 5.5/4 = 1.375.
    expected = {
        ("all", "squared"): 1.71875,
        ("hard", "squared"): 2.1875,
        ("semihard", "squared"): 1.25,
        ("hard", "euclidean"): 1.375,
    }
    for (mining, distance), want in expected.items():
        assert ref.triplet(labels, x, 1.0, mining, distance) == pytest.approx(want, abs=1e-12)
        assert_value(losses.TripletLoss(margin=1.0, mining=mining, distance=distance)(labels, x), want)
    # semihard needs D_an > D_ap strictly. Line: x0=0, x1=1 (class 0), x2=-1, x3=3 (class 1),
    # integer coordinates so the float32 distances are exact. Squared distances:
    # d01=1, d02=1, d03=9, d12=4, d13=4, d23=16.
    # (0,1): D_ap=1, negatives {1 (tie, not farther), 9} -> 9 -> 1-9+1 -> 0;
    # (1,0): D_ap=1, negatives {4, 4} -> 4 -> 0; (2,3): D_ap=16, negatives {1, 4}, none
    # farther -> 4 -> 13; (3,2): D_ap=16, negatives {9, 4} -> 9 -> 8. mean = 21/4 = 5.25
    # (a ">=" would take the tie at (0,1): 1-1+1 = 1 and give 5.5).
    tie = on_a_line(0.0, 1.0, -1.0, 3.0)
    assert ref.triplet(labels, tie, 1.0, "semihard") == pytest.approx(5.25, abs=1e-12)
    assert_value(losses.TripletLoss(margin=1.0, mining="semihard")(labels, tie), 5.25)
    # structured [a; p; n] = 0, 0.5 | 1: 0.25 - 1 + 1 = 0.25.
    sx = on_a_line(0.0, 0.5, 1.0)
    assert ref.triplet([0, 0, 1], sx, 1.0, "structured") == pytest.approx(0.25)
    assert_value(losses.TripletLoss(mining="structured")(np.array([0, 0, 1]), sx), 0.25)


def test_reference_lifted_npair_angular_divergence_by_hand():
    # Lifted: x0=0, x1=1 (class 0), x2=3 (class 1), x3=-3 (class 2), margin 1.
    # One positive pair (0,1), d01 = 1; negatives of 0 at 3, 3; of 1 at 2, 4:
    # J = log(e^-2 + e^-2 + e^-1 + e^-3) + 1 = log(1 + 2e^-1 + e^-2) = 2 log(1 + e^-1).
    # L = J^2 / (2 * 1).
    lx = on_a_line(0.0, 1.0, 3.0, -3.0)
    want = 0.5 * (2.0 * math.log1p(math.exp(-1.0))) ** 2
    assert ref.lifted_structure([0, 0, 1, 2], lx, 1.0) == pytest.approx(want, abs=1e-12)
    assert_value(losses.LiftedStructureLoss(margin=1.0)(np.array([0, 0, 1, 2]), lx), want)

    # N-pair: a1=(1,0), a2=(0,1), p1=(2,0), p2=(0,1), l2_reg 0.1.
    # Row 1 logits (2, 0) -> log(1 + e^-2); row 2 logits (0, 1) -> log(1 + e^-1).
    # Squared norms 1, 1, 4, 1 -> mean 7/4 -> + 0.175.
    nx = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    want = 0.5 * (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) + 0.175
    assert ref.npair([0, 1, 0, 1], nx, l2_reg=0.1) == pytest.approx(want, abs=1e-12)
    assert_value(losses.NPairLoss(l2_reg=0.1)(np.array([0, 1, 0, 1]), nx), want)

    # Angular: a_i = p_i = (1,0) for class 0, (-1,0) for class 1. For anchor 0, the two
    # negatives are (-1,0): f = 4 t2 (2,0).(-1,0) - 2 (1+t2) = -2 - 10 t2 (twice); same for
    # anchor 1, so L = log(1 + 2 exp(-2 - 10 t2)).
    ax = np.array([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], dtype=np.float32)
    t2 = math.tan(math.radians(40.0)) ** 2
    want = math.log1p(2.0 * math.exp(-2.0 - 10.0 * t2))
    assert ref.angular([0, 1, 0, 1], ax) == pytest.approx(want, abs=1e-12)
    assert ref.angular([0, 1, 0, 1], 3.0 * ax) == pytest.approx(want, abs=1e-12)  # normalised
    assert_value(losses.AngularLoss()(np.array([0, 1, 0, 1]), 3.0 * ax), want)

    # Divergence: image 1 heads at 0, 0.5, 2 (margin 1): 1-.25 = .75, 1-4 -> 0, 1-2.25 -> 0
    # -> mean .25; image 2 heads all at 0 -> 1 each -> 1. L = (0.25 + 1) / 2 = 0.625.
    dx = np.stack([on_a_line(0.0, 0.5, 2.0), on_a_line(0.0, 0.0, 0.0)])  # [2, 3, 2]
    assert ref.divergence(dx, 1.0) == pytest.approx(0.625, abs=1e-12)
    assert ref.divergence(dx.reshape(2, 6), 1.0, heads=3) == pytest.approx(0.625, abs=1e-12)
    assert_value(losses.DivergenceLoss(margin=1.0)(np.zeros(2), dx), 0.625)


# ------------------------------------------------------------------------ values

# (batch size, embedding width, number of classes)
SIZES = [(4, 2, 3), (24, 8, 7), (16, 64, 4), (8, 512, 3)]
SIZE_IDS = [f"B{b}-D{d}-C{c}" for b, d, c in SIZES]
# Triplet modes compile many distinct ops on JAX: D = 64 is left to the structured mode.
TRIPLET_SIZES = [size for size in SIZES if size[1] != 64]
TRIPLET_SIZE_IDS = [f"B{b}-D{d}-C{c}" for b, d, c in TRIPLET_SIZES]


@pytest.mark.parametrize("margin", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_contrastive_value(size, margin):
    b, d, c = size
    rng = np.random.default_rng(100 + b * 7 + d)
    labels = random_labels(rng, b, c)
    x = points(rng, b, d, spread=margin)
    want = ref.contrastive(labels, x, margin)
    assert_value(losses.ContrastiveLoss(margin=margin)(labels, x), want)
    assert_value(losses.contrastive_loss(labels, x, margin=margin), want)


@pytest.mark.parametrize("labels", [[3, 3, 3, 3], [0, 1, 2, 3]], ids=["one-class", "distinct"])
def test_contrastive_value_degenerate_labels(labels):
    labels = np.array(labels)
    x = points(np.random.default_rng(7), len(labels), 2)
    want = ref.contrastive(labels, x, 1.0)
    assert want > 0
    assert_value(losses.ContrastiveLoss()(labels, x), want)


@pytest.mark.parametrize("distance", ["squared", "euclidean"])
@pytest.mark.parametrize("mining", ["all", "hard", "semihard"])
@pytest.mark.parametrize("margin", [0.5, 2.0])
@pytest.mark.parametrize("size", TRIPLET_SIZES, ids=TRIPLET_SIZE_IDS)
def test_triplet_value(size, margin, mining, distance):
    b, d, c = size
    rng = np.random.default_rng(200 + b * 7 + d)
    labels = random_labels(rng, b, c)
    x = points(rng, b, d, spread=1.0)
    want = ref.triplet(labels, x, margin, mining, distance)
    loss = losses.TripletLoss(margin=margin, mining=mining, distance=distance)
    assert_value(loss(labels, x), want)
    assert_value(losses.triplet_loss(labels, x, margin=margin, mining=mining, distance=distance), want)


@pytest.mark.parametrize("distance", ["squared", "euclidean"])
@pytest.mark.parametrize("n,d", [(1, 2), (8, 64), (2, 512)])
def test_triplet_structured_value(n, d, distance):
    rng = np.random.default_rng(300 + n * 7 + d)
    labels = triplet_labels(rng, n, classes=3)
    x = points(rng, 3 * n, d, spread=1.0)
    for margin in (0.3, 1.0):
        want = ref.triplet(labels, x, margin, "structured", distance)
        loss = losses.TripletLoss(margin=margin, mining="structured", distance=distance)
        assert_value(loss(labels, x), want)
        assert_value(losses.triplet_loss(labels, x, margin, "structured", distance), want)


@pytest.mark.parametrize("distance", ["squared", "euclidean"])
def test_triplet_structured_function_skips_invalid_rows(distance):
    # The functional form does not check the layout: rows whose positive has
    # another class, or whose negative has the anchor's class, do not count.
    rng = np.random.default_rng(31)
    n = 6
    labels = triplet_labels(rng, n, classes=4)
    labels[n + 1] = labels[1] + 1  # positive of another class
    labels[2 * n + 3] = labels[3]  # negative of the anchor's class
    x = points(rng, 3 * n, 8, spread=1.0)
    want = ref.triplet(labels, x, 1.0, "structured", distance)
    assert_value(losses.triplet_loss(labels, x, 1.0, "structured", distance), want)


@pytest.mark.parametrize("mining", ["all", "hard", "semihard", "structured"])
@pytest.mark.parametrize("distinct", [False, True], ids=["one-class", "distinct"])
def test_triplet_value_no_valid_triplet(distinct, mining):
    # Batch shapes shared with the gradient tests below (fewer JAX compilations).
    b, d = (6, 3) if mining == "structured" else (8, 4)
    labels = np.arange(b) if distinct else np.full(b, 2)
    x = points(np.random.default_rng(5), b, d)
    assert ref.triplet(labels, x, 1.0, mining) == 0.0
    assert_value(losses.triplet_loss(labels, x, 1.0, mining), 0.0)


@pytest.mark.parametrize("margin", [0.5, 1.0])
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_lifted_value(size, margin):
    b, d, c = size
    rng = np.random.default_rng(400 + b * 7 + d)
    labels = random_labels(rng, b, c)
    x = points(rng, b, d, spread=1.5)
    want = ref.lifted_structure(labels, x, margin)
    assert_value(losses.LiftedStructureLoss(margin=margin)(labels, x), want)
    assert_value(losses.lifted_structure_loss(labels, x, margin=margin), want)


@pytest.mark.parametrize("labels", [[1, 1, 1, 1], [0, 1, 2, 3]], ids=["one-class", "distinct"])
def test_lifted_value_degenerate_labels(labels):
    labels = np.array(labels)
    x = points(np.random.default_rng(9), 4, 2)
    assert ref.lifted_structure(labels, x) == 0.0
    assert_value(losses.LiftedStructureLoss()(labels, x), 0.0)


NPAIR_SIZES = [(2, 2), (12, 8), (8, 64), (4, 512)]


@pytest.mark.parametrize("l2_reg", [0.0, 0.002, 0.25])
@pytest.mark.parametrize("n,d", NPAIR_SIZES)
def test_npair_value(n, d, l2_reg):
    rng = np.random.default_rng(500 + n * 7 + d)
    labels = npair_labels(rng, n, classes=n + 5)
    x = rows(rng, 2 * n, d, norm=2.0)
    x[n:] = x[n:] + 0.8 * x[:n]  # positives correlated with their anchors
    want = ref.npair(labels, x, l2_reg)
    assert_value(losses.NPairLoss(l2_reg=l2_reg)(labels, x), want)
    assert_value(losses.npair_loss(labels, x, l2_reg=l2_reg), want)


ANGULAR_CONFIGS = [
    {},
    {"npair_weight": 1.0, "angular_weight": 2.0},
    {"l2_reg": 0.01},
    {"normalize": False},
    {"normalize": False, "npair_weight": 0.5, "l2_reg": 0.02, "alpha_degrees": 50.0},
    {"alpha_degrees": 36.0, "npair_weight": 1.0, "l2_reg": 0.002, "angular_weight": 0.5},
]
ANGULAR_IDS = ["default", "npair", "l2", "raw", "raw-npair-l2", "alpha36-npair-l2"]


@pytest.mark.parametrize("config", ANGULAR_CONFIGS, ids=ANGULAR_IDS)
@pytest.mark.parametrize("n,d", [(2, 2), (8, 64), (4, 512)])
def test_angular_value(n, d, config):
    rng = np.random.default_rng(600 + n * 7 + d)
    labels = npair_labels(rng, n, classes=n + 3)
    x = rows(rng, 2 * n, d, norm=1.5)
    x[n:] = x[n:] + 0.5 * x[:n]
    want = ref.angular(labels, x, **config)
    assert_value(losses.AngularLoss(**config)(labels, x), want)
    assert_value(losses.angular_loss(labels, x, **config), want)


@pytest.mark.parametrize("flat", [False, True], ids=["BMD", "flat"])
@pytest.mark.parametrize("margin", [0.5, 2.0])
@pytest.mark.parametrize("b,m,d", [(2, 3, 2), (2, 4, 4), (5, 2, 64), (3, 4, 512), (6, 1, 8)])
def test_divergence_value(b, m, d, margin, flat):
    rng = np.random.default_rng(700 + b * 7 + m * 3 + d)
    x = points(rng, b * m, d, spread=math.sqrt(margin)).reshape(b, m, d)
    want = ref.divergence(x, margin)
    if flat:
        xf = x.reshape(b, m * d)
        assert ref.divergence(xf, margin, heads=m) == pytest.approx(want, rel=1e-12)
        assert_value(losses.DivergenceLoss(margin=margin, heads=m)(np.zeros(b), xf), want)
        assert_value(losses.divergence_loss(xf, margin=margin, heads=m), want)
    else:
        assert_value(losses.DivergenceLoss(margin=margin)(np.zeros(b), x), want)
        assert_value(losses.divergence_loss(x, margin=margin), want)


# --------------------------------------------------------------------- gradients


@pytest.mark.parametrize("b,d,c,margin", [(8, 4, 2, 1.0), (8, 4, 3, 1.5)])
def test_contrastive_gradient(b, d, c, margin):
    def make(rng):
        return random_labels(rng, b, c), points(rng, b, d, spread=margin)

    labels, x = sample_until(np.random.default_rng(1000 + b), make, lambda y, z: contrastive_gap(y, z, margin))
    loss = losses.ContrastiveLoss(margin=margin)
    check_gradient(lambda t: loss(labels, t), lambda z: ref.contrastive(labels, z, margin), x)


@pytest.mark.parametrize("distance", ["squared", "euclidean"])
@pytest.mark.parametrize("mining", ["all", "hard", "semihard"])
@pytest.mark.parametrize("b,d,c", [(8, 4, 2), (8, 4, 3)])
def test_triplet_gradient(b, d, c, mining, distance):
    margin = 0.5

    def make(rng):
        return random_labels(rng, b, c), points(rng, b, d, spread=1.0)

    labels, x = sample_until(
        np.random.default_rng(2000 + b),
        make,
        lambda y, z: triplet_gap(y, z, margin, mining, distance),
    )
    loss = losses.TripletLoss(margin=margin, mining=mining, distance=distance)
    check_gradient(
        lambda t: loss(labels, t),
        lambda z: ref.triplet(labels, z, margin, mining, distance),
        x,
    )


@pytest.mark.parametrize("distance", ["squared", "euclidean"])
def test_triplet_structured_gradient(distance):
    n, d, margin = 2, 3, 1.0

    def make(rng):
        return triplet_labels(rng, n, 3), points(rng, 3 * n, d, spread=1.0)

    labels, x = sample_until(
        np.random.default_rng(2100),
        make,
        lambda y, z: triplet_gap(y, z, margin, "structured", distance),
    )
    loss = losses.TripletLoss(margin=margin, mining="structured", distance=distance)
    check_gradient(
        lambda t: loss(labels, t),
        lambda z: ref.triplet(labels, z, margin, "structured", distance),
        x,
    )


def test_triplet_function_gradient():
    b, d, c, margin = 8, 4, 4, 0.5

    def make(rng):
        return random_labels(rng, b, c), points(rng, b, d, spread=1.0)

    labels, x = sample_until(
        np.random.default_rng(2200),
        make,
        lambda y, z: triplet_gap(y, z, margin, "semihard", "euclidean"),
    )
    check_gradient(
        lambda t: losses.triplet_loss(labels, t, margin, "semihard", "euclidean"),
        lambda z: ref.triplet(labels, z, margin, "semihard", "euclidean"),
        x,
    )


@pytest.mark.parametrize("b,d,c,margin", [(8, 4, 2, 0.5), (8, 4, 3, 1.0)])
def test_lifted_gradient(b, d, c, margin):
    def make(rng):
        return random_labels(rng, b, c), points(rng, b, d, spread=1.5)

    labels, x = sample_until(np.random.default_rng(3000 + b), make, lambda y, z: lifted_gap(y, z, margin))
    loss = losses.LiftedStructureLoss(margin=margin)
    check_gradient(lambda t: loss(labels, t), lambda z: ref.lifted_structure(labels, z, margin), x)


@pytest.mark.parametrize("l2_reg", [0.002, 0.25])
def test_npair_gradient(l2_reg):
    n, d = 4, 4
    rng = np.random.default_rng(4000)
    labels = npair_labels(rng, n, classes=9)
    x = rows(rng, 2 * n, d, norm=1.5)
    loss = losses.NPairLoss(l2_reg=l2_reg)
    check_gradient(lambda t: loss(labels, t), lambda z: ref.npair(labels, z, l2_reg), x)


def test_npair_function_gradient():
    rng = np.random.default_rng(4100)
    labels = npair_labels(rng, 4)
    x = rows(rng, 8, 4, norm=1.5)
    check_gradient(
        lambda t: losses.npair_loss(labels, t, l2_reg=0.05),
        lambda z: ref.npair(labels, z, 0.05),
        x,
    )


@pytest.mark.parametrize(
    "config",
    [ANGULAR_CONFIGS[0], ANGULAR_CONFIGS[4], ANGULAR_CONFIGS[5]],
    ids=[ANGULAR_IDS[0], ANGULAR_IDS[4], ANGULAR_IDS[5]],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_angular_gradient(seed, config):
    n, d = 4, 4
    rng = np.random.default_rng(5000 + seed)
    labels = npair_labels(rng, n, classes=n + 2)
    x = rows(rng, 2 * n, d, norm=1.2)
    loss = losses.AngularLoss(**config)
    check_gradient(lambda t: loss(labels, t), lambda z: ref.angular(labels, z, **config), x)


def test_angular_function_gradient():
    rng = np.random.default_rng(5100)
    labels = npair_labels(rng, 4)
    x = rows(rng, 8, 4, norm=1.0)
    config = {"npair_weight": 1.0, "angular_weight": 2.0, "l2_reg": 0.01}
    check_gradient(
        lambda t: losses.angular_loss(labels, t, **config),
        lambda z: ref.angular(labels, z, **config),
        x,
    )


@pytest.mark.parametrize("flat", [False, True], ids=["BMD", "flat"])
@pytest.mark.parametrize("b,m,d,margin", [(2, 3, 2, 1.0), (2, 4, 4, 2.0)])
def test_divergence_gradient(b, m, d, margin, flat):
    def make(rng):
        return (points(rng, b * m, d, spread=math.sqrt(margin)).reshape(b, m, d),)

    (x,) = sample_until(np.random.default_rng(6000 + b), make, lambda z: divergence_gap(z, margin))
    if flat:
        x = x.reshape(b, m * d)
        loss = losses.DivergenceLoss(margin=margin, heads=m)
        check_gradient(lambda t: loss(np.zeros(b), t), lambda z: ref.divergence(z, margin, heads=m), x)
        check_gradient(
            lambda t: losses.divergence_loss(t, margin=margin, heads=m),
            lambda z: ref.divergence(z, margin, heads=m),
            x,
        )
    else:
        loss = losses.DivergenceLoss(margin=margin)
        check_gradient(lambda t: loss(np.zeros(b), t), lambda z: ref.divergence(z, margin), x)


def _distance_error_bound(x, y):
    """The documented float32 bound of `pairwise_squared_distances`: 2 (D + 2) ε (‖x‖² + ‖y‖²), ε = 2⁻²³."""
    eps = float(np.finfo(np.float32).eps)
    return 2 * (x.shape[1] + 2) * eps * (np.sum(x**2, 1)[:, None] + np.sum(y**2, 1)[None, :])


@pytest.mark.parametrize("dim", [4, 128])
def test_pairwise_distance_error_stays_within_the_documented_float32_bound(dim):
    # Near-duplicates (separation 1e-6..1e-1 of the norm) at norms 1..100, the regime where the
    # ‖x‖² + ‖y‖² − 2 x·y form loses the distance to cancellation.
    rng = np.random.default_rng(dim)
    n = 32
    norms = 10.0 ** rng.uniform(0, 2, size=(n, 1))
    x = rng.normal(size=(n, dim))
    x *= norms / np.linalg.norm(x, axis=1, keepdims=True)
    offsets = rng.normal(size=(n, dim))
    offsets *= norms * 10.0 ** rng.uniform(-6, -1, size=(n, 1)) / np.linalg.norm(offsets, axis=1, keepdims=True)
    y = (x + offsets).astype(np.float32)
    x = x.astype(np.float32)
    got = np.asarray(keras.ops.convert_to_numpy(pairwise.pairwise_squared_distances(x, y)), dtype=np.float64)
    exact = np.sum((x[:, None, :].astype(np.float64) - y[None, :, :]) ** 2, axis=-1)
    bound = _distance_error_bound(x.astype(np.float64), y.astype(np.float64))
    assert np.all(got >= 0.0)
    excess = np.abs(got - exact) / bound
    assert excess.max() <= 1.0, f"error {excess.max():.2f}x the documented bound"
    # The bound is the real limit, not a loose formality: on the near-duplicate diagonal the
    # rounding error is a visible share of it (cancellation happens).
    assert np.abs(np.diag(got) - np.diag(exact)).max() > 1e-3 * np.diag(bound).max()


def test_near_duplicate_negatives_beyond_the_bound_match_reference():
    # Four pairs of negatives at norm 10, the pairs far from each other. At 1e-3 apart the
    # distance (1e-6 squared) is below the float32 bound (~2.4e-4 here) and reads as 0 to ~3e-3:
    # the documented limit above. At 0.1 apart (1e-2 squared, 40x the bound) the loss and its
    # repulsive gradient match the float64 reference.
    x = np.zeros((8, 4), dtype=np.float32)
    for k in range(4):
        x[2 * k, k] = x[2 * k + 1, k] = 10.0
        x[2 * k + 1, (k + 1) % 4] = 0.1
    labels = np.arange(8)
    loss = losses.ContrastiveLoss(margin=1.0)
    check_gradient(lambda t: loss(labels, t), lambda z: ref.contrastive(labels, z, 1.0), x, min_grad=0.02)
