"""Retrieval and clustering metrics for embeddings: Recall@K, NMI, pairwise F1, MAP@R, R-precision.

Definitions (HDML paper, "Evaluation definitions" in the project notes; MAP@R and R-precision from
Musgrave et al., "A Metric Learning Reality Check", ECCV 2020):

- **Distance.** Embeddings are L2-normalised first (``x / ||x||``; an all-zero row stays zero), then
  compared by Euclidean distance. Every query is compared with every *other* sample of the same set
  (leave-one-out): the query itself is excluded by its index, exact duplicates of it at other
  indices are not.
- **Ranking and ties.** The neighbours of query ``i`` are all ``j != i`` ordered by increasing
  distance; equal distances are ordered by increasing index ``j`` (a stable order), so every result
  is deterministic. The ranking key of ``j`` for query ``i`` is ``||x_j||^2 / 2 - <x_i, x_j>`` (=
  ``(||x_i - x_j||^2 - ||x_i||^2) / 2``, the same order as the distance), computed in ``dtype``
  (float32 by default) by one matrix product per chunk of queries, as ``faiss.IndexFlatL2`` does;
  "equal" means equal keys. Duplicate rows always tie exactly. Distances that differ only by
  rounding (~1e-7 relative in float32, ~1e-16 with ``dtype="float64"``) may come out in either
  order, and that order can change with the matrix-product kernel (another ``chunk_size``, the
  ``"keras"`` backend); anything farther apart is ranked identically by every setting.
- **Recall@K.** ``Recall@K = (1/N) sum_i [exists j in NN_K(i): y_j = y_i]``, over all ``N`` queries.
  A query whose class has no other sample can never be a hit and counts as a miss.
- **R-precision / MAP@R.** ``R_i = |{j != i: y_j = y_i}|``, ``rel_i(k) = [y_{NN(i)_k} = y_i]``,
  ``P_i(k) = (1/k) sum_{m<=k} rel_i(m)``; ``RP_i = (1/R_i) sum_{k<=R_i} rel_i(k)`` and
  ``MAP@R_i = (1/R_i) sum_{k<=R_i} P_i(k) rel_i(k)``, averaged over the queries with ``R_i >= 1``.
  Queries with ``R_i = 0`` (single-sample classes) are left out, since both are ``0/0`` there; when
  no query is left the value is ``nan`` and a ``RuntimeWarning`` says why.
- **NMI.** ``NMI = I(Y; Ω) / ((H(Y) + H(Ω)) / 2)`` between the labels ``Y`` and k-means clusters
  ``Ω`` of the normalised embeddings, with ``K`` = number of distinct labels in the evaluated set
  (scikit-learn's ``KMeans(n_init=10, random_state=seed)`` and ``normalized_mutual_info_score``,
  arithmetic mean).
- **Pairwise F1.** Over all unordered pairs of samples, a pair is *predicted positive* when both
  fall in one cluster and *positive* when both share a label; ``P = TP / #predicted positive``,
  ``R = TP / #positive``, ``F1 = 2PR / (P + R) = 2 TP / (#predicted positive + #positive)``,
  counted from the label x cluster contingency table, never by enumerating pairs.

Cost (N samples, D dimensions):

- Recall@K and nearest neighbours are exact (brute force) and take ``2 N^2 (D + 1)`` flops in one
  BLAS matrix product per chunk of ``chunk_size`` queries; memory is ``O(N * chunk_size)``
  (about ``chunk_size * N * (2 * itemsize + 1)`` bytes of work space, by default about 512 MiB;
  no ``N x N`` matrix is ever made). Recall@K needs no sorting at all: per query it counts the
  samples ranked before the nearest same-class sample (two vectorised passes over the chunk),
  which gives Recall@K for every K at once. ``nearest_neighbors``, MAP@R and R-precision select
  the ``k`` (or ``max_i R_i``) smallest keys per row with ``np.partition``. Row blocks of a chunk
  are processed by a thread pool (NumPy releases the GIL). On 60,000 x 512 embeddings that is
  ~3.7 Tflop: Recall@{1,10,100,1000} took ~70 s and ~1 GB peak RSS on a shared 2-core CPU, 0.2x
  the time of ``faiss.IndexFlatL2`` there (``benchmarks/evaluation.py``).
- NMI and F1 need k-means with ``K`` = number of classes, which is far more expensive: each Lloyd
  iteration costs ``~2 N K D`` flops, k-means++ initialisation ``~2 N K D (2 + ln K)``, times
  ``n_init`` = 10 restarts, and scikit-learn's k-means++ runs ``K`` sequential steps. Measured on
  a shared 2-core CPU: N = 6,000 x 512, K = 1,132, ``n_init=1`` took ~90 s; the cost grows like
  ``N * K``, so 60,000 x 512 embeddings of 11,316 classes (Stanford Online Products' test set) need
  hours per restart, about a day for ``n_init=10``. Leave ``"nmi"`` and ``"f1"`` out of
  ``metrics`` (or lower ``n_init``) where that is too much.
"""

