"""What HDML costs on top of a plain metric model: train-step time and peak memory, per backend.

What is measured
----------------
For every backend (TensorFlow, PyTorch, JAX) and configuration, the same backbone is trained
two ways with ``model.compile()`` (the default Adam per parameter group) and
``model.train_on_batch(x, labels)`` (Keras' own training step, as ``fit`` runs it):

- **plain**: ``kerasml.models.MetricModel(backbone, embedding_dim=128, loss=NPairLoss())``:
  backbone -> projector -> ``z``, loss ``J_m``;
- **HDML**: ``kerasml.hdml.HDMLModel(backbone, embedding_dim=128, loss=NPairLoss(), num_classes=C)``:
  the same, plus the hardness-aware augmentation (the ``N²`` pulled negatives of an N-pair
  batch), two generator passes over the ``N + N²`` decoded rows, the projector on the
  ``N + N²`` synthetic features, ``J_syn``, the classifier and the three-group optimizer.

Configurations (``--configs``):

- ``googlenet``: ``backbones.get("googlenet", input_shape=(224, 224, 3))`` (F = 1024), batch 32
  = 16 N-pairs, labels ``[c_1..c_16, c_1..c_16]``; HDML decodes 16 + 256 rows.
- ``small_cnn``: ``backbones.get("small_cnn", input_shape=(64, 64, 3))`` (F = 128), batch 128
  = 64 N-pairs; HDML decodes 64 + 4096 rows.

Inputs are random images (``N(0, 1)``, float32, channels last, fixed seed) and labels drawn
from ``C = --num-classes`` (default 100) classes, ``min(warm-up + steps, 4)`` distinct batches
cycled, all in memory, identical for plain and HDML. Values of the losses do not matter here;
the cost of a step does not depend on them (``J_avg`` starts at 1e6, so nothing is pulled yet,
but every op of eq. (1) still runs).

Time: each step is timed with ``time.perf_counter`` around ``train_on_batch`` (which returns
the logs as NumPy values, so the step has finished; on CUDA torch also synchronises). The first
``--warmup`` steps (default 2: tracing / XLA compilation, optimizer variables, warm caches) are
not counted; then ``--steps`` (default 3) steps are. Cells are ``median (min-max)`` ms per
step; the ratio is HDML median / plain median, with min / min in brackets (less sensitive to
background load). The per-step process CPU time is in the ``--json`` output and in a note.
Keras' ``jit_compile="auto"`` is kept: on a CPU-only machine that is no XLA for TensorFlow,
eager for PyTorch and ``jax.jit`` for JAX (the resolved value is printed).

Peak memory (host): each (backend, config, model) runs in its OWN subprocess, so peaks do not
mix and every one starts from a fresh runtime. The baseline is the resident set size (RSS)
after the model is built and compiled and the batches are in memory, before the first step.
After the warm-up steps the RSS high-water mark is reset (Linux: ``5`` written to
``/proc/self/clear_refs``, then ``VmHWM`` from ``/proc/self/status``), so the peak is that of
the timed steady-state steps, without one-off tracing / compilation memory. Where that reset is
not possible the peak is the process lifetime's (``resource.getrusage(RUSAGE_SELF).ru_maxrss``
on POSIX; ``psutil``'s ``peak_wset`` on Windows when psutil is installed; else n/a), and the
note says so (the ``--json`` output also has ``lifetime_peak_mb``, warm-up included). Cells are
``peak MB (+increase over the baseline)``; the increase (optimizer
state, activations and gradients, allocator caches) is what HDML changes, the absolute peak
also holds the runtime (TensorFlow alone is several hundred MB). The ratio column is
``increase ratio [absolute ratio]``.

Peak memory (accelerator), only when one is there: PyTorch ``torch.cuda.max_memory_allocated``
(reset after the warm-up), TensorFlow ``tf.config.experimental.get_memory_info("GPU:0")["peak"]``
(reset after the warm-up), JAX ``device.memory_stats()["peak_bytes_in_use"]`` (process
lifetime, compilation included: JAX has no reset). These add two columns to the table.

Targets (project): HDML / plain <= 1.15 in time and <= 1.10 in peak memory for GoogLeNet
(coloured green / red; small_cnn is information only: there the backbone is so cheap that the
``N²`` synthetic rows weigh much more).

Noise and run time
------------------
Wall-clock numbers on a small shared machine are noisy; plain and HDML run one after the other
in different processes, minutes apart, so compare them with the load averages printed alongside
and with the CPU-time ratio in the notes. ``--interleave`` adds one process per (backend,
config) that builds BOTH models and alternates their steps (plain, HDML, HDML, plain, ...):
its time ratio (last column) does not suffer from load drift between processes, and is the one
to trust on a shared machine (it reports no memory: the two models' peaks would mix there).
``--repeats R`` runs every worker process R times (plain, HDML, plain, HDML, ...), pools the
step times and takes the median of the memory figures, showing the range of the increases:
TensorFlow's CPU peak is not reproducible from one process to the next (on the 2-core test
machine the plain GoogLeNet model's increase came out at 2081, 2186, 2437, 2486 and 2509 MB in
five identical processes; HDML's at 2474-2543 MB), so a single pair of processes can show a
memory ratio of 0.95 or 1.19 that has nothing to do with HDML.
``--threads 1`` caps every backend at one thread (torch.set_num_threads, TF intra/inter-op
threads, OMP_NUM_THREADS, XLA ``--xla_cpu_multi_thread_eigen=false``) and, on Linux, pins each
worker to one CPU (XLA still runs fusions on several threads otherwise); it gives steadier
numbers when other work shares the cores. On a 2-core CPU a GoogLeNet step at 224 px batch 32
takes 4-20 s (TensorFlow fastest, JAX slowest; the first JAX step compiles for ~1 min), and
each of the 12 subprocesses pays its import, build and compilation, so the defaults are small
(2 warm-up + 3 timed steps): with ``--threads 1`` the default run took ~8 min on the idle
2-core machine and ~14 min with a 1-minute load of 3-9; ``--interleave`` adds ~90 % (each
interleaved process builds, compiles and steps both models). On a real machine run it longer
for tighter numbers, e.g.::

    python benchmarks/hdml_overhead.py --warmup 3 --steps 20 --repeats 3 --interleave

and on a GPU machine the same command measures GPU steps (Keras puts the model there).

Usage::

    python benchmarks/hdml_overhead.py [--backends tensorflow,torch,jax] [--configs googlenet,small_cnn]
        [--steps N] [--warmup N] [--threads N] [--json out.json] [--num-classes C]
        [--models plain,hdml] [--generator-units U] [--interleave] [--repeats R]

``--generator-units`` changes the HDML generator's hidden width (default 512, the model's
default) to see how much of the overhead is the generator.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import _harness as harness
from _harness import BACKEND_SHORT, BACKENDS, MB, ratio

MODELS = ("plain", "hdml")
INTERLEAVED = "interleaved"  # the optional worker that alternates both models' steps (time only)
EMBEDDING_DIM = 128
CONFIGS = {
    "googlenet": {"backbone": "googlenet", "input_shape": (224, 224, 3), "batch": 32, "label": "GoogLeNet 224px B=32"},
    "small_cnn": {"backbone": "small_cnn", "input_shape": (64, 64, 3), "batch": 128, "label": "small CNN 64px B=128"},
}
TARGET_CONFIGS = {"googlenet"}
TIME_TARGET = 1.15
MEMORY_TARGET = 1.10
MAX_DISTINCT_BATCHES = 4


# ---------------------------------------------------------------- memory ---


def _device_memory(backend, action):
    """Accelerator memory: ``action="reset"`` resets peaks where possible; ``"peak"`` returns
    ``(MB, how)`` or ``(None, None)`` when there is no accelerator (or the API is missing)."""
    try:
        if backend == "torch":
            import torch

            if not torch.cuda.is_available():
                return None, None
            if action == "reset":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                return None, None
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / MB, "torch.cuda.max_memory_allocated since warm-up"
        if backend == "tensorflow":
            import tensorflow as tf

            if not tf.config.list_physical_devices("GPU"):
                return None, None
            if action == "reset":
                tf.config.experimental.reset_memory_stats("GPU:0")
                return None, None
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / MB, "tf get_memory_info peak since warm-up"
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform == "cpu" or action == "reset":
                return None, None
            stats = device.memory_stats() or {}
            if "peak_bytes_in_use" not in stats:
                return None, None
            return stats["peak_bytes_in_use"] / MB, "jax peak_bytes_in_use (lifetime, compilation included)"
    except Exception as error:  # a missing / changed API must not sink the benchmark
        return None, f"n/a ({type(error).__name__})"
    return None, None


def _sync(backend):
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


# ---------------------------------------------------------------- worker ---


def _progress(backend, config, model, message):
    harness.progress(f"{BACKEND_SHORT[backend]} {config} {model}", message)


def make_batches(config, count, num_classes, seed):
    """``count`` in-memory N-pair batches ``(images float32 [B, H, W, 3], labels int32 [B])``."""
    import numpy as np

    spec = CONFIGS[config]
    batch, shape = spec["batch"], spec["input_shape"]
    pairs = batch // 2
    if pairs > num_classes:
        raise ValueError(f"{config}: an N-pair batch of {batch} needs >= {pairs} classes; --num-classes={num_classes}")
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        classes = rng.permutation(num_classes)[:pairs]
        labels = np.concatenate([classes, classes]).astype("int32")
        images = rng.standard_normal((batch, *shape), dtype=np.float32)
        batches.append((images, labels))
    return batches


def _step_stats(values_s):
    return harness.stats_ms([v * 1e3 for v in values_s])


def _build_model(kind, config, args):
    """Build and compile the plain or HDML model of ``config`` (seeded: same backbone weights)."""
    import keras

    import kerasml
    from kerasml.models import MetricModel, backbones

    try:
        from kerasml.hdml import HDMLModel
    except ImportError:  # a kerasml from before HDML had its own package
        from kerasml.models import HDMLModel

    spec = CONFIGS[config]
    keras.utils.set_random_seed(args.seed)
    backbone = backbones.get(spec["backbone"], input_shape=spec["input_shape"])
    loss = kerasml.losses.NPairLoss()
    if kind == "hdml":
        model = HDMLModel(
            backbone,
            embedding_dim=EMBEDDING_DIM,
            loss=loss,
            num_classes=args.num_classes,
            generator_units=args.generator_units,
        )
    else:
        model = MetricModel(backbone, embedding_dim=EMBEDDING_DIM, loss=loss)
    model.compile()
    return model


def _train_step(backend, model, batch):
    """One ``train_on_batch``; returns ``(wall s, process CPU s, logs)``."""
    images, labels = batch
    t0, c0 = time.perf_counter(), time.process_time()
    logs = model.train_on_batch(images, labels, return_dict=True)
    _sync(backend)
    return time.perf_counter() - t0, time.process_time() - c0, logs


def _start_worker(args):
    backend = args.worker
    harness.start_worker(backend, args.threads, pin=True)
    result = {"backend": backend, "config": args.config, "model": args.model, "facts": harness.backend_facts(backend)}
    result["facts"]["loadavg_start"] = harness.loadavg()
    return result


def _finish_worker(result, logs):
    result["logs"] = {k: float(v) for k, v in logs.items()}
    result["finite"] = all(math.isfinite(v) for v in result["logs"].values())
    result["facts"]["loadavg_end"] = harness.loadavg()
    harness.emit(result)


def worker(args):
    """Build one model, time its training steps and its peak memory; print JSON (with ``MARKER``)."""
    backend, config, kind = args.worker, args.config, args.model
    result = _start_worker(args)
    memory = {"rss_after_import_mb": harness.current_rss_mb()}

    started = time.perf_counter()
    model = _build_model(kind, config, args)
    total_steps = args.warmup + args.steps
    batches = make_batches(config, min(total_steps, MAX_DISTINCT_BATCHES), args.num_classes, args.seed + 1)
    result["build_s"] = time.perf_counter() - started
    result["parameters"] = int(sum(math.prod(v.shape) for v in model.weights))
    result["trainable_parameters"] = int(sum(math.prod(v.shape) for v in model.trainable_weights))
    result["jit_compile"] = model.jit_compile
    memory["rss_after_build_mb"] = harness.current_rss_mb()
    memory["lifetime_peak_after_build_mb"] = harness.lifetime_peak_rss_mb()
    _progress(backend, config, kind, f"built in {result['build_s']:.1f} s, {result['parameters']:,} weights")

    warmup_s, wall, cpu, logs = [], [], [], {}
    was_reset = False
    for step in range(total_steps):
        if step == args.warmup:
            memory["rss_after_warmup_mb"] = harness.current_rss_mb()
            memory["warmup_peak_mb"] = harness.lifetime_peak_rss_mb()  # the reset below also resets ru_maxrss
            was_reset = harness.reset_peak_rss()
            _device_memory(backend, "reset")
        elapsed, cpu_elapsed, logs = _train_step(backend, model, batches[step % len(batches)])
        if step < args.warmup:
            warmup_s.append(elapsed)
        else:
            wall.append(elapsed)
            cpu.append(cpu_elapsed)
        _progress(backend, config, kind, f"step {step + 1}/{total_steps}: {elapsed * 1e3:.0f} ms")

    memory["peak_mb"], how = harness.peak_rss_mb(was_reset)
    memory["peak_how"] = f"{how} after warm-up" if was_reset else f"{how} (compilation included)"
    lifetime = [v for v in (memory.get("warmup_peak_mb"), harness.lifetime_peak_rss_mb()) if v is not None]
    memory["lifetime_peak_mb"] = max(lifetime) if lifetime else None
    memory["device_peak_mb"], memory["device_peak_how"] = _device_memory(backend, "peak")
    if memory["peak_mb"] is not None and memory["rss_after_build_mb"] is not None:
        memory["increase_mb"] = memory["peak_mb"] - memory["rss_after_build_mb"]
    result.update(warmup_ms=[round(v * 1e3, 1) for v in warmup_s], wall=_step_stats(wall), cpu=_step_stats(cpu))
    result["memory"] = memory
    _finish_worker(result, logs)


def interleaved_worker(args):
    """Both models in one process, steps alternated (plain, HDML, HDML, plain, ...): time only.

    Removes the drift of background load between the two memory workers (which run minutes
    apart); its memory numbers would mix, so it reports none.
    """
    backend, config = args.worker, args.config
    result = _start_worker(args)
    started = time.perf_counter()
    models = {kind: _build_model(kind, config, args) for kind in MODELS}
    total_steps = args.warmup + args.steps
    batches = make_batches(config, min(total_steps, MAX_DISTINCT_BATCHES), args.num_classes, args.seed + 1)
    result["build_s"] = time.perf_counter() - started
    logs = {}
    for kind, model in models.items():
        for step in range(args.warmup):
            elapsed, _, logs = _train_step(backend, model, batches[step % len(batches)])
            _progress(backend, config, f"interleaved {kind}", f"warm-up step {step + 1}: {elapsed * 1e3:.0f} ms")
    wall = {kind: [] for kind in MODELS}
    cpu = {kind: [] for kind in MODELS}
    for step in range(args.steps):
        order = MODELS if step % 2 == 0 else MODELS[::-1]
        for kind in order:
            elapsed, cpu_elapsed, logs = _train_step(backend, models[kind], batches[step % len(batches)])
            wall[kind].append(elapsed)
            cpu[kind].append(cpu_elapsed)
            _progress(backend, config, f"interleaved {kind}", f"step {step + 1}/{args.steps}: {elapsed * 1e3:.0f} ms")
    result["wall"] = {kind: _step_stats(wall[kind]) for kind in MODELS}
    result["cpu"] = {kind: _step_stats(cpu[kind]) for kind in MODELS}
    _finish_worker(result, logs)


# ---------------------------------------------------------------- parent ---


def run_worker(backend, config, kind, args):
    """One subprocess for one (backend, config, model); returns its JSON or an error dict."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        backend,
        "--config",
        config,
        "--model",
        kind,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--num-classes",
        str(args.num_classes),
        "--generator-units",
        str(args.generator_units),
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
    ]
    result = harness.run_worker(command, harness.worker_env(backend), timeout=args.timeout)
    return {"backend": backend, "config": config, "model": kind, **result} if "error" in result else result


