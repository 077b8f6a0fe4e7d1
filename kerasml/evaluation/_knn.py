"""Exact chunked k-NN: the ranking pass behind Recall@K, MAP@R and R-precision."""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
from keras import ops

from kerasml._validation import check_choice
from kerasml.evaluation._checks import (
    _BACKENDS,
    _DTYPES,
    _auto_chunk_size,
    _check_chunk_size,
    _check_embeddings,
    _check_ks,
    _check_labels,
    _num_threads,
    _row_blocks,
)


class _Searcher:
    """Chunked ranking keys ``||x_j||^2 / 2 - <x_i, x_j>`` of normalised embeddings.

    ``base`` is ``[-x, ||x||^2 / 2]`` (``[N, D + 1]``) and a query chunk is ``[x_i, 1]``, so one
    matrix product gives the key matrix of the chunk (``[c, N]``); the query's own column is set
    to ``+inf``, which excludes it. When rows repeat, the product runs over the distinct rows and
    its columns are gathered back: a BLAS kernel may round two equal columns of a product
    differently (edge tiles), and duplicates must tie exactly.
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
        distinct, inverse = np.unique(self.base, axis=0, return_inverse=True)
        self.distinct, self.inverse = (distinct, inverse.reshape(-1)) if len(distinct) < n else (self.base, None)
        self.chunk_size = int(chunk_size) if chunk_size is not None else _auto_chunk_size(n, self.base.itemsize)
        self.backend = backend
        self.threads = _num_threads()
        if backend == "keras":
            got = dtype
            if keras.backend.backend() == "jax" and dtype == "float64":
                import jax

                got = dtype if jax.config.jax_enable_x64 else "float32"
            if got == dtype:
                self.base_t = ops.convert_to_tensor(self.distinct, dtype=dtype)
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
        d = self._queries(start, stop) @ self.distinct.T
        if self.inverse is not None:
            d = d[:, self.inverse]
        d[np.arange(stop - start), np.arange(start, stop)] = np.inf
        return d

    def keras_topk(self, start, stop, k):
        """The ``k`` nearest neighbours of queries ``start..stop-1`` with ``keras.ops`` (``[c, k]``)."""
        neg_q = ops.convert_to_tensor(-self._queries(start, stop), dtype=self.dtype)
        scores = ops.matmul(neg_q, ops.transpose(self.base_t))  # [c, N distinct], = -keys
        if self.inverse is not None:
            scores = ops.take(scores, ops.convert_to_tensor(self.inverse), axis=1)
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
    check_choice("backend", backend, _BACKENDS)
    check_choice("dtype", dtype, _DTYPES)
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
