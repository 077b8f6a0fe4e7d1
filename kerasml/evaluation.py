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

import itertools
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
from keras import ops

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

#: Metric names accepted by :func:`evaluate` (``"recall"`` stands for every ``recall@K``).
METRICS = ("recall", "nmi", "f1", "map@r", "r_precision")
#: The K of Recall@K reported by HDML on CUB-200-2011 and Cars196.
DEFAULT_KS = (1, 2, 4, 8)

_BACKENDS = ("numpy", "keras")
_DTYPES = ("float32", "float64")
# Work space per chunk of queries when `chunk_size=None` (distances, a partition copy, a mask).
_CHUNK_BUDGET_BYTES = 512 * 2**20
_MAX_AUTO_CHUNK = 4096
# Row blocks smaller than this are not worth a thread.
_MIN_ROWS_PER_THREAD = 64
# Dense contingency table (bincount, O(N + C*K)) up to this many cells, sparse (np.unique) above.
_DENSE_CONTINGENCY_CELLS = 2**22


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _to_numpy(x):
    if ops.is_tensor(x):
        return ops.convert_to_numpy(x)
    return np.asarray(x)


def _check_embeddings(embeddings, name="embeddings"):
    x = _to_numpy(embeddings)
    if x.ndim != 2:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a 2-D array of shape [N, D] (one row per "
            f"sample). Received: {name}.shape={x.shape}. Reshape it, e.g. `{name}.reshape(len({name}), -1)`."
        )
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)) or x.dtype == bool:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected real numbers (float or int). "
            f"Received: {name}.dtype={x.dtype}."
        )
    if x.shape[0] < 2:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected at least 2 samples (a query needs another "
            f"sample to be compared with). Received: {name}.shape={x.shape}."
        )
    if x.shape[1] < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected at least 1 dimension. Received: {name}.shape={x.shape}."
        )
    if np.issubdtype(x.dtype, np.floating):
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        if bad.size:
            rows = ", ".join(str(int(r)) for r in bad[:5]) + (", ..." if bad.size > 5 else "")
            raise ValueError(
                f"Invalid value for argument `{name}`: {bad.size} of {x.shape[0]} rows contain NaN or "
                f"infinite values (rows {rows}). Embeddings must be finite: check the model's outputs "
                f"(a diverged run, a log of 0) or drop those rows together with their labels."
            )
    return x


def _check_labels(labels, n, name="labels", n_name="embeddings"):
    y = _to_numpy(labels)
    if y.ndim != 1:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected a 1-D array of integer class ids, one per "
            f"sample. Received: {name}.shape={y.shape}. Flatten it, e.g. `{name}.reshape(-1)`."
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected integer class ids. Received: {name}.dtype={y.dtype}. "
            f"Cast them, e.g. `{name}.astype('int64')`, or map class names to ids first."
        )
    if y.shape[0] != n:
        raise ValueError(
            f"Arguments `{n_name}` and `{name}` do not match: `{n_name}` has {n} rows but `{name}` has "
            f"{y.shape[0]} entries. Pass exactly one label per row, in the same order."
        )
    return y


def _check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"Invalid value for argument `{name}`. Expected one of {choices}. Received: {name}={value!r}.")


def _check_chunk_size(chunk_size):
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(
            "Invalid value for argument `chunk_size`. Expected a positive integer (queries per chunk) or None "
            f"(automatic, about {_CHUNK_BUDGET_BYTES // 2**20} MiB of work space). Received: chunk_size={chunk_size!r}."
        )


def _check_k(k, n, name="k"):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n - 1:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected an integer K with 1 <= K <= N - 1 = {n - 1}: each "
            f"of the N = {n} queries has N - 1 other samples (itself excluded), so K >= N is impossible. "
            f"Received: {name}={k!r}. Lower K or evaluate on more samples."
        )
    return int(k)


def _check_ks(ks, n):
    if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool):
        ks = (ks,)
    ks = tuple(ks)
    if not ks:
        raise ValueError(
            "Invalid value for argument `ks`. Expected at least one K, e.g. ks=(1, 2, 4, 8). Received: ks=()."
        )
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n - 1:
            raise ValueError(
                f"Invalid value for argument `ks`. Expected integers K with 1 <= K <= N - 1 = {n - 1}: each of "
                f"the N = {n} queries has N - 1 other samples (itself excluded), so K >= N is impossible. "
                f"Received: ks={ks!r}. Drop the K that are too large or evaluate on more samples."
            )
    return tuple(sorted({int(k) for k in ks}))


