"""Retrieval metrics: nearest neighbours, Recall@K, MAP@R, R-precision (definitions in `kerasml.evaluation`)."""

from __future__ import annotations

import numpy as np

from kerasml._validation import check_choice
from kerasml.evaluation._checks import _BACKENDS, _DTYPES, DEFAULT_KS, _check_chunk_size, _check_embeddings, _check_k
from kerasml.evaluation._knn import _mean_over_valid, _retrieval, _Searcher, _topk_smallest


def nearest_neighbors(embeddings, k, chunk_size=None, *, backend="numpy", dtype="float32"):
    """Exact k nearest neighbours of every sample among the others (leave-one-out).

    Embeddings are L2-normalised (``x / ||x||``, zero rows stay zero); neighbours are ordered by
    increasing Euclidean distance ``||x_i - x_j||``, equal distances by increasing index ``j``;
    the query ``i`` itself is never its own neighbour (duplicates of it at other indices are).
    The ``N x N`` distance matrix is never formed: queries go in chunks of ``chunk_size`` rows,
    each one matrix product ``[c, D + 1] x [D + 1, N]`` (keys ``||x_j||^2 / 2 - <x_i, x_j>``, the
    same order as the distance), then a per-row selection (``np.partition`` with NumPy,
    ``keras.ops.top_k`` with Keras; rows whose selected values tie are re-sorted stably).

    Args:
        embeddings: ``[N, D]`` floats (NumPy array, array-like or backend tensor), N >= 2.
        k: number of neighbours, ``1 <= k <= N - 1``.
        chunk_size: queries per chunk; work space is about ``chunk_size * N * (2 * itemsize + 1)``
            bytes. Defaults to None: as many as fit in 512 MiB (at most 4096).
        backend: ``"numpy"`` (BLAS matrix product, threaded selection) or ``"keras"`` (``keras.ops``
            matmul + ``top_k`` on the active Keras backend, e.g. a GPU). Defaults to ``"numpy"``.
        dtype: ``"float32"`` or ``"float64"``, the precision of the distances (and of the tie test).
            Defaults to ``"float32"``.

    Returns:
        ``[N, k]`` int64 NumPy array; row ``i`` lists the neighbours of sample ``i``, nearest first.

    Raises:
        ValueError: for a non-2-D or non-finite ``embeddings``, fewer than 2 samples, ``k`` outside
            ``[1, N - 1]``, or an unknown ``backend`` / ``dtype`` / ``chunk_size``.

    Example:

    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [-1.0, 0.0]])
    >>> nearest_neighbors(x, k=2)
    array([[2, 1],
           [2, 0],
           [0, 1],
           [1, 2]])
    """
    check_choice("backend", backend, _BACKENDS)
    check_choice("dtype", dtype, _DTYPES)
    _check_chunk_size(chunk_size)
    x = _check_embeddings(embeddings)
    n = x.shape[0]
    k = _check_k(k, n)
    searcher = _Searcher(x, dtype, chunk_size, backend)
    out = np.empty((n, k), dtype=np.int64)
    for start, stop in searcher.chunks():
        if backend == "keras":
            out[start:stop] = searcher.keras_topk(start, stop, k)
            continue
        d = searcher.keys(start, stop)

        def block(lo, hi, d=d, start=start):
            out[start + lo : start + hi] = _topk_smallest(d[lo:hi], k)

        searcher.map_blocks(block, stop - start)
        del d, block  # block holds d too: free it before the next chunk's product
    return out


def recall_at_k(embeddings, labels, ks=DEFAULT_KS, *, chunk_size=None, backend="numpy", dtype="float32"):
    """Recall@K: the fraction of queries with a same-class sample among their K nearest neighbours.

    ``Recall@K = (1/N) sum_i [exists j in NN_K(i): y_j = y_i]`` with ``NN_K(i)`` the K nearest
    *other* samples of ``i`` (Euclidean distance on L2-normalised embeddings, ties by index; see
    :func:`nearest_neighbors`). Every sample is a query; one whose class has no other sample counts
    as a miss. With ``backend="numpy"`` no neighbour list is sorted: for each query the rank of
    its nearest same-class sample is counted in two vectorised passes, ``Recall@K =
    mean(rank <= K)`` for all K at once.

    Args:
        embeddings: ``[N, D]`` floats, N >= 2.
        labels: ``[N]`` integer class ids.
        ks: the K to report, each ``1 <= K <= N - 1``. Defaults to ``(1, 2, 4, 8)``.
        chunk_size: queries per chunk (see :func:`nearest_neighbors`). Defaults to None (automatic).
        backend: ``"numpy"`` or ``"keras"``. Defaults to ``"numpy"``.
        dtype: ``"float32"`` or ``"float64"``. Defaults to ``"float32"``.

    Returns:
        ``{"recall@K": value}`` for each K, in increasing K.

    Raises:
        ValueError: for mismatched or invalid inputs (see :func:`nearest_neighbors`), non-integer or
            non-1-D ``labels``, or a K outside ``[1, N - 1]``.

    Example:

    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [-1.0, 0.0]])
    >>> recall_at_k(x, [0, 0, 1, 1], ks=(1, 2))
    {'recall@1': 0.0, 'recall@2': 0.75}
    """
    ks, rank, _, _ = _retrieval(embeddings, labels, ks, True, False, chunk_size, backend, dtype)
    return {f"recall@{k}": float(np.mean(rank <= k)) for k in ks}


