"""Shared plumbing of the benchmark scripts: worker subprocesses, thread limits, machine facts, tables.

The scripts in ``benchmarks/`` import it as ``import _harness`` (Python puts a script's folder
first on ``sys.path``). A benchmark that compares backends runs one worker subprocess per
measurement: the parent calls `run_worker` with the command line of the worker (the same script
with ``--worker ...``); the worker calls `start_worker` (backend, thread limits), measures, and
prints its JSON result with `emit`; `run_worker` forwards the worker's ``[bench ...]`` progress
lines (`progress`) and returns the result. Workers run one after the other, never concurrently.

Nothing here imports Keras, a framework or kerasml at module level.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("tensorflow", "torch", "jax")
BACKEND_SHORT = {"tensorflow": "tf", "torch": "torch", "jax": "jax", "numpy": "numpy"}
MARKER = "@@KERASML_BENCH_JSON@@"
PROGRESS = "[bench"
MB = 2**20
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


# ------------------------------------------------------------------------------------ worker side ---


def limit_threads(backend, threads, pin=False):
    """Cap the backend's CPU threads; call it in the worker before the backend's runtime starts.

    Sets ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS``; then
    ``torch.set_num_threads`` and ``set_num_interop_threads`` (torch), TensorFlow's intra/inter-op
    threads (tensorflow), or, for ``threads == 1``, ``--xla_cpu_multi_thread_eigen=false`` (jax).

    Args:
        backend: ``"tensorflow"``, ``"torch"``, ``"jax"`` or ``"numpy"``.
        threads: the number of threads.
        pin: also pin the process to ``threads`` CPUs where the OS allows it (Linux). XLA's CPU
            runtime runs fusions on its own thread pool even with Eigen's threading off; without
            the pin a JAX step used ~1.8 of 2 cores when the machine was idle and 1 when it was
            not, which doubled or halved its wall time from one process to the next.
    """
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if pin and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if threads < len(cpus):
            os.sched_setaffinity(0, cpus[:threads])
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    elif backend == "jax" and threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()


def start_worker(backend, threads=0, pin=False):
    """Prepare a worker process: the Keras backend, the repository on ``sys.path``, thread limits.

    Args:
        backend: the Keras backend the worker must run.
        threads: cap of CPU threads (`limit_threads`); ``0`` keeps the libraries' defaults.
        pin: pin the process to ``threads`` CPUs too (see `limit_threads`).

    Returns:
        The imported ``keras`` module.

    Raises:
        RuntimeError: when Keras runs another backend than ``backend``.
    """
    os.environ["KERAS_BACKEND"] = backend
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if threads:
        limit_threads(backend, threads, pin=pin)
    import keras

    if keras.backend.backend() != backend:
        raise RuntimeError(f"KERAS_BACKEND={backend} but Keras runs {keras.backend.backend()}")
    return keras


def backend_facts(backend):
    """Thread and device settings of the running backend, for the report (JSON-friendly)."""
    facts = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    if hasattr(os, "sched_getaffinity"):
        facts["cpu_affinity"] = sorted(os.sched_getaffinity(0))
    if backend == "torch":
        import torch

        facts.update(
            torch_threads=torch.get_num_threads(),
            torch_interop_threads=torch.get_num_interop_threads(),
            cuda=torch.cuda.is_available(),
        )
    elif backend == "tensorflow":
        import tensorflow as tf

        facts.update(
            tf_intra_op_threads=tf.config.threading.get_intra_op_parallelism_threads() or "auto",
            tf_inter_op_threads=tf.config.threading.get_inter_op_parallelism_threads() or "auto",
            gpus=len(tf.config.list_physical_devices("GPU")),
        )
    elif backend == "jax":
        import jax

        facts.update(jax_devices=[str(d) for d in jax.devices()], XLA_FLAGS=os.environ.get("XLA_FLAGS"))
    return facts


def progress(tag, message):
    """A progress line on stderr, which `run_worker` forwards to the parent's stderr."""
    print(f"{PROGRESS} {tag}] {message}", file=sys.stderr, flush=True)