def _median_of(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def merge_repeats(runs):
    """One result from the ``--repeats`` runs of a worker: pooled step times, median memory.

    The first failed run, if any, stands for all. Times of every run are pooled (median, min,
    max over all timed steps); each memory figure is the median over the runs, and
    ``memory["increases_mb"]`` / ``memory["peaks_mb"]`` list the runs' own values.
    """
    failed = [run for run in runs if "error" in run]
    if failed or len(runs) == 1:
        return failed[0] if failed else runs[0]
    merged = dict(runs[0])
    merged["repeats"] = len(runs)
    merged["runs"] = runs
    merged["wall_s"] = sum(run["wall_s"] for run in runs)
    merged["facts"] = {**runs[0]["facts"], "loadavg_end": runs[-1]["facts"].get("loadavg_end")}
    merged["finite"] = all(run.get("finite", True) for run in runs)
    timing = runs[0]["wall"].keys() if runs[0].get("model") == INTERLEAVED else [None]
    for key in ("wall", "cpu"):
        if None in timing:
            merged[key] = harness.stats_ms([t for run in runs for t in run[key]["times_ms"]])
        else:
            merged[key] = {k: harness.stats_ms([t for run in runs for t in run[key][k]["times_ms"]]) for k in timing}
    if "memory" in runs[0]:
        memory = {}
        for name, value in runs[0]["memory"].items():
            if isinstance(value, (int, float)) or value is None:
                memory[name] = _median_of(run["memory"].get(name) for run in runs)
            else:
                memory[name] = value
        memory["peaks_mb"] = [run["memory"]["peak_mb"] for run in runs]
        memory["increases_mb"] = [run["memory"].get("increase_mb") for run in runs]
        merged["memory"] = memory
    return merged


def build_rows(results, args):
    """One row per (backend, config): both models' numbers and the HDML / plain ratios."""
    rows = []
    for backend in args.backends:
        for config in args.configs:
            pair = {kind: results.get((backend, config, kind)) for kind in MODELS}
            row = {"backend": backend, "config": config, **pair}
            ok = {k: r for k, r in pair.items() if r is not None and "error" not in r}
            if len(ok) == 2:
                plain, hdml = ok["plain"], ok["hdml"]
                row["time_ratio"] = ratio(hdml["wall"]["median_ms"], plain["wall"]["median_ms"])
                row["time_ratio_min"] = ratio(hdml["wall"]["min_ms"], plain["wall"]["min_ms"])
                row["cpu_ratio"] = ratio(hdml["cpu"]["median_ms"], plain["cpu"]["median_ms"])
                row["memory_ratio"] = ratio(hdml["memory"].get("increase_mb"), plain["memory"].get("increase_mb"))
                row["memory_ratio_abs"] = ratio(hdml["memory"]["peak_mb"], plain["memory"]["peak_mb"])
                row["device_ratio"] = ratio(hdml["memory"]["device_peak_mb"], plain["memory"]["device_peak_mb"])
            interleaved = results.get((backend, config, INTERLEAVED))
            row[INTERLEAVED] = interleaved
            if interleaved is not None and "error" not in interleaved:
                wall, cpu = interleaved["wall"], interleaved["cpu"]
                row["interleaved_ratio"] = ratio(wall["hdml"]["median_ms"], wall["plain"]["median_ms"])
                row["interleaved_cpu_ratio"] = ratio(cpu["hdml"]["median_ms"], cpu["plain"]["median_ms"])
            rows.append(row)
    return rows


def _time_cell(result):
    if result is None:
        return "-"
    if "error" in result:
        return "[red]error[/red]"
    stats = result["wall"]
    return f"{stats['median_ms']:.0f} ({stats['min_ms']:.0f}-{stats['max_ms']:.0f})"


def _memory_cell(result):
    if result is None:
        return "-"
    if "error" in result:
        return "[red]error[/red]"
    memory = result["memory"]
    if memory["peak_mb"] is None:
        return "n/a"
    increase = memory.get("increase_mb")
    cell = f"{memory['peak_mb']:.0f}"
    if increase is not None:
        spread = [v for v in memory.get("increases_mb", []) if v is not None]
        spread = f", {min(spread):.0f}-{max(spread):.0f}" if len(spread) > 1 else ""
        cell += f" (+{increase:.0f}{spread})"
    return cell


def _device_cell(result):
    if result is None or "error" in result:
        return "-"
    value = result["memory"]["device_peak_mb"]
    return "n/a" if value is None else f"{value:.0f}"


def _coloured(value, target, config, digits=2):
    if value is None:
        return "n/a"
    if config not in TARGET_CONFIGS:
        return f"[yellow]{value:.{digits}f}[/yellow]"
    colour = "green" if value <= target else "red"
    return f"[{colour}]{value:.{digits}f}[/{colour}]"


def _machine_lines(machine, results):
    lines = harness.machine_lines(machine)
    for (backend, config, kind), result in results.items():
        if "error" in result:
            continue
        facts = result["facts"]
        detail = ", ".join(f"{k}={v}" for k, v in facts.items() if v is not None and not k.startswith("loadavg"))
        load = harness.load_change(facts)
        if kind == INTERLEAVED:
            lines.append(
                f"{BACKEND_SHORT[backend]} {config} {kind}: worker {result['wall_s']:.0f} s "
                f"(build {result['build_s']:.0f} s){load}"
            )
            continue
        warmup = "/".join(f"{v:.0f}" for v in result["warmup_ms"])
        lines.append(
            f"{BACKEND_SHORT[backend]} {config} {kind}: worker {result['wall_s']:.0f} s "
            f"(build {result['build_s']:.0f} s, warm-up steps {warmup} ms), "
            f"jit_compile={result['jit_compile']}, {result['parameters']:,} weights; {detail}{load}"
        )
    return lines


def report(machine, results, args):
    rows = build_rows(results, args)
    measured = [r for r in results.values() if "error" not in r and "memory" in r]
    device = any(r["memory"]["device_peak_mb"] is not None for r in measured)
    title = (
        f"HDML vs plain N-pair model, train_on_batch, embedding {EMBEDDING_DIM}, C={args.num_classes}, "
        f"generator_units={args.generator_units}; {args.warmup} warm-up + {args.steps} timed steps"
        + (f" x {args.repeats} processes each; " if args.repeats > 1 else "; ")
        + "ms/step: median (min-max); peak MB (+increase over the RSS after build"
        + (", median of the processes, their range)" if args.repeats > 1 else ")")
    )
    escape = harness.escape
    console = harness.console(220)
    harness.print_lines(console, ["[bold]Machine[/bold]"], indent="")
    harness.print_lines(console, [escape(line) for line in _machine_lines(machine, results)])
    columns = [
        ("backend", "left"),
        ("config", "left"),
        ("plain ms/step", "right"),
        ("HDML ms/step", "right"),
        ("ratio (min/min)", "right"),
        ("plain peak MB", "right"),
        ("HDML peak MB", "right"),
        ("ratio: incr. \\[abs]", "right"),
    ]
    if device:
        columns += [("plain dev MB", "right"), ("HDML dev MB", "right")]
    if args.interleave:
        columns.append(("interleaved ratio (cpu)", "right"))
    table, sections = [], []
    for index, row in enumerate(rows):
        if index and rows[index - 1]["backend"] != row["backend"]:
            sections.append(index)
        time_ratio = memory_ratio = "-"
        if "time_ratio" in row:
            time_ratio = _coloured(row["time_ratio"], TIME_TARGET, row["config"])
            if row["time_ratio_min"] is not None:
                time_ratio += f" ({row['time_ratio_min']:.2f})"
            memory_ratio = _coloured(row["memory_ratio"], MEMORY_TARGET, row["config"])
            if row["memory_ratio_abs"] is not None:
                memory_ratio += f" [{row['memory_ratio_abs']:.2f}]"
        cells = [
            BACKEND_SHORT[row["backend"]],
            CONFIGS[row["config"]]["label"],
            _time_cell(row["plain"]),
            _time_cell(row["hdml"]),
            time_ratio,
            _memory_cell(row["plain"]),
            _memory_cell(row["hdml"]),
            memory_ratio,
        ]
        if device:
            cells += [_device_cell(row["plain"]), _device_cell(row["hdml"])]
        if args.interleave:
            if row.get("interleaved_ratio") is None:
                cells.append("[red]error[/red]" if row[INTERLEAVED] else "-")
            else:
                cells.append(
                    _coloured(row["interleaved_ratio"], TIME_TARGET, row["config"])
                    + f" ({row['interleaved_cpu_ratio']:.2f})"
                )
        table.append(cells)
    harness.print_table(console, title, columns, table, sections)
    notes = [
        f"Targets (GoogLeNet): HDML/plain <= {TIME_TARGET} in time, <= {MEMORY_TARGET} in peak memory (increase "
        "over the post-build RSS); small_cnn ratios are information only (yellow).",
        "Time ratio = median/median, (min/min) in brackets. Memory ratio = ratio of the peak increases over "
        "the RSS after build, \\[ratio of absolute peaks] in brackets.",
    ]
    hows = sorted({r["memory"]["peak_how"] for r in measured})
    if hows:
        notes.append("Host peak measured as: " + "; ".join(hows) + ".")
    device_hows = sorted({r["memory"]["device_peak_how"] for r in measured} - {None})
    if device_hows:
        notes.append("Device peak measured as: " + "; ".join(device_hows) + ".")
    cpu = [
        f"{BACKEND_SHORT[row['backend']]} {row['config']} {row['cpu_ratio']:.2f}"
        for row in rows
        if row.get("cpu_ratio") is not None
    ]
    if cpu:
        notes.append("HDML/plain ratio of the median process CPU time per step (all threads): " + ", ".join(cpu) + ".")
    if args.interleave:
        notes.append(
            "Interleaved ratio: both models in one extra process, steps alternated (plain, HDML, HDML, plain...), "
            "HDML/plain median wall time (median process CPU time in brackets); no memory numbers."
        )
    for result in results.values():
        if "error" in result:
            notes.append(
                f"[red]{result['backend']} {result['config']} {result['model']} failed: {escape(result['error'])}"
                f"[/red]\n{escape(result.get('stderr_tail', ''))}"
            )
        elif not result.get("finite", True):
            notes.append(f"[red]{result['backend']} {result['config']} {result['model']}: non-finite logs[/red]")
    harness.print_lines(console, notes)
    return rows


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", type=harness.csv_list(), default=list(BACKENDS), help="comma list of backends")
    parser.add_argument(
        "--configs", type=harness.csv_list(), default=list(CONFIGS), help=f"comma list of {','.join(CONFIGS)}"
    )
    parser.add_argument("--models", type=harness.csv_list(), default=list(MODELS), help="comma list of plain,hdml")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per model (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (compilation; default 2)")
    parser.add_argument("--num-classes", type=int, default=100, help="training classes C (default 100)")
    parser.add_argument("--generator-units", type=int, default=512, help="HDML generator width (default 512)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="run every worker process this many times, alternating plain and HDML; times are pooled, "
        "memory figures are medians over the processes (default 1)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write all results (raw times included) to this file")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="cap CPU threads of every backend (torch.set_num_threads, TF intra/inter-op, OMP_NUM_THREADS; "
        "for jax --xla_cpu_multi_thread_eigen=false when 1) and pin each worker to that many CPUs where the OS "
        "allows (Linux). Default 0: library defaults",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per worker subprocess")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--config", choices=list(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="also time both models in ONE extra process per (backend, config), steps alternated: a time ratio "
        "free of the load drift between the separate memory processes (costs one more build + compilation)",
    )
    parser.add_argument("--model", choices=[*MODELS, INTERLEAVED], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = (
        [b for b in args.backends if b not in BACKENDS]
        + [c for c in args.configs if c not in CONFIGS]
        + [m for m in args.models if m not in MODELS]
    )
    if unknown:
        parser.error(f"unknown value(s) {unknown}; backends: {BACKENDS}; configs: {list(CONFIGS)}; models: {MODELS}")
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1:
        parser.error("--steps and --repeats must be >= 1, --warmup >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        (interleaved_worker if args.model == INTERLEAVED else worker)(args)
        return 0
    machine = harness.machine_facts(("keras", "tensorflow", "torch", "jax", "jaxlib", "numpy", "rich", "psutil"))
    load = machine["loadavg"][0] if machine["loadavg"] else float("nan")
    print(
        f"kerasml HDML overhead benchmark: backends={','.join(args.backends)} configs={','.join(args.configs)} "
        f"models={','.join(args.models)} warm-up={args.warmup} steps={args.steps} threads={args.threads or 'default'}; "
        f"{machine['cpu_count']} CPUs, load {load:.2f}",
        flush=True,
    )
    started = time.perf_counter()
    results = {}
    for backend in args.backends:
        for config in args.configs:
            kinds = [*args.models, INTERLEAVED] if args.interleave else list(args.models)
            runs = {kind: [] for kind in kinds}
            for _ in range(args.repeats):  # plain, hdml, plain, hdml...: load drift hits both alike
                for kind in kinds:
                    runs[kind].append(run_worker(backend, config, kind, args))
            for kind in kinds:
                results[(backend, config, kind)] = merge_repeats(runs[kind])
    machine["total_wall_s"] = time.perf_counter() - started
    print(f"total {machine['total_wall_s']:.0f} s", file=sys.stderr)
    rows = report(machine, results, args)
    if args.json:
        payload = {
            "args": {k: v for k, v in vars(args).items() if k not in ("worker", "config", "model")},
            "machine": machine,
            "results": list(results.values()),
            "table": [
                {k: v for k, v in row.items() if k not in (*MODELS, INTERLEAVED)}
                | {f"{kind}_{key}": (row[kind] or {}).get(key) for kind in MODELS for key in ("wall", "memory")}
                for row in rows
            ],
        }
        Path(args.json).write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