from __future__ import annotations

import numpy as np

from kerasml._validation import check_choice
from kerasml.evaluation._checks import (
    _BACKENDS,
    _DTYPES,
    DEFAULT_KS,
    METRICS,
    _check_chunk_size,
    _check_embeddings,
    _check_labels,
    _check_metrics,
)
from kerasml.evaluation._knn import _mean_over_valid, _retrieval
from kerasml.evaluation.clustering import cluster, nmi, pairwise_f1
from kerasml.evaluation.retrieval import map_at_r, nearest_neighbors, r_precision, recall_at_k

__all__ = [
    "DEFAULT_KS",
    "METRICS",
    "cluster",
    "evaluate",
    "map_at_r",
    "nearest_neighbors",
    "nmi",
    "pairwise_f1",
    "r_precision",
    "recall_at_k",
]


def evaluate(
    embeddings,
    labels,
    ks=DEFAULT_KS,
    metrics=METRICS,
    seed=0,
    chunk_size=None,
    *,
    backend="numpy",
    dtype="float32",
    n_init=10,
):
    """Every requested metric of one embedded evaluation set, with one k-NN pass and one clustering.

    - ``"recall"`` → ``"recall@K"`` for each K in ``ks`` (:func:`recall_at_k`);
    - ``"nmi"`` → ``"nmi"`` and ``"f1"`` → ``"f1"``: k-means with K = number of distinct labels
      (:func:`cluster`, ``n_init`` restarts, ``seed``), then :func:`nmi` / :func:`pairwise_f1`;
      the clustering is done once for both. It dominates the cost on large sets (hours for
      60,000 x 512 embeddings of 11,316 classes): leave both out there, or lower ``n_init``;
    - ``"map@r"`` → ``"map@r"`` and ``"r_precision"`` → ``"r_precision"`` (:func:`map_at_r`,
      :func:`r_precision`), computed in the same chunk pass as the recall.

    Args:
        embeddings: ``[N, D]`` floats, N >= 2 (normalised inside).
        labels: ``[N]`` integer class ids.
        ks: the K of Recall@K, each ``1 <= K <= N - 1``. Defaults to ``(1, 2, 4, 8)``.
        metrics: names from :data:`METRICS`. Defaults to all of them.
        seed: k-means seed. Defaults to 0.
        chunk_size: queries per chunk of the k-NN pass. Defaults to None (automatic, ~512 MiB).
        backend: ``"numpy"`` or ``"keras"`` for the k-NN pass. Defaults to ``"numpy"``.
        dtype: ``"float32"`` or ``"float64"`` for the k-NN pass. Defaults to ``"float32"``.
        n_init: k-means restarts. Defaults to 10.

    Returns:
        ``dict[str, float]`` in the order recall@K..., nmi, f1, map@r, r_precision (those requested).

    Raises:
        ValueError: for invalid inputs, metric names or K.

    Example:

    >>> x = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    >>> evaluate(x, [0, 0, 1, 1], ks=(1,))
    {'recall@1': 1.0, 'nmi': 1.0, 'f1': 1.0, 'map@r': 1.0, 'r_precision': 1.0}
    """
    wanted = _check_metrics(metrics)
    want_recall = "recall" in wanted
    want_r = bool(wanted & {"map@r", "r_precision"})
    results = {}
    if want_recall or want_r:
        ks, rank, ap, rp = _retrieval(embeddings, labels, ks, want_recall, want_r, chunk_size, backend, dtype)
        results.update({f"recall@{k}": float(np.mean(rank <= k)) for k in ks})
    else:  # still validate what the clustering path does not look at
        check_choice("backend", backend, _BACKENDS)
        check_choice("dtype", dtype, _DTYPES)
        _check_chunk_size(chunk_size)
    if wanted & {"nmi", "f1"}:
        x = _check_embeddings(embeddings)
        y = _check_labels(labels, x.shape[0])
        assignments = cluster(x, len(np.unique(y)), seed, n_init=n_init)
        if "nmi" in wanted:
            results["nmi"] = nmi(assignments, y)
        if "f1" in wanted:
            results["f1"] = pairwise_f1(assignments, y)
    if "map@r" in wanted:
        results["map@r"] = _mean_over_valid(ap, "MAP@R")
    if "r_precision" in wanted:
        results["r_precision"] = _mean_over_valid(rp, "R-precision")
    return results