def _check_metrics(metrics):
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(
            f"Invalid value for argument `metrics`. Expected a non-empty subset of {METRICS}. "
            f"Received: metrics={metrics!r}."
        )
    return set(metrics)


# --------------------------------------------------------------------------------------------
# Exact k-NN machinery
# --------------------------------------------------------------------------------------------


def _num_threads():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _auto_chunk_size(n, itemsize):
    per_row = n * (2 * itemsize + 1)
    return int(min(_MAX_AUTO_CHUNK, max(1, _CHUNK_BUDGET_BYTES // per_row)))


def _row_blocks(n_rows, n_threads):
    """Splits ``range(n_rows)`` into at most ``n_threads`` contiguous blocks worth a thread each."""
    parts = max(1, min(n_threads, n_rows // _MIN_ROWS_PER_THREAD))
    bounds = np.linspace(0, n_rows, parts + 1).astype(int)
    return list(itertools.pairwise(bounds))


class _Searcher:
    """Chunked ranking keys ``||x_j||^2 / 2 - <x_i, x_j>`` of normalised embeddings.

    ``base`` is ``[-x, ||x||^2 / 2]`` (``[N, D + 1]``) and a query chunk is ``[x_i, 1]``, so one
    matrix product gives the key matrix of the chunk (``[c, N]``); the query's own column is set
    to ``+inf``, which excludes it.
    """

    def __init__(self, x, dtype, chunk_size, backend):
        n, dim = x.shape
        x = np.asarray(x, dtype=dtype)
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))  # no [N, D] temporary
        self.base = np.empty((n, dim + 1), dtype=dtype)
        # Normalise in place into base[:, :D]; zero rows stay zero.
        np.divide(x, norms[:, None], out=self.base[:, :dim], where=norms[:, None] > 0)
        self.base[norms == 0, :dim] = 0
        self.base[:, dim] = 0.5 * np.einsum("ij,ij->i", self.base[:, :dim], self.base[:, :dim])
        np.negative(self.base[:, :dim], out=self.base[:, :dim])
        self.n = n
        self.dtype = dtype
        self.chunk_size = int(chunk_size) if chunk_size is not None else _auto_chunk_size(n, self.base.itemsize)
        self.backend = backend
        self.threads = _num_threads()
        if backend == "keras":
            got = dtype
            if keras.backend.backend() == "jax" and dtype == "float64":
                import jax

                got = dtype if jax.config.jax_enable_x64 else "float32"
            if got == dtype:
                self.base_t = ops.convert_to_tensor(self.base, dtype=dtype)
                got = keras.backend.standardize_dtype(self.base_t.dtype)
            if got != dtype:
                raise ValueError(
                    f"Invalid value for argument `dtype`: the {keras.backend.backend()} backend computes {dtype} as "
                    f"{got} here (JAX needs `jax.config.update('jax_enable_x64', True)` for float64). Pass "
                    f"dtype='{got}' or backend='numpy'."
                )

    def chunks(self):
        for start in range(0, self.n, self.chunk_size):
            yield start, min(start + self.chunk_size, self.n)

    def _queries(self, start, stop):
        q = np.empty((stop - start, self.base.shape[1]), dtype=self.dtype)
        np.negative(self.base[start:stop, :-1], out=q[:, :-1])
        q[:, -1] = 1
        return q

    def keys(self, start, stop):
        """NumPy key matrix ``[stop - start, N]`` of queries ``start..stop-1``, self at ``+inf``."""
        d = self._queries(start, stop) @ self.base.T
        d[np.arange(stop - start), np.arange(start, stop)] = np.inf
        return d

    def keras_topk(self, start, stop, k):
        """The ``k`` nearest neighbours of queries ``start..stop-1`` with ``keras.ops`` (``[c, k]``)."""
        neg_q = ops.convert_to_tensor(-self._queries(start, stop), dtype=self.dtype)
        scores = ops.matmul(neg_q, ops.transpose(self.base_t))  # [c, N], = -keys
        is_self = ops.equal(ops.expand_dims(ops.arange(start, stop), 1), ops.expand_dims(ops.arange(self.n), 0))
        scores = ops.where(is_self, ops.cast(-np.inf, self.dtype), scores)
        values, indices = ops.top_k(scores, k + 1, sorted=True)  # k + 1 <= N: sees a tie at the k-th place
        values = ops.convert_to_numpy(values)
        indices = ops.convert_to_numpy(indices).astype(np.int64)[:, :k]
        tied = np.flatnonzero((values[:, 1:] == values[:, :-1]).any(axis=1))
        if tied.size:  # top_k does not promise an order among equal values: redo those rows, stably
            rows = ops.convert_to_numpy(ops.take(scores, ops.convert_to_tensor(tied), axis=0))
            indices[tied] = np.argsort(-rows, axis=1, kind="stable")[:, :k]
        return indices

    def map_blocks(self, fn, n_rows):
        """Runs ``fn(lo, hi)`` over row blocks of a chunk, in threads when worth it."""
        blocks = _row_blocks(n_rows, self.threads)
        if len(blocks) == 1:
            return [fn(*blocks[0])]
        with ThreadPoolExecutor(len(blocks)) as pool:
            return list(pool.map(lambda b: fn(*b), blocks))


def _topk_smallest(d, k):
    """Column indices of the ``k`` smallest entries of each row of ``d``, by (value, column).

    ``np.partition`` finds each row's k-th smallest value ``t``; every entry ``<= t`` is a
    candidate (exactly ``k`` of them unless values tie at the k-th place), ``np.flatnonzero``
    lists them by row and increasing column, and sorting by value keeps that column order among
    equal values (a stable sort, only for the rows that have equal values).
    """
    c, n = d.shape
    threshold = np.partition(d, k - 1, axis=1)[:, k - 1]
    flat = np.flatnonzero(d <= threshold[:, None])
    rows, cols = np.divmod(flat, n)
    values = d.reshape(-1)[flat]
    if flat.size == c * k:  # no tie across the k-th place: k candidates per row
        values, cols = values.reshape(c, k), cols.reshape(c, k)
        order = np.argsort(values, axis=1)
        ordered = np.take_along_axis(values, order, axis=1)
        tied = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
        order[tied] = np.argsort(values[tied], axis=1, kind="stable")
        return np.take_along_axis(cols, order, axis=1)
    order = np.lexsort((values, rows))  # by row, then value; stable, so by column among ties
    counts = np.bincount(rows, minlength=c)
    starts = np.cumsum(counts) - counts
    return cols[order[starts[:, None] + np.arange(k)]]


class _Classes:
    """Class ids ``0..C-1`` of the labels, their members (sorted by index) and ``R_i``."""

    def __init__(self, y):
        _, self.ids = np.unique(y, return_inverse=True)
        self.ids = self.ids.reshape(-1)
        self.counts = np.bincount(self.ids)
        self.members = np.argsort(self.ids, kind="stable")  # grouped by class, indices ascending
        self.starts = np.cumsum(self.counts) - self.counts
        self.r = self.counts[self.ids] - 1  # other samples of the query's class

    def member_matrix(self, rows):
        """``[len(rows), P]`` members of each row's class, padded with the row itself."""
        cls = self.ids[rows]
        width = int(self.counts[cls].max())
        pos = np.arange(width)
        take = np.minimum(self.starts[cls][:, None] + pos, self.members.size - 1)
        return np.where(pos < self.counts[cls][:, None], self.members[take], rows[:, None])


def _first_positive_rank(d, rows, classes):
    """1-based rank of the nearest same-class sample of each query (``N`` when there is none).

    ``rank = #{j: key_j < key_p} + #{j < p: key_j = key_p} + 1`` for the nearest positive ``p``
    (lowest index among equals): the position of ``p`` in the (key, index) order, found with
    two counting passes instead of a sort. Recall@K is then ``mean(rank <= K)``.
    """
    n = d.shape[1]
    members = classes.member_matrix(rows)  # self has key +inf: never the minimum unless alone
    member_keys = np.take_along_axis(d, members, axis=1)
    best = np.argmin(member_keys, axis=1)  # first minimum: the lowest index among equals
    ar = np.arange(len(rows))
    key = member_keys[ar, best]
    nearest = members[ar, best]
    less = np.count_nonzero(d < key[:, None], axis=1)
    less_equal = np.count_nonzero(d <= key[:, None], axis=1)
    has_positive = np.isfinite(key)
    rank = np.where(has_positive, less + 1, n).astype(np.int64)
    for r in np.flatnonzero(has_positive & (less_equal - less > 1)):  # others tie with p: count those before p
        rank[r] += np.count_nonzero(d[r, : nearest[r]] == key[r])
    return rank


def _rank_from_neighbors(neighbors, rows, y, n):
    """Rank of the first same-class sample among ``neighbors`` (``N`` when it is not there)."""
    rel = y[neighbors] == y[rows][:, None]
    return np.where(rel.any(axis=1), rel.argmax(axis=1) + 1, n).astype(np.int64)


def _average_precision_at_r(neighbors, rows, y, r):
    """Per-query ``(MAP@R_i, RP_i)`` from the first ``max R`` neighbours (``nan`` where R_i = 0)."""
    r_q = r[rows]
    width = neighbors.shape[1]
    rel = (y[neighbors] == y[rows][:, None]) & (np.arange(width) < r_q[:, None])
    hits = np.cumsum(rel, axis=1)
    precision = hits / np.arange(1, width + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(r_q > 0, (precision * rel).sum(axis=1) / r_q, np.nan)
        rp = np.where(r_q > 0, hits[:, -1] / r_q, np.nan)
    return ap, rp


def _retrieval(embeddings, labels, ks, want_recall, want_r, chunk_size, backend, dtype):
    """One pass over the chunks: per-query first-positive ranks and (MAP@R_i, RP_i)."""
    _check_choice(backend, "backend", _BACKENDS)
    _check_choice(dtype, "dtype", _DTYPES)
    _check_chunk_size(chunk_size)
    x = _check_embeddings(embeddings)
    n = x.shape[0]
    y = _check_labels(labels, n)
    ks = _check_ks(ks, n) if want_recall else ()
    classes = _Classes(y)
    y = classes.ids
    r_max = int(classes.r.max()) if want_r else 0
    searcher = _Searcher(x, dtype, chunk_size, backend)
    rank = np.full(n, n, dtype=np.int64)
    ap = np.full(n, np.nan)
    rp = np.full(n, np.nan)
    for start, stop in searcher.chunks():
        if backend == "keras":
            rows = np.arange(start, stop)
            k = max(max(ks, default=0), r_max)
            if k == 0:
                continue
            neighbors = searcher.keras_topk(start, stop, k)
            if want_recall:
                rank[start:stop] = _rank_from_neighbors(neighbors[:, : max(ks)], rows, y, n)
            if r_max:
                ap[start:stop], rp[start:stop] = _average_precision_at_r(neighbors[:, :r_max], rows, y, classes.r)
            continue
        d = searcher.keys(start, stop)

        def block(lo, hi, d=d, start=start):
            rows = np.arange(start + lo, start + hi)
            if want_recall:
                rank[start + lo : start + hi] = _first_positive_rank(d[lo:hi], rows, classes)
            if r_max:
                neighbors = _topk_smallest(d[lo:hi], r_max)
                ap[start + lo : start + hi], rp[start + lo : start + hi] = _average_precision_at_r(
                    neighbors, rows, y, classes.r
                )

        searcher.map_blocks(block, stop - start)
        del d, block  # block holds d too: free it before the next chunk's product
    return ks, rank, ap, rp


def _mean_over_valid(values, name):
    valid = ~np.isnan(values)
    if not valid.any():
        warnings.warn(
            f"{name} is undefined (nan): every class has a single sample, so no query has R >= 1 other "
            "sample of its class. Evaluate on a set with at least two samples in some class.",
            RuntimeWarning,
            stacklevel=3,
        )
        return math.nan
    return float(values[valid].mean())


# --------------------------------------------------------------------------------------------
# Public API: retrieval
# --------------------------------------------------------------------------------------------


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
    _check_choice(backend, "backend", _BACKENDS)
    _check_choice(dtype, "dtype", _DTYPES)
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


# --------------------------------------------------------------------------------------------
# Public API: clustering
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Public API: everything at once
# --------------------------------------------------------------------------------------------


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
        _check_choice(backend, "backend", _BACKENDS)
        _check_choice(dtype, "dtype", _DTYPES)
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
