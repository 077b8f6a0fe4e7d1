"""Input checks and chunking shared by the evaluation metrics."""

from __future__ import annotations

import itertools
import os

import numpy as np
from keras import ops

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
