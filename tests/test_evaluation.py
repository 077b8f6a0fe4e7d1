"""kerasml.evaluation against brute-force references written from the definitions.

The references below build the full N x N distance matrix in float64 and rank the other samples
of every query with a Python sort on (distance, index), then count hits, precisions and pairs in
loops: nothing is shared with the implementation under test. Two kinds of data:

- random Gaussian embeddings, checked to have no near-tie (``_assert_well_separated``), so float32
  and float64 rankings must agree exactly;
- "dyadic" embeddings (4 entries of +-1/2, scaled by powers of two): normalisation and every
  dot product are exact in any precision and summation order, so they have many *exact* ties
  (equal distances, duplicate rows), and every backend must break them the same way (by index).
"""

import doctest
import math

import keras
import numpy as np
import pytest

import kerasml.evaluation as ev

BACKEND = keras.backend.backend()


# ------------------------------------------------------------------------------------------
# Brute-force references
# ------------------------------------------------------------------------------------------


def ref_normalize(x):
    x = np.asarray(x, dtype=np.float64)
    norms = np.sqrt((x**2).sum(axis=1, keepdims=True))
    return np.where(norms > 0, x / np.where(norms > 0, norms, 1.0), 0.0)


def ref_distances(x):
    x = ref_normalize(x)
    return np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1))  # full [N, N]


def ref_rankings(x):
    """Row i: every j != i, by (Euclidean distance on normalised rows, j)."""
    dist = ref_distances(x)
    n = len(dist)
    return [sorted((j for j in range(n) if j != i), key=lambda j, i=i: (dist[i, j], j)) for i in range(n)]


def ref_recall(x, y, k):
    ranking = ref_rankings(x)
    hits = [any(y[j] == y[i] for j in ranking[i][:k]) for i in range(len(y))]
    return sum(hits) / len(y)


def ref_map_and_rp(x, y):
    ranking = ref_rankings(x)
    aps, rps = [], []
    for i in range(len(y)):
        r = sum(1 for j in range(len(y)) if j != i and y[j] == y[i])
        if r == 0:
            continue  # left out (0 / 0)
        rel = [1 if y[j] == y[i] else 0 for j in ranking[i][:r]]
        ap = 0.0
        for k in range(1, r + 1):
            precision_at_k = sum(rel[:k]) / k
            ap += precision_at_k * rel[k - 1]
        aps.append(ap / r)
        rps.append(sum(rel) / r)
    if not aps:
        return math.nan, math.nan
    return sum(aps) / len(aps), sum(rps) / len(rps)


def ref_f1(clusters, labels):
    tp = positive = predicted = 0
    n = len(labels)
    for i in range(n):
        for j in range(i + 1, n):
            same_cluster, same_label = clusters[i] == clusters[j], labels[i] == labels[j]
            tp += same_cluster and same_label
            positive += same_label
            predicted += same_cluster
    if positive + predicted == 0:
        return math.nan
    if tp == 0:
        return 0.0
    p, r = tp / predicted, tp / positive
    return 2 * p * r / (p + r)


def ref_nmi(clusters, labels):
    n = len(labels)

    def entropy(a):
        _, counts = np.unique(a, return_counts=True)
        p = counts / n
        return -float((p * np.log(p)).sum())

    mi = 0.0
    for c in np.unique(labels):
        for k in np.unique(clusters):
            n_ck = np.sum((labels == c) & (clusters == k))
            if n_ck:
                mi += n_ck / n * math.log(n * n_ck / (np.sum(labels == c) * np.sum(clusters == k)))
    h_y, h_c = entropy(labels), entropy(clusters)
    if h_y == 0 and h_c == 0:
        return 1.0
    return mi / ((h_y + h_c) / 2)


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def random_data(n=48, dim=8, classes=7, seed=0, duplicates=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32) * rng.uniform(0.5, 3.0, (n, 1)).astype(np.float32)
    y = rng.integers(0, classes, n)
    if duplicates:  # exact copies of other rows (distance 0, exact ties), with random labels
        src = rng.choice(n, duplicates, replace=False)
        dst = rng.choice(np.setdiff1d(np.arange(n), src), duplicates, replace=False)
        x[dst] = x[src]
    return x, y