def emit(result):
    """Print a worker's result (JSON after `MARKER`) for `run_worker` to pick up."""
    print(MARKER + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------ parent side ---


def worker_env(backend, threads=0, **extra):
    """The environment of a worker subprocess.

    Args:
        backend: ``KERAS_BACKEND`` of the worker.
        threads: when > 0, also sets the BLAS/OpenMP thread variables (for workers that do not call
            `limit_threads` themselves).
        **extra: more variables.

    Returns:
        A copy of ``os.environ`` with ``KERAS_BACKEND``, the repository first on ``PYTHONPATH`` and
        ``TF_CPP_MIN_LOG_LEVEL=3`` unless set.
    """
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if threads:
        env.update({name: str(threads) for name in THREAD_VARIABLES})
    env.update({key: str(value) for key, value in extra.items()})
    return env


def run_worker(command, env, timeout=None, elapsed_key="wall_s"):
    """Run one worker subprocess to its end and return its result.

    The worker's ``[bench ...]`` stderr lines are forwarded as they come; the last 40 other
    stderr lines are kept for the error report.

    Args:
        command: the worker's command line (a list, e.g. ``[sys.executable, script, "--worker", ...]``).
        env: its environment (`worker_env`).
        timeout: seconds before the worker is killed; ``None`` waits.
        elapsed_key: the key under which the worker's wall time (s, start-up included) is added.

    Returns:
        The worker's JSON result (a dict) with ``elapsed_key`` added, or ``{"error": ..., "stderr_tail": ...,
        elapsed_key: ...}`` when it printed none.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout_lines, stderr_tail = [], []

    def pump_stderr():
        for line in proc.stderr:
            if line.startswith(PROGRESS):
                print(line, end="", file=sys.stderr, flush=True)
            else:
                stderr_tail.append(line)
                del stderr_tail[:-40]

    def pump_stdout():
        stdout_lines.extend(proc.stdout)

    pumps = [threading.Thread(target=pump_stderr, daemon=True), threading.Thread(target=pump_stdout, daemon=True)]
    for pump in pumps:
        pump.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pump in pumps:
        pump.join(timeout=5)
    elapsed = time.perf_counter() - started
    for line in stdout_lines:
        if line.startswith(MARKER):
            result = json.loads(line[len(MARKER) :])
            result[elapsed_key] = elapsed
            return result
    return {
        "error": f"worker exited with {proc.returncode} after {elapsed:.0f} s without results",
        "stderr_tail": "".join(stderr_tail[-15:]),
        elapsed_key: elapsed,
    }


# ------------------------------------------------------------------------------------ machine facts ---


def loadavg():
    """The 1/5/15-minute load averages, or ``None`` where the OS has none (Windows)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_facts(distributions=("keras", "tensorflow", "torch", "jax", "jaxlib", "numpy", "rich")):
    """What the reader needs to judge the timings: CPU, memory, Python, versions, load.

    Args:
        distributions: the packages whose versions to record (``None`` when not installed).

    Returns:
        A dict: ``python``, ``platform``, ``processor``, ``cpu_count``, ``cpus_usable``,
        ``loadavg``, ``versions``, and where ``/proc`` has them ``cpu_model``, ``mem_total_gb``,
        ``mem_available_gb``.
    """
    facts = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg": loadavg(),
    }
    try:
        with open("/proc/meminfo") as f:
            mem = dict(line.split(":", 1) for line in f)
        facts["mem_total_gb"] = round(int(mem["MemTotal"].split()[0]) / 2**20, 1)
        facts["mem_available_gb"] = round(int(mem["MemAvailable"].split()[0]) / 2**20, 1)
    except (OSError, KeyError, ValueError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            facts["cpu_model"] = names[0]
    except OSError:
        pass
    versions = {}
    for dist in distributions:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    facts["versions"] = versions
    return facts


def machine_lines(machine):
    """The machine facts as report lines (CPU and memory, Python, versions, load at start)."""
    load = machine.get("loadavg")
    return [
        f"CPU: {machine.get('cpu_model', machine['processor'])}; os.cpu_count()={machine['cpu_count']}, "
        f"usable={machine['cpus_usable']}; RAM {machine.get('mem_total_gb')} GB "
        f"({machine.get('mem_available_gb')} GB available at start)",
        f"Python {machine['python']} on {machine['platform']}",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in machine["versions"].items()),
        "Load average at start (1/5/15 min): " + (", ".join(f"{x:.2f}" for x in load) if load else "n/a"),
    ]


def load_change(facts):
    """``"; 1-min load A -> B"`` from a worker's ``loadavg_start`` / ``loadavg_end`` facts, or ``""``."""
    start, end = facts.get("loadavg_start"), facts.get("loadavg_end")
    return f"; 1-min load {start[0]:.2f} -> {end[0]:.2f}" if start and end else ""


# ------------------------------------------------------------------------------------ memory ---