def map_at_r(embeddings, labels, *, chunk_size=None, backend="numpy", dtype="float32"):
    """MAP@R (Musgrave et al. 2020): mean average precision over each query's first R neighbours.

    For query ``i``, ``R_i`` is the number of other samples of its class, ``rel_i(k) = 1`` when
    its k-th nearest neighbour shares its class, ``P_i(k) = (1/k) sum_{m<=k} rel_i(m)``;
    ``MAP@R_i = (1/R_i) sum_{k=1..R_i} P_i(k) rel_i(k)``, and MAP@R is its mean over the queries
    with ``R_i >= 1``. Queries of single-sample classes (``R_i = 0``) are left out; if every class
    has a single sample the result is ``nan`` (with a ``RuntimeWarning``). Neighbours as in
    :func:`nearest_neighbors` (ties by index).

    Args:
        embeddings: ``[N, D]`` floats, N >= 2.
        labels: ``[N]`` integer class ids.
        chunk_size: queries per chunk. Defaults to None (automatic).
        backend: ``"numpy"`` or ``"keras"``. Defaults to ``"numpy"``.
        dtype: ``"float32"`` or ``"float64"``. Defaults to ``"float32"``.

    Returns:
        MAP@R as a float in ``[0, 1]`` (or ``nan``).

    Raises:
        ValueError: for mismatched or invalid inputs.

    Reference:
        K. Musgrave, S. Belongie, S.-N. Lim, "A Metric Learning Reality Check", ECCV 2020,
        https://arxiv.org/abs/2003.08505

    Example:

    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [-1.0, 0.0]])
    >>> map_at_r(x, [0, 1, 0, 1])  # R_i = 1; the nearest neighbour of query 1 is sample 2, of class 0
    0.75
    """
    _, _, ap, _ = _retrieval(embeddings, labels, (), False, True, chunk_size, backend, dtype)
    return _mean_over_valid(ap, "MAP@R")


def r_precision(embeddings, labels, *, chunk_size=None, backend="numpy", dtype="float32"):
    """R-precision (Musgrave et al. 2020): the fraction of each query's R nearest neighbours in its class.

    ``RP_i = (1/R_i) sum_{k=1..R_i} rel_i(k)`` with ``R_i`` the number of other samples of the
    query's class; the mean over the queries with ``R_i >= 1`` (single-sample classes are left
    out, ``nan`` with a ``RuntimeWarning`` if nothing is left). Neighbours as in
    :func:`nearest_neighbors` (ties by index).

    Args:
        embeddings: ``[N, D]`` floats, N >= 2.
        labels: ``[N]`` integer class ids.
        chunk_size: queries per chunk. Defaults to None (automatic).
        backend: ``"numpy"`` or ``"keras"``. Defaults to ``"numpy"``.
        dtype: ``"float32"`` or ``"float64"``. Defaults to ``"float32"``.

    Returns:
        R-precision as a float in ``[0, 1]`` (or ``nan``).

    Raises:
        ValueError: for mismatched or invalid inputs.

    Reference:
        K. Musgrave, S. Belongie, S.-N. Lim, "A Metric Learning Reality Check", ECCV 2020,
        https://arxiv.org/abs/2003.08505

    Example:

    >>> x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [-1.0, 0.0]])
    >>> r_precision(x, [0, 1, 1, 1])  # R = 0, 2, 2, 2: query 0 is left out; 1/2, 1/2, 2/2
    0.6666666666666666
    """
    _, _, _, rp = _retrieval(embeddings, labels, (), False, True, chunk_size, backend, dtype)
    return _mean_over_valid(rp, "R-precision")