def dyadic_data(n=40, dim=6, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, dim), dtype=np.float32)
    for i in range(n):
        x[i, rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    x *= 2.0 ** rng.integers(-3, 4, (n, 1))  # exact scaling: normalisation gives the +-1/2 rows back
    return x, rng.integers(0, classes, n)


def _assert_well_separated(x, gap=1e-5):
    """Distinct distances of every row differ by > gap, so float32 rounding cannot reorder them."""
    dist = ref_distances(x)
    for i, row in enumerate(dist):
        values = np.unique(np.delete(row, i))
        assert np.diff(values).min() > gap, "test data has a near-tie; pick another seed"


def circle(degrees, scale=None):
    t = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    x = np.stack([np.cos(t), np.sin(t)], axis=1)
    return x if scale is None else x * np.asarray(scale)[:, None]


DATASETS = {
    "random": lambda: random_data(),
    "random_duplicates": lambda: random_data(seed=1, duplicates=10),
    "dyadic_ties": lambda: dyadic_data(),
}


def load(name):
    x, y = DATASETS[name]()
    if name.startswith("random"):
        _assert_well_separated(x)
    return x, y


# ------------------------------------------------------------------------------------------
# Hand-computed cases
# ------------------------------------------------------------------------------------------

# Five points on the unit circle (angles in degrees), different norms: neighbours by angle.
#   query 0 (0):   1 (10), 2 (30), 3 (100), 4 (180)
#   query 1 (10):  0 (10), 2 (20), 3 (90),  4 (170)
#   query 2 (30):  1 (20), 0 (30), 3 (70),  4 (150)
#   query 3 (100): 2 (70), 4 (80), 1 (90),  0 (100)
#   query 4 (180): 3 (80), 2 (150), 1 (170), 0 (180)
CIRCLE = circle([0, 10, 30, 100, 180], scale=[1.0, 2.0, 0.5, 3.0, 1.0])
CIRCLE_NEIGHBORS = [[1, 2, 3, 4], [0, 2, 3, 4], [1, 0, 3, 4], [2, 4, 1, 0], [3, 2, 1, 0]]


def test_hand_computed_circle():
    y = np.array([0, 1, 0, 1, 1])  # classes {0, 2} (R = 1) and {1, 3, 4} (R = 2)
    np.testing.assert_array_equal(ev.nearest_neighbors(CIRCLE, 4), CIRCLE_NEIGHBORS)
    # @1 only query 4 (-> 3); @2 all but query 1 ([0, 2]); @3 everyone.
    assert ev.recall_at_k(CIRCLE, y, ks=(1, 2, 3)) == {"recall@1": 0.2, "recall@2": 0.8, "recall@3": 1.0}
    # RP: q0 [1] 0, q2 [1] 0, q1 [0, 2] 0, q3 [2, 4] 1/2, q4 [3, 2] 1/2.
    assert ev.r_precision(CIRCLE, y) == pytest.approx(0.2)
    # AP: q3 rel [0, 1] -> (1/2)(1/2) = 1/4, q4 rel [1, 0] -> (1/2)(1) = 1/2, others 0.
    assert ev.map_at_r(CIRCLE, y) == pytest.approx(0.15)


def test_single_sample_class_is_left_out_of_map_at_r_and_counts_as_recall_miss():
    y = np.array([0, 0, 1, 1, 2])  # query 4 is alone in class 2: R = 0
    # nearest: q0 -> 1 hit, q1 -> 0 hit, q2 -> 1 miss, q3 -> 2 hit, q4: no positive at all.
    assert ev.map_at_r(CIRCLE, y) == pytest.approx(3 / 4)  # mean over the 4 queries with R >= 1
    assert ev.r_precision(CIRCLE, y) == pytest.approx(3 / 4)
    # Recall keeps every query: q4 is a miss at every K.
    assert ev.recall_at_k(CIRCLE, y, ks=(1, 4)) == {"recall@1": 0.6, "recall@4": 0.8}
    assert ev.evaluate(CIRCLE, y, ks=(1,), metrics=("map@r", "r_precision")) == {
        "map@r": pytest.approx(0.75),
        "r_precision": pytest.approx(0.75),
    }


def test_every_class_single_sample_gives_nan_with_a_warning():
    y = np.arange(5)
    with pytest.warns(RuntimeWarning, match=r"MAP@R is undefined.*single sample"):
        assert math.isnan(ev.map_at_r(CIRCLE, y))
    with pytest.warns(RuntimeWarning, match=r"R-precision is undefined"):
        assert math.isnan(ev.r_precision(CIRCLE, y))
    assert ev.recall_at_k(CIRCLE, y, ks=(4,)) == {"recall@4": 0.0}


def test_ties_broken_by_index_hand_case():
    # Query 0 at (1, 0); samples 1-4 all at distance sqrt(2) (two of them duplicates), 5 at 2.
    x = np.array([[1, 0], [0, 1], [0, -1], [0, 1], [0, -2], [-1, 0]], dtype=np.float32)
    np.testing.assert_array_equal(ev.nearest_neighbors(x, 5)[0], [1, 2, 3, 4, 5])
    # Query 1: its duplicate 3 first (distance 0), then 0 and 5 tie (sqrt 2), then 2 and 4 tie (2).
    np.testing.assert_array_equal(ev.nearest_neighbors(x, 5)[1], [3, 0, 5, 2, 4])
    y = np.array([0, 1, 1, 2, 0, 0])
    # First positive: q0 -> 4 at rank 4 (after 1, 2, 3, which tie with it), q1 -> 2 at rank 4
    # ([3, 0, 5, 2, 4]), q2 -> 1 at rank 4 ([4, 0, 5, 1, 3]), q3 none, q4 -> 0 at rank 2
    # ([2, 0, 5, 1, 3]), q5 -> 4 at rank 4 ([1, 2, 3, 4, 0]).
    assert ev.recall_at_k(x, y, ks=(1, 3, 4)) == {
        "recall@1": 0.0,
        "recall@3": pytest.approx(1 / 6),
        "recall@4": pytest.approx(5 / 6),
    }
    assert ev.recall_at_k(x, y, ks=(1, 3, 4), backend="keras") == ev.recall_at_k(x, y, ks=(1, 3, 4))
    assert ev.recall_at_k(x[:1].repeat(2, axis=0), [0, 1], ks=(1,)) == {"recall@1": 0.0}


def test_zero_rows_stay_zero_at_distance_one_from_unit_rows():
    x, _ = dyadic_data(n=20, seed=3)
    x[[4, 11]] = 0.0  # ||0 - u|| = 1 for every unit u; the two zero rows are at distance 0
    expected = ref_rankings(x)
    np.testing.assert_array_equal(ev.nearest_neighbors(x, 19), expected)
    np.testing.assert_array_equal(ev.nearest_neighbors(x, 19, backend="keras"), expected)


# ------------------------------------------------------------------------------------------
# Against the brute-force references
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("data", sorted(DATASETS))
def test_nearest_neighbors_match_reference(data, dtype):
    x, _ = load(data)
    expected = np.array(ref_rankings(x))
    n = len(x)
    for k in (1, 5, n - 1):
        np.testing.assert_array_equal(ev.nearest_neighbors(x, k, dtype=dtype), expected[:, :k])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("data", sorted(DATASETS))
def test_metrics_match_reference(data, dtype):
    x, y = load(data)
    n = len(x)
    ks = (1, 2, 4, 8, n - 1)
    expected = {f"recall@{k}": ref_recall(x, y, k) for k in ks}
    assert ev.recall_at_k(x, y, ks=ks, dtype=dtype) == expected
    ref_map, ref_rp = ref_map_and_rp(x, y)
    assert ev.map_at_r(x, y, dtype=dtype) == pytest.approx(ref_map, abs=1e-12)
    assert ev.r_precision(x, y, dtype=dtype) == pytest.approx(ref_rp, abs=1e-12)


def test_metrics_with_singletons_and_a_large_class_match_reference():
    x, _ = dyadic_data(n=36, seed=5)
    y = np.concatenate([np.zeros(14, int), np.arange(1, 7), np.repeat(np.arange(7, 15), 2)])  # R = 13, 0, 1
    ref_map, ref_rp = ref_map_and_rp(x, y)
    assert ev.map_at_r(x, y) == pytest.approx(ref_map, abs=1e-12)
    assert ev.r_precision(x, y) == pytest.approx(ref_rp, abs=1e-12)
    assert ev.recall_at_k(x, y, ks=(1, 3, 35)) == {f"recall@{k}": ref_recall(x, y, k) for k in (1, 3, 35)}


def test_labels_may_be_any_integers():
    x, y = random_data(seed=2)
    relabelled = np.array([-5, 7, 2**40, 3, -1, 100, 12])[y]
    assert ev.evaluate(x, relabelled, metrics=("recall", "map@r")) == ev.evaluate(x, y, metrics=("recall", "map@r"))


# ------------------------------------------------------------------------------------------
# Chunks, threads and the Keras path give the same answers
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", sorted(DATASETS))
def test_chunked_equals_unchunked(data, monkeypatch):
    x, y = load(data)
    n = len(x)
    full_nn = ev.nearest_neighbors(x, n - 1, chunk_size=n)
    full = ev.evaluate(x, y, ks=(1, 3, 10), metrics=("recall", "map@r", "r_precision"), chunk_size=n)
    for chunk_size in (1, 3, 7, 16, n + 5, None):
        np.testing.assert_array_equal(ev.nearest_neighbors(x, n - 1, chunk_size=chunk_size), full_nn)
        got = ev.evaluate(x, y, ks=(1, 3, 10), metrics=("recall", "map@r", "r_precision"), chunk_size=chunk_size)
        assert got == full
    # Several row blocks per chunk, run by the thread pool.
    monkeypatch.setattr(ev._checks, "_MIN_ROWS_PER_THREAD", 1)
    monkeypatch.setattr(ev._knn, "_num_threads", lambda: 3)
    for chunk_size in (5, n):
        np.testing.assert_array_equal(ev.nearest_neighbors(x, n - 1, chunk_size=chunk_size), full_nn)
        assert (
            ev.evaluate(x, y, ks=(1, 3, 10), metrics=("recall", "map@r", "r_precision"), chunk_size=chunk_size) == full
        )


@pytest.mark.parametrize("data", sorted(DATASETS))
def test_keras_backend_path_equals_numpy_path(data):
    x, y = load(data)
    n = len(x)
    for k, chunk_size in ((1, 7), (4, None), (n - 1, 7)):  # few shapes: JAX compiles each one
        expected = ev.nearest_neighbors(x, k)
        np.testing.assert_array_equal(ev.nearest_neighbors(x, k, chunk_size=chunk_size, backend="keras"), expected)
    metrics = ("recall", "map@r", "r_precision")
    assert ev.evaluate(x, y, ks=(1, 2, 8), metrics=metrics, backend="keras", chunk_size=7) == ev.evaluate(
        x, y, ks=(1, 2, 8), metrics=metrics
    )
    assert ev.recall_at_k(x, y, backend="keras") == ev.recall_at_k(x, y)
    assert ev.map_at_r(x, y, backend="keras") == ev.map_at_r(x, y)


def test_keras_backend_path_in_float64():
    x, _ = load("random")
    if BACKEND == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            with pytest.raises(ValueError, match=r"`dtype`.*float32.*jax_enable_x64.*backend='numpy'"):
                ev.nearest_neighbors(x, 3, backend="keras", dtype="float64")
            return
    expected = ev.nearest_neighbors(x, len(x) - 1, dtype="float64")
    np.testing.assert_array_equal(ev.nearest_neighbors(x, len(x) - 1, backend="keras", dtype="float64"), expected)


def test_backend_tensors_are_accepted():
    x, y = random_data(seed=4)
    tx, ty = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y.astype("int32"))
    assert ev.recall_at_k(tx, ty) == ev.recall_at_k(x, y)
    np.testing.assert_array_equal(ev.nearest_neighbors(tx, 3), ev.nearest_neighbors(x, 3))