def _proc_status():
    """``/proc/self/status`` memory lines in kB (Linux), else ``{}``."""
    try:
        with open("/proc/self/status") as f:
            lines = [line.split(":", 1) for line in f if line.startswith("Vm")]
        return {key: int(value.split()[0]) for key, value in lines}
    except (OSError, ValueError, IndexError):
        return {}


def _psutil_memory():
    try:
        import psutil
    except ImportError:
        return None
    return psutil.Process().memory_info()


def current_rss_mb():
    """Resident set size now, in MB (``/proc``, else psutil, else ``None``)."""
    status = _proc_status()
    if "VmRSS" in status:
        return status["VmRSS"] / 1024
    info = _psutil_memory()
    return None if info is None else info.rss / MB


def lifetime_peak_rss_mb():
    """The process's RSS high-water mark in MB: ``ru_maxrss`` (POSIX), psutil's ``peak_wset``, or ``None``."""
    try:
        import resource
    except ImportError:  # Windows
        info = _psutil_memory()
        peak = getattr(info, "peak_wset", None)
        return None if peak is None else peak / MB
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / MB if sys.platform == "darwin" else value / 1024  # bytes on macOS, kB elsewhere


def reset_peak_rss():
    """Reset the RSS high-water mark (Linux >= 4.0); ``True`` when ``VmHWM`` now reads the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    status = _proc_status()
    return "VmHWM" in status and "VmRSS" in status and status["VmHWM"] <= status["VmRSS"] + 4096


def peak_rss_mb(was_reset):
    """``(peak MB, how it was measured)`` since `reset_peak_rss` (when it succeeded) or over the lifetime."""
    if was_reset:
        status = _proc_status()
        if "VmHWM" in status:
            return status["VmHWM"] / 1024, "VmHWM since reset"
    peak = lifetime_peak_rss_mb()
    if peak is None:
        return None, "n/a (no resource module, no psutil)"
    how = "ru_maxrss" if sys.platform != "win32" else "psutil peak_wset"
    return peak, f"{how} over the process lifetime"


# ------------------------------------------------------------------------------------ numbers and tables ---


def stats_ms(values_ms):
    """Summary of timings in ms: median, quartiles, min, max, mean, count and the sorted values."""
    ms = sorted(values_ms)
    q = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else [ms[0]] * 3
    return {
        "median_ms": statistics.median(ms),
        "p25_ms": q[0],
        "p75_ms": q[2],
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "mean_ms": statistics.fmean(ms),
        "runs": len(ms),
        "times_ms": [round(t, 4) for t in ms],
    }


def ratio(numerator, denominator):
    """``numerator / denominator``, or ``None`` when either is missing or the denominator is not > 0."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def csv_list(kind=str):
    """An argparse ``type`` for a comma list (``"a,b"`` -> ``["a", "b"]``; ints with ``kind=int``)."""

    def parse(text):
        items = [item.strip() for item in text.split(",") if item.strip()]
        return [kind(item) for item in items]

    return parse


def console(width):
    """A rich ``Console`` (``width`` columns when stdout is not a terminal), or ``None`` without rich."""
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(width=None if sys.stdout.isatty() else width)


def _plain(text):
    """Rich markup tags (``[red]``, ``[/red]``, ``[bold]``...) removed, for output without rich."""
    return re.sub(r"\[/?[a-z ]+\]", "", str(text)).replace("\\[", "[")


def escape(text):
    """``text`` with rich markup escaped (unchanged without rich)."""
    try:
        from rich.markup import escape as rich_escape
    except ImportError:
        return text
    return rich_escape(text)


def print_table(out, title, columns, rows, sections=None):
    """Print a table with rich, or as plain tab-separated text without it.

    Args:
        out: a `console` (or ``None`` for plain text).
        title: the table's title.
        columns: ``(name, justify)`` pairs (``"left"`` / ``"right"``).
        rows: lists of cell strings (rich markup allowed; stripped in plain text).
        sections: optional list of row indices before which a section line is drawn.
    """
    if out is None:
        print(title)
        print("\t".join(name for name, _ in columns))
        for row in rows:
            print("\t".join(_plain(cell) for cell in row))
        return
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for index, row in enumerate(rows):
        if sections and index in sections:
            table.add_section()
        table.add_row(*row)
    out.print(table)


def print_lines(out, lines, indent="  "):
    """Print report lines (facts, notes): through rich without highlighting, or plainly."""
    for line in lines:
        if out is None:
            print(indent + _plain(line))
        else:
            out.print(indent + line, highlight=False)
