"""Clustering metrics: k-means assignments, NMI and pairwise F1 (definitions in `kerasml.evaluation`)."""

from __future__ import annotations

import math

import numpy as np

from kerasml.evaluation._checks import _check_embeddings, _check_labels, _to_numpy

# Dense contingency table (bincount, O(N + C*K)) up to this many cells, sparse (np.unique) above.
_DENSE_CONTINGENCY_CELLS = 2**22


def cluster(embeddings, n_clusters, seed=0, *, n_init=10):
    """k-means cluster assignments of the L2-normalised embeddings.

    scikit-learn's ``KMeans(n_clusters, n_init=n_init, random_state=seed)`` (k-means++ starts,
    Lloyd iterations, the best of ``n_init`` runs by inertia) on ``x / ||x||``. Cost: about
    ``2 N K D`` flops per iteration and ``2 N K D (2 + ln K)`` per k-means++ start, times
    ``n_init``; with K in the thousands (Stanford Online Products: K = 11,316, N = 60,502) that
    is hours on a small CPU.

    Args:
        embeddings: ``[N, D]`` floats, N >= 2.
        n_clusters: number of clusters K, ``1 <= K <= N``.
        seed: random seed of k-means (fixed, so the result is reproducible). Defaults to 0.
        n_init: number of k-means restarts. Defaults to 10 (the usual protocol).

    Returns:
        ``[N]`` int64 cluster ids in ``[0, K)``.

    Raises:
        ValueError: for invalid ``embeddings`` or ``n_clusters``.

    Example:

    >>> x = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    >>> c = cluster(x, 2)
    >>> bool(c[0] == c[1] and c[2] == c[3] and c[0] != c[2])
    True
    """
    from sklearn.cluster import KMeans

    x = _check_embeddings(embeddings)
    n = x.shape[0]
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or not 1 <= n_clusters <= n:
        raise ValueError(
            f"Invalid value for argument `n_clusters`. Expected an integer K with 1 <= K <= N = {n} (k-means "
            f"cannot make more clusters than samples). Received: n_clusters={n_clusters!r}."
        )
    if isinstance(n_init, bool) or not isinstance(n_init, (int, np.integer)) or n_init < 1:
        raise ValueError(
            f"Invalid value for argument `n_init`. Expected a positive integer. Received: n_init={n_init!r}."
        )
    x = np.asarray(x, dtype=np.float32 if x.dtype != np.float64 else np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    km = KMeans(n_clusters=int(n_clusters), n_init=int(n_init), random_state=seed)
    return km.fit_predict(x).astype(np.int64)


def _check_assignments(clusters, labels):
    c = _to_numpy(clusters)
    if c.ndim != 1 or not np.issubdtype(c.dtype, np.integer):
        raise ValueError(
            "Invalid value for argument `clusters`. Expected a 1-D array of integer cluster ids (e.g. from "
            f"`cluster()`). Received: clusters.shape={c.shape}, clusters.dtype={c.dtype}."
        )
    if c.shape[0] < 1:
        raise ValueError("Invalid value for argument `clusters`. Expected at least 1 sample. Received: 0.")
    y = _check_labels(labels, c.shape[0], n_name="clusters")
    return c, y


def nmi(clusters, labels):
    """Normalised mutual information between cluster assignments and labels.

    ``NMI(Y, Ω) = I(Y; Ω) / ((H(Y) + H(Ω)) / 2)`` with ``I(Y; Ω) = sum_{c,k} p(c, k) log(p(c, k) /
    (p(c) p(k)))`` and ``H`` the entropy of the empirical distributions (scikit-learn's
    ``normalized_mutual_info_score``, arithmetic mean). 1 for identical partitions (up to
    renaming), 0 for independent ones. Use :func:`cluster` for the clusters of the protocol.

    Args:
        clusters: ``[N]`` integer cluster ids.
        labels: ``[N]`` integer class ids.

    Returns:
        NMI as a float in ``[0, 1]``.

    Raises:
        ValueError: when the two are not 1-D integer arrays of one length.

    Example:

    >>> nmi([1, 1, 0, 0], [5, 5, 7, 7])
    1.0
    """
    from sklearn.metrics import normalized_mutual_info_score

    c, y = _check_assignments(clusters, labels)
    return float(normalized_mutual_info_score(y, c))


def pairwise_f1(clusters, labels):
    """Pairwise clustering F1 over all unordered pairs of samples.

    A pair is *predicted positive* when both samples share a cluster and *positive* when both share a
    label. From the contingency table ``n_ck`` (samples of class c in cluster k), its row sums
    ``a_c`` and column sums ``b_k``, with ``C2(m) = m (m - 1) / 2``: ``TP = sum C2(n_ck)``,
    ``#positive = sum_c C2(a_c)``, ``#predicted = sum_k C2(b_k)``, ``P = TP / #predicted``,
    ``R = TP / #positive`` and ``F1 = 2PR / (P + R) = 2 TP / (#predicted + #positive)`` (0 when
    TP = 0). Pairs are never enumerated: the table costs ``O(N + C K)`` (dense, up to 2^22 cells)
    or ``O(N log N)`` (sparse, above). When no pair is positive or predicted positive (all labels
    and all clusters distinct) F1 is ``nan``.

    Args:
        clusters: ``[N]`` integer cluster ids.
        labels: ``[N]`` integer class ids.

    Returns:
        F1 as a float in ``[0, 1]`` (or ``nan``).

    Raises:
        ValueError: when the two are not 1-D integer arrays of one length.

    Example:

    >>> pairwise_f1([0, 0, 1, 1, 1], [0, 0, 0, 1, 1])  # TP = 2, 4 positive, 4 predicted
    0.5
    """
    c, y = _check_assignments(clusters, labels)
    _, y = np.unique(y, return_inverse=True)
    _, c = np.unique(c, return_inverse=True)
    y, c = y.reshape(-1).astype(np.int64), c.reshape(-1).astype(np.int64)
    n_classes, n_clusters = int(y.max()) + 1, int(c.max()) + 1
    cell = y * n_clusters + c
    if n_classes * n_clusters <= _DENSE_CONTINGENCY_CELLS:
        table = np.bincount(cell, minlength=n_classes * n_clusters)
    else:
        table = np.unique(cell, return_counts=True)[1]

    def pairs(m):
        return int(np.sum(m * (m - 1) // 2))

    tp, positive, predicted = pairs(table), pairs(np.bincount(y)), pairs(np.bincount(c))
    if positive + predicted == 0:
        return math.nan
    return 2 * tp / (positive + predicted)