# ------------------------------------------------------------------------------------------
# Clustering metrics
# ------------------------------------------------------------------------------------------


def test_pairwise_f1_by_hand():
    # labels 0 0 0 1 1, clusters 0 0 1 1 1:
    #   positive pairs (same label):   (0,1) (0,2) (1,2) (3,4)      -> 4
    #   predicted pairs (same cluster): (0,1) (2,3) (2,4) (3,4)     -> 4
    #   true positives:                 (0,1) (3,4)                 -> 2
    #   P = R = 2/4, F1 = 0.5
    assert ev.pairwise_f1([0, 0, 1, 1, 1], [0, 0, 0, 1, 1]) == 0.5
    assert ref_f1([0, 0, 1, 1, 1], [0, 0, 0, 1, 1]) == 0.5


def test_perfect_clustering_scores_one():
    labels = np.array([3, 3, 9, 9, 9, 1])
    clusters = np.array([7, 7, 0, 0, 0, 2])  # same partition, other ids
    assert ev.nmi(clusters, labels) == pytest.approx(1.0)
    assert ev.pairwise_f1(clusters, labels) == 1.0
    assert ev.pairwise_f1(np.zeros(4, int), np.arange(4)) == 0.0  # everything merged, nothing positive
    assert math.isnan(ev.pairwise_f1(np.arange(4), np.arange(4)))  # no pair positive or predicted


