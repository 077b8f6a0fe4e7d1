"""Exact Recall@K on a large embedding set: ``kerasml.evaluation`` next to faiss, time and peak memory.

What is measured
----------------
``--n`` random embeddings (``N(0, 1)``, float32, ``--dim`` columns, fixed ``--seed``) with labels
``arange(n) % classes`` shuffled (every class has ``n / classes`` samples, ~5.3 for the default
60,000 / 11,316, the size of Stanford Online Products' test set). Every sample is a query against
all the others (itself excluded), and Recall@K is computed for every K in ``--ks`` (default
1, 10, 100, 1000). Methods, each in its OWN subprocess so that time and memory do not mix:

- ``kerasml``: ``kerasml.evaluation.recall_at_k(x, y, ks)``, NumPy path: per chunk of queries one
  float32 BLAS product against all N samples, then the rank of each query's nearest same-class
  sample by counting (no sort), Recall@K for every K at once.
- ``kerasml-knn``: ``kerasml.evaluation.nearest_neighbors(x, max(ks))`` (chunked product, then a
  per-row ``np.partition`` selection and sort, what MAP@R uses), then Recall@K from the lists.
- ``faiss``: ``faiss.IndexFlatL2`` (exact, float32, BLAS) on the same L2-normalised rows; the same
  queries searched with ``k = max(ks) + 1``, the query itself dropped from each row (the last
  entry where it does not appear), then Recall@K from the lists. Only when faiss is installed.
- ``kerasml-keras`` (not in the default list): ``recall_at_k(..., backend="keras")`` on
  ``--keras-backend``.

Each worker loads the data (``.npy`` written once by the parent), imports what it needs, then
measures the call only: wall time (``time.perf_counter``) and process CPU time; peak memory as
(a) the resident set size high-water mark of the call (Linux: ``VmHWM`` after resetting it via
``/proc/self/clear_refs``; elsewhere the process lifetime's ``ru_maxrss``), shown as absolute peak
and increase over the RSS before the call (the absolute value includes Python, NumPy, Keras'
``numpy`` backend and the 0.12 GB input), and (b) ``tracemalloc``'s peak, which sees NumPy's
array allocations (faiss' C++ buffers are only in the RSS). Targets: ``kerasml`` time <= 1.5 x
faiss, peak RSS < 2 GB.

The recall values of all methods are shown side by side: they agree up to float32 rounding
(a different matrix-product kernel can swap two neighbours whose distances differ by ~1e-7).

Noise: on a small shared machine other processes compete for the cores; the load averages at the
start and end of every worker are printed. ``--threads N`` sets ``OMP_NUM_THREADS`` /
``OPENBLAS_NUM_THREADS`` for the workers.

Usage::

    python benchmarks/evaluation.py [--n 60000] [--dim 512] [--classes 11316] [--ks 1,10,100,1000]
        [--methods kerasml,kerasml-knn,faiss] [--chunk-size C] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import _harness as harness
import numpy as np

METHODS = ("kerasml", "kerasml-knn", "faiss", "kerasml-keras")
DEFAULT_METHODS = ("kerasml", "kerasml-knn", "faiss")
TIME_TARGET = 1.5
MEMORY_TARGET_MB = 2048


# --------------------------------------------------------------------------------------------
# Worker
# --------------------------------------------------------------------------------------------


def _recall_from_neighbors(neighbors, y, ks):
    rel = y[neighbors] == y[:, None]
    first = np.where(rel.any(axis=1), rel.argmax(axis=1) + 1, len(y))
    return {f"recall@{k}": float(np.mean(first <= k)) for k in ks}


def _run_method(method, x, y, ks, chunk_size):
    if method in ("kerasml", "kerasml-keras"):
        from kerasml.evaluation import recall_at_k

        backend = "keras" if method == "kerasml-keras" else "numpy"
        return lambda: recall_at_k(x, y, ks, chunk_size=chunk_size, backend=backend)
    if method == "kerasml-knn":
        from kerasml.evaluation import nearest_neighbors

        return lambda: _recall_from_neighbors(nearest_neighbors(x, max(ks), chunk_size=chunk_size), y, ks)
    if method == "faiss":
        import faiss

        def run():
            xn = x / np.linalg.norm(x, axis=1, keepdims=True)
            index = faiss.IndexFlatL2(xn.shape[1])
            index.add(xn)
            k = max(ks)
            _, found = index.search(xn, k + 1)
            is_self = found == np.arange(len(xn))[:, None]
            keep = ~is_self
            keep[~is_self.any(axis=1), -1] = False  # self not found: drop the (k+1)-th instead
            return _recall_from_neighbors(found[keep].reshape(len(xn), k), y, ks)

        return run
    raise ValueError(f"unknown method {method!r}")


def worker(args):
    x = np.load(Path(args.data) / "x.npy")
    y = np.load(Path(args.data) / "y.npy")
    ks = tuple(int(k) for k in args.ks.split(","))
    run = _run_method(args.worker, x, y, ks, args.chunk_size)  # imports happen here, outside the timing
    loadavg_start = harness.loadavg()
    baseline = harness.current_rss_mb()
    was_reset = harness.reset_peak_rss()
    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    recall = run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak, _ = harness.peak_rss_mb(was_reset)
    result = {
        "method": args.worker,
        "wall_s": wall,
        "cpu_s": cpu,
        "rss_baseline_mb": baseline,
        "rss_peak_mb": peak,
        "rss_peak_scope": "call" if was_reset else "process lifetime",
        "tracemalloc_peak_mb": traced_peak / 2**20,
        "recall": recall,
        "loadavg_start": loadavg_start,
        "loadavg_end": harness.loadavg(),
        "blas": _blas_facts(),
    }
    harness.emit(result)


def _blas_facts():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [
        {k: info.get(k) for k in ("internal_api", "version", "architecture", "num_threads", "filepath")}
        for info in threadpool_info()
    ]


# --------------------------------------------------------------------------------------------
# Parent
# --------------------------------------------------------------------------------------------


def _machine_facts():
    facts = harness.machine_facts(("numpy", "keras", "threadpoolctl", "rich"))
    facts["numpy"] = np.__version__
    try:
        import faiss

        facts["faiss"] = faiss.__version__
    except ImportError:
        facts["faiss"] = None
    facts["blas"] = _blas_facts()
    return facts


def _run_worker(method, data_dir, args, console):
    backend = args.keras_backend if method == "kerasml-keras" else "numpy"
    cmd = [sys.executable, __file__, "--worker", method, "--data", str(data_dir), "--ks", args.ks]
    if args.chunk_size:
        cmd += ["--chunk-size", str(args.chunk_size)]
    console.print(f"[dim]running {method} ...[/dim]")
    result = harness.run_worker(cmd, harness.worker_env(backend, threads=args.threads or 0), elapsed_key="worker_s")
    if "error" not in result:
        return result
    console.print(
        f"[red]{method} failed: {harness.escape(result['error'])}[/red]\n{harness.escape(result['stderr_tail'])}"
    )
    return None


def _blas_line(machine):
    """The BLAS that NumPy and faiss load (faiss-cpu wheels bring their own OpenBLAS)."""
    parts = []
    for info in machine.get("blas", []):
        path = info.get("filepath") or ""
        owner = "numpy" if "numpy" in path else "faiss" if "faiss" in path else None
        if owner and info["internal_api"] == "openmp":
            parts.append(f"{owner}: OpenMP ({info['num_threads']} threads)")
        elif owner:
            parts.append(
                f"{owner}: {info['internal_api']} {info['version']} ({info['architecture']} kernels, "
                f"{info['num_threads']} threads)"
            )
    return "; ".join(parts) or "n/a (threadpoolctl not installed)"


def report(results, machine, args, console):
    from rich.table import Table

    ks = [int(k) for k in args.ks.split(",")]
    faiss_result = next((r for r in results if r["method"] == "faiss"), None)
    table = Table(title=f"Exact Recall@K, N={args.n:,} x D={args.dim}, {args.classes:,} classes (self excluded)")
    table.add_column("method")
    table.add_column("wall s", justify="right")
    table.add_column("CPU s", justify="right")
    table.add_column("x faiss", justify="right")
    table.add_column("peak RSS MB (+call)", justify="right")
    table.add_column("tracemalloc peak MB", justify="right")
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
    table.add_column("load avg start/end", justify="right")
    for r in results:
        ratio = ""
        if faiss_result and r is not faiss_result:
            value = r["wall_s"] / faiss_result["wall_s"]
            colour = "green" if value <= TIME_TARGET else "red"
            ratio = f"[{colour}]{value:.2f}[/{colour}]"
        peak = r["rss_peak_mb"]
        colour = "green" if peak is not None and peak < MEMORY_TARGET_MB else "red"
        increase = peak - r["rss_baseline_mb"] if peak is not None and r["rss_baseline_mb"] else float("nan")
        table.add_row(
            r["method"],
            f"{r['wall_s']:.1f}",
            f"{r['cpu_s']:.1f}",
            ratio,
            f"[{colour}]{peak:.0f}[/{colour}] (+{increase:.0f})",
            f"{r['tracemalloc_peak_mb']:.0f}",
            *(f"{r['recall'][f'recall@{k}']:.5f}" for k in ks),
            f"{r['loadavg_start'][0]:.2f} / {r['loadavg_end'][0]:.2f}",
        )
    console.print(table)
    harness.print_lines(console, [harness.escape(line) for line in harness.machine_lines(machine)], indent="")
    console.print(f"faiss {machine['faiss']}", highlight=False)
    console.print(f"BLAS: {_blas_line(machine)}")
    console.print(
        f"Targets: kerasml wall time <= {TIME_TARGET} x faiss, peak RSS < {MEMORY_TARGET_MB} MB (peak scope: "
        f"{results[0]['rss_peak_scope']}; '+call' = increase over the RSS before the call). "
        "Shared machine: timings move with the load of other processes."
    )
    if len(results) > 1:
        diffs = [abs(a["recall"][key] - b["recall"][key]) for a in results for b in results for key in a["recall"]]
        console.print(f"Largest recall difference between methods: {max(diffs):.2e} (float32 rounding of near-ties)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60000, help="number of embeddings (default 60000)")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension (default 512)")
    parser.add_argument("--classes", type=int, default=11316, help="number of classes (default 11316)")
    parser.add_argument("--ks", default="1,10,100,1000", help="comma-separated K (default 1,10,100,1000)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma-separated, from {METHODS}")
    parser.add_argument("--chunk-size", type=int, default=None, help="kerasml queries per chunk (default auto)")
    parser.add_argument("--threads", type=int, default=None, help="BLAS/OpenMP threads of the workers")
    parser.add_argument("--keras-backend", default="tensorflow", help="backend of kerasml-keras")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    console = harness.console(150)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown --methods {unknown}; choose from {METHODS}")
    ks = [int(k) for k in args.ks.split(",")]
    if max(ks) >= args.n or min(ks) < 1:
        parser.error(f"--ks must lie in [1, n - 1 = {args.n - 1}]")
    if "faiss" in methods:
        try:
            import faiss  # noqa: F401
        except ImportError:
            console.print("[yellow]faiss is not installed: skipping it (pip install faiss-cpu)[/yellow]")
            methods.remove("faiss")
    machine = _machine_facts()
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.n, args.dim), dtype=np.float32)
    y = rng.permutation(np.arange(args.n) % args.classes)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "x.npy", x)
        np.save(Path(tmp) / "y.npy", y)
        del x
        for method in methods:
            result = _run_worker(method, tmp, args, console)
            if result is not None:
                results.append(result)
    if not results:
        return 1
    report(results, machine, args, console)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "machine": machine, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