@pytest.mark.parametrize("seed", range(4))
def test_nmi_and_f1_match_reference_on_random_assignments(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 6, 60)
    clusters = np.where(rng.random(60) < 0.6, labels, rng.integers(0, 8, 60)) * 11 - 4
    assert ev.nmi(clusters, labels) == pytest.approx(ref_nmi(clusters, labels), abs=1e-12)
    expected = ref_f1(clusters, labels)
    assert ev.pairwise_f1(clusters, labels) == pytest.approx(expected, abs=1e-12)
    monkeypatch.setattr(ev.clustering, "_DENSE_CONTINGENCY_CELLS", 0)  # the sparse (np.unique) table
    assert ev.pairwise_f1(clusters, labels) == pytest.approx(expected, abs=1e-12)


def test_cluster_and_evaluate_on_separated_blobs():
    rng = np.random.default_rng(0)
    centers = np.eye(6)[:4] * 10
    y = np.repeat([10, 20, 30, 40], 15)
    x = (centers[np.repeat(np.arange(4), 15)] + 0.05 * rng.standard_normal((60, 6))).astype(np.float32)
    c = ev.cluster(x, 4, seed=0)
    assert c.shape == (60,) and c.dtype == np.int64
    np.testing.assert_array_equal(ev.cluster(x, 4, seed=0), c)
    results = ev.evaluate(x, y, ks=(1, 2))
    assert list(results) == ["recall@1", "recall@2", "nmi", "f1", "map@r", "r_precision"]
    assert results == {k: pytest.approx(1.0) for k in results}


def test_evaluate_agrees_with_the_single_functions():
    x, y = random_data(seed=6)
    results = ev.evaluate(x, y, ks=(1, 5), seed=3, n_init=2)
    assert {k: results[k] for k in ("recall@1", "recall@5")} == ev.recall_at_k(x, y, ks=(1, 5))
    assert results["map@r"] == ev.map_at_r(x, y)
    assert results["r_precision"] == ev.r_precision(x, y)
    c = ev.cluster(x, len(np.unique(y)), seed=3, n_init=2)
    assert results["nmi"] == ev.nmi(c, y)
    assert results["f1"] == ev.pairwise_f1(c, y)
    assert list(ev.evaluate(x, y, metrics=("recall",))) == [f"recall@{k}" for k in ev.DEFAULT_KS]
    assert list(ev.evaluate(x, y, metrics="f1")) == ["f1"]


# ------------------------------------------------------------------------------------------
# Input validation
# ------------------------------------------------------------------------------------------


def test_input_validation():
    x, y = random_data(n=10)
    with pytest.raises(ValueError, match=r"`embeddings` has 10 rows but `labels` has 9 entries"):
        ev.recall_at_k(x, y[:9])
    with pytest.raises(ValueError, match=r"at least 2 samples.*shape=\(1, 8\)"):
        ev.recall_at_k(x[:1], y[:1])
    with pytest.raises(ValueError, match=r"1 <= K <= N - 1 = 9.*K >= N is impossible.*ks=\(1, 10\)"):
        ev.recall_at_k(x, y, ks=(1, 10))
    with pytest.raises(ValueError, match=r"K >= N is impossible.*k=10"):
        ev.nearest_neighbors(x, 10)
    with pytest.raises(ValueError, match=r"`ks`.*ks=\(0,\)"):
        ev.evaluate(x, y, ks=(0,), metrics=("recall",))
    bad = x.copy()
    bad[3, 2] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 of 10 rows contain NaN or infinite values \(rows 3, 7\)"):
        ev.evaluate(bad, y)
    with pytest.raises(ValueError, match=r"NaN"):
        ev.nearest_neighbors(bad, 2)
    with pytest.raises(ValueError, match=r"2-D array of shape \[N, D\].*shape=\(10,\)"):
        ev.nearest_neighbors(x[:, 0], 2)
    with pytest.raises(ValueError, match=r"integer class ids.*float"):
        ev.map_at_r(x, y.astype(float))
    with pytest.raises(ValueError, match=r"1-D array of integer class ids.*shape=\(10, 1\)"):
        ev.r_precision(x, y[:, None])
    with pytest.raises(ValueError, match=r"`metrics`.*'recal'"):
        ev.evaluate(x, y, metrics=("recal",))
    with pytest.raises(ValueError, match=r"`backend`.*backend='torch'"):
        ev.recall_at_k(x, y, backend="torch")
    with pytest.raises(ValueError, match=r"`dtype`.*dtype='float16'"):
        ev.nearest_neighbors(x, 2, dtype="float16")
    with pytest.raises(ValueError, match=r"`chunk_size`.*chunk_size=0"):
        ev.nearest_neighbors(x, 2, chunk_size=0)
    with pytest.raises(ValueError, match=r"`n_clusters`.*1 <= K <= N = 10.*n_clusters=11"):
        ev.cluster(x, 11)
    with pytest.raises(ValueError, match=r"`clusters` has 3 rows but `labels` has 2 entries"):
        ev.nmi([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match=r"`clusters`.*integer cluster ids"):
        ev.pairwise_f1([0.5, 1.0], [0, 1])


def test_docstring_examples():
    result = doctest.testmod(ev, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
