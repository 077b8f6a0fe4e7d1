"""Training and evaluation throughput of kerasml on each backend next to native PyTorch eager.

What is measured
----------------
Per configuration (``--configs``):

- ``small_cnn``: ``backbones.get("small_cnn", input_shape=(64, 64, 3))`` (F = 128), batch 64 = 32 N-pairs;
- ``googlenet``: ``backbones.get("googlenet", input_shape=(224, 224, 3))`` (``variant="bn"``, F = 1024),
  batch 32 = 16 N-pairs;

each implementation (``--impls``) runs in its OWN long-lived worker process (one thread, pinned to one
CPU, ``nice``-d), all alive at once:

- ``tensorflow``, ``torch``, ``jax``: kerasml on that Keras backend (``torch-plain``, ``jax-plain``: with
  kerasml's fast paths turned off, ``KERASML_FAST_PATHS=0``, i.e. Keras' own layer kernels;
  ``tensorflow-xla``, ``jax-off``, ``torch-compile``: ``train.compile = "xla"``, ``"off"``,
  ``"torch.compile"``, the others ``"auto"``):
  ``MetricModel(backbone, 128, NPairLoss())`` and ``HDMLModel(backbone, 128, NPairLoss(),
  num_classes=C)`` with ``compile()`` (the default Adam per parameter group), one
  ``train_on_batch(images, labels)`` per step (Keras' own step, as ``fit`` runs it; ``jit_compile="auto"``);
- ``native``: the same architecture written in PyTorch eager (``torch.nn`` modules: conv without
  bias, ``BatchNorm2d(eps=1e-3, momentum=0.01)``, ReLU, max-pooling with Caffe's ceil rounding,
  global average pooling; projector ``BatchNorm1d`` + ``Linear``; the N-pair loss with its
  ``l2_reg``; Adam(7e-5, eps=1e-8)), the input an NHWC array seen as NCHW through ``permute`` (a
  channels-last view, no copy), as a PyTorch user would feed NHWC images. Its parameter count is
  printed next to kerasml's: they must be equal. Native has no HDML.

The parent process drives the workers in **interleaved rounds**: after the warm-up (untimed steps:
tracing, XLA compilation, optimizer slots), every round asks each worker in turn (the order rotates)
for ``--steps`` timed steps of each of its models, so the background load of a shared machine hits
every implementation alike. Cells are the median ms/step over the rounds, in round brackets the
ratio to native (the issue's targets: torch <= 1.10, the fastest backend <= 1.0, JAX <= 1.3) and in
square brackets the ratio of the median process CPU times (steadier than wall time when other work
shares the cores: a worker waiting for a core does not accumulate CPU time).

Evaluation: images/s embedding ``--eval-images`` random images in chunks of the batch size, modes
(``--eval-modes``; a mode a kerasml version does not have is shown as ``n/a``):

- ``eager``: ``model(x, training=False)`` per chunk then NumPy (what ``kerasml.experiment.embed``
  did before issue 13);
- ``predict``: ``model.predict(x, batch_size=B)``;
- ``embed``: ``model.embed(x, batch_size=B)`` (kerasml's own inference path);
- ``native``: ``torch.no_grad()`` + ``model.eval()`` per chunk (the native worker only).

Allocator: by default every worker runs with glibc's ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` at 4 GiB (``--malloc no-mmap``): otherwise glibc maps big activations
with fresh pages at every step, and the page faults cost a native PyTorch small-CNN step ~40 % in
one process and kerasml's much less in another (their allocation histories differ), which is not
what the comparison is about. ``--malloc default`` measures the allocator as it comes.

Times are wall-clock (``time.perf_counter``); each reply also carries the process CPU time. The
load averages at start and end are printed: on a shared machine compare ratios within one run,
never absolute numbers across runs.

Usage::

    python benchmarks/throughput.py --quick                       # short run, both configs
    python benchmarks/throughput.py --configs small_cnn --rounds 5 --steps 2 --json out.json
    python benchmarks/throughput.py --impls torch,native --configs googlenet --quick

``--threads 0`` keeps the libraries' default thread counts (and does not pin): use it on a GPU
machine, where Keras and the native model put everything on the GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import _harness as harness
from _harness import BACKEND_SHORT

IMPLS = (
    "tensorflow",
    "torch",
    "torch-plain",
    "jax",
    "jax-plain",
    "native",
    "tensorflow-xla",
    "jax-off",
    "torch-compile",
)
MODELS = ("metric", "hdml")
EVAL_MODES = ("eager", "predict", "embed")
EMBEDDING_DIM = 128
NUM_CLASSES = 100
CONFIGS = {
    "small_cnn": {"backbone": "small_cnn", "input_shape": (64, 64, 3), "batch": 64, "label": "small CNN 64px B=64"},
    "googlenet": {"backbone": "googlenet", "input_shape": (224, 224, 3), "batch": 32, "label": "GoogLeNet 224px B=32"},
}
# (warm-up steps, rounds, steps per round, evaluation images, evaluation rounds) for --quick.
QUICK = {"small_cnn": (2, 3, 1, 256, 2), "googlenet": (1, 2, 1, 64, 1)}
TARGETS = {"torch": 1.10, "jax": 1.30}
# GoogLeNet's inception modules (Szegedy et al. 2015, table 1), as kerasml's googlenet builds them:
# name: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj); a 3x3/2 max-pool follows 3b and 4e.
INCEPTION_MODULES = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
SHORT = {
    **BACKEND_SHORT,
    "native": "native",
    "torch-plain": "torch plain",
    "jax-plain": "jax plain",
    "tensorflow-xla": "tf xla",
    "jax-off": "jax off",
    "torch-compile": "torch compile",
}
# The Keras backend of each implementation, and extra environment variables of its worker.
BACKEND_OF = {
    "tensorflow": "tensorflow",
    "torch": "torch",
    "torch-plain": "torch",
    "jax-plain": "jax",
    "jax": "jax",
    "native": "torch",
    "tensorflow-xla": "tensorflow",
    "jax-off": "jax",
    "torch-compile": "torch",
}
# train.compile of the "-xla", "-off", "-compile" variants (the others: "auto").
WORKER_ENV = {
    "torch-plain": {"KERASML_FAST_PATHS": "0"},
    "jax-plain": {"KERASML_FAST_PATHS": "0"},
    "tensorflow-xla": {"KERASML_BENCH_COMPILE": "xla"},
    "jax-off": {"KERASML_BENCH_COMPILE": "off"},
    "torch-compile": {"KERASML_BENCH_COMPILE": "torch.compile"},
}
# glibc malloc serves blocks over its (adaptive, at most 32 MB) mmap threshold with fresh pages, so a
# process that frees and reallocates big activations page-faults on every step: ~40 % of a native small
# CNN step on the 2-core test machine, less or more in another process depending on its allocation
# history. "no-mmap" gives every worker the same heap behaviour (other allocators ignore the variables).
MALLOC = {
    "no-mmap": {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"},
    "default": {},
}


# ------------------------------------------------------------------------------------------ data ---


def make_batches(config, count, seed):
    """``count`` N-pair batches ``(images float32 [B, H, W, 3], labels int32 [B])`` (labels ``[c; c]``)."""
    import numpy as np

    spec = CONFIGS[config]
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        classes = rng.permutation(NUM_CLASSES)[: spec["batch"] // 2]
        labels = np.concatenate([classes, classes]).astype("int32")
        images = rng.standard_normal((spec["batch"], *spec["input_shape"]), dtype=np.float32)
        batches.append((images, labels))
    return batches


# -------------------------------------------------------------------------------- native PyTorch ---


def native_model(config):
    """The native PyTorch eager model of ``config`` (backbone + projector), channels-last weights."""
    import torch
    from torch import nn

    def conv_bn(cin, cout, k, stride=1):
        return [
            nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
            nn.ReLU(inplace=False),
        ]

    class Inception(nn.Module):
        def __init__(self, cin, n1, n3r, n3, n5r, n5, pp):
            super().__init__()
            self.b1 = nn.Sequential(*conv_bn(cin, n1, 1))
            self.b3 = nn.Sequential(*conv_bn(cin, n3r, 1), *conv_bn(n3r, n3, 3))
            self.b5 = nn.Sequential(*conv_bn(cin, n5r, 1), *conv_bn(n5r, n5, 5))
            self.bp = nn.Sequential(nn.MaxPool2d(3, 1, 1), *conv_bn(cin, pp, 1))

        def forward(self, x):
            return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)

    if config == "small_cnn":
        layers = [*conv_bn(3, 32, 3), nn.MaxPool2d(2, ceil_mode=True)]
        layers += [*conv_bn(32, 64, 3), nn.MaxPool2d(2, ceil_mode=True), *conv_bn(64, 128, 3)]
        features = 128
    else:
        layers = [*conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, ceil_mode=True)]
        layers += [*conv_bn(64, 64, 1), *conv_bn(64, 192, 3), nn.MaxPool2d(3, 2, ceil_mode=True)]
        cin = 192
        for name, widths in INCEPTION_MODULES.items():
            layers.append(Inception(cin, *widths))
            cin = widths[0] + widths[2] + widths[4] + widths[5]
            if name in ("3b", "4e"):
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
        features = cin
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    model = nn.Sequential(
        *layers, nn.BatchNorm1d(features, eps=1e-3, momentum=0.01), nn.Linear(features, EMBEDDING_DIM)
    )
    return model.to(memory_format=torch.channels_last)


def native_npair_loss(z, labels, l2_reg=0.002):
    """kerasml's N-pair loss written in PyTorch: CE over ``a·pᵀ`` with same-class targets, plus ``l2_reg``."""
    import torch

    n = z.shape[0] // 2
    anchors, positives = z[:n], z[n:]
    logits = anchors @ positives.T
    same = (labels[:n, None] == labels[None, n:]).float()
    targets = same / same.sum(1, keepdim=True)
    loss = torch.mean(torch.logsumexp(logits, 1) - (targets * logits).sum(1))
    return loss + l2_reg * torch.mean(torch.sum(z * z, 1))


class NativeRunner:
    """Native PyTorch eager training step and ``no_grad`` inference."""

    def __init__(self, config, seed):
        import torch

        torch.manual_seed(seed)
        self.torch = torch
        self.model = native_model(config)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=7e-5, eps=1e-8)

    def parameters(self):
        trainable = sum(p.numel() for p in self.model.parameters())
        buffers = sum(b.numel() for name, b in self.model.named_buffers() if not name.endswith("num_batches_tracked"))
        return {"trainable": trainable, "total": trainable + buffers}

    def _images(self, images):
        return self.torch.from_numpy(images).permute(0, 3, 1, 2)  # NHWC array seen as NCHW (channels-last)

    def train_step(self, images, labels):
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss = native_npair_loss(self.model(self._images(images)), self.torch.from_numpy(labels).long())
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def embed(self, images, batch):
        self.model.eval()
        with self.torch.no_grad():
            return [self.model(self._images(images[i : i + batch])).numpy() for i in range(0, len(images), batch)]


# ------------------------------------------------------------------------------------------ kerasml ---


class KerasmlRunner:
    """kerasml's MetricModel / HDMLModel on the worker's Keras backend."""

    def __init__(self, config, models, seed):
        import keras

        import kerasml
        from kerasml.hdml import HDMLModel
        from kerasml.models import MetricModel, backbones

        self.keras = keras
        spec = CONFIGS[config]
        self.models = {}
        for kind in models:
            keras.utils.set_random_seed(seed)
            backbone = backbones.get(spec["backbone"], input_shape=spec["input_shape"])
            loss = kerasml.losses.NPairLoss()
            if kind == "hdml":
                model = HDMLModel(backbone, embedding_dim=EMBEDDING_DIM, loss=loss, num_classes=NUM_CLASSES)
            else:
                model = MetricModel(backbone, embedding_dim=EMBEDDING_DIM, loss=loss)
            mode = os.environ.get("KERASML_BENCH_COMPILE", "auto")
            if mode == "auto":
                model.compile()
            else:
                from kerasml import _backend

                model.compile(jit_compile=_backend.jit_compile(mode))
            self.models[kind] = model

    def parameters(self):
        model = self.models.get("metric") or next(iter(self.models.values()))
        total = int(sum(math.prod(v.shape) for v in model.weights))
        trainable = int(sum(math.prod(v.shape) for v in model.trainable_weights))
        facts = {"trainable": trainable, "total": total, "jit_compile": str(model.jit_compile)}
        try:
            from kerasml import _backend

            facts["fast_paths"] = _backend.fast_paths_enabled()
        except (ImportError, AttributeError):  # a kerasml from before issue 13
            facts["fast_paths"] = None
        return facts

    def train_step(self, kind, images, labels):
        logs = self.models[kind].train_on_batch(images, labels, return_dict=True)
        return float(logs["loss"])

    def embed(self, mode, images, batch):
        import numpy as np

        model = self.models.get("metric") or next(iter(self.models.values()))
        if mode == "eager":
            return [
                np.asarray(self.keras.ops.convert_to_numpy(model(images[i : i + batch], training=False)))
                for i in range(0, len(images), batch)
            ]
        if mode == "predict":
            return model.predict(images, batch_size=batch, verbose=0)
        if mode == "embed":
            return model.embed(images, batch_size=batch)
        raise KeyError(mode)


def _sync(impl):
    if BACKEND_OF[impl] == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()


def worker(args):
    """A long-lived worker: builds its models, answers JSON commands on stdin with JSON on stdout."""
    impl = args.worker
    if args.nice and hasattr(os, "nice"):
        os.nice(args.nice)
    harness.start_worker(BACKEND_OF[impl], args.threads, pin=args.threads > 0)
    facts = harness.backend_facts(BACKEND_OF[impl])
    started = time.perf_counter()
    if impl == "native":
        runner = NativeRunner(args.config, args.seed)
    else:
        runner = KerasmlRunner(args.config, args.models, args.seed)
    batches = make_batches(args.config, 2, args.seed + 1)
    eval_images = make_batches(args.config, 1, args.seed + 2)[0][0]
    eval_images = eval_images[: min(len(eval_images), args.eval_images)]
    if len(eval_images) < args.eval_images:
        import numpy as np

        eval_images = np.resize(eval_images, (args.eval_images, *eval_images.shape[1:]))
    batch = CONFIGS[args.config]["batch"]
    harness.emit({"ready": True, "build_s": time.perf_counter() - started, "parameters": runner.parameters(), **facts})
    step = 0
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "quit":
            break
        wall, cpu, values = [], [], []
        error = None
        for _ in range(command.get("count", 1)):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                if op == "train":
                    images, labels = batches[step % len(batches)]
                    step += 1
                    if impl == "native":
                        values.append(runner.train_step(images, labels))
                    else:
                        values.append(runner.train_step(command["model"], images, labels))
                else:
                    if impl == "native":
                        runner.embed(eval_images, batch)
                    else:
                        runner.embed(command["mode"], eval_images, batch)
            except (KeyError, AttributeError, NotImplementedError) as failure:
                error = f"{type(failure).__name__}: {failure}"
                break
            _sync(impl)
            wall.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
        harness.emit({"wall_ms": wall, "cpu_ms": cpu, "values": values, "error": error, "load": harness.loadavg()})


# ------------------------------------------------------------------------------------------ parent ---


class Worker:
    """The parent's handle on one long-lived worker process."""

    def __init__(self, impl, config, args):
        self.impl = impl
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            impl,
            "--config",
            config,
            "--models",
            ",".join(args.models),
            "--threads",
            str(args.threads),
            "--nice",
            str(args.nice),
            "--seed",
            str(args.seed),
            "--eval-images",
            str(args.eval_images),
        ]
        env = harness.worker_env(BACKEND_OF[impl], **WORKER_ENV.get(impl, {}), **MALLOC[args.malloc])
        self.stderr_tail = []
        self.proc = subprocess.Popen(
            command,
            cwd=harness.REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._pump_stderr, daemon=True).start()
        self.info = self._reply()

    def _pump_stderr(self):
        for line in self.proc.stderr:
            if line.startswith(harness.PROGRESS):
                print(line, end="", file=sys.stderr, flush=True)
            else:
                self.stderr_tail.append(line)
                del self.stderr_tail[:-30]

    def _reply(self):
        for line in self.proc.stdout:
            if line.startswith(harness.MARKER):
                return json.loads(line[len(harness.MARKER) :])
        tail = "".join(self.stderr_tail[-12:])
        return {"error": f"{self.impl} worker exited with {self.proc.poll()}", "stderr_tail": tail}

    def ask(self, **command):
        if self.proc.poll() is not None:
            return {"error": f"{self.impl} worker is not running", "wall_ms": []}
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _tasks(worker, args):
    """``[(label, command)]`` a worker runs each round: its training models, then its evaluation modes."""
    if worker.impl == "native":
        return [("metric", {"op": "train"})], [("native", {"op": "eval"})]
    train = [(kind, {"op": "train", "model": kind}) for kind in args.models]
    evals = [(mode, {"op": "eval", "mode": mode}) for mode in args.eval_modes]
    return train, evals


def run_config(config, args):
    """Start the workers of ``config``, warm up, run the interleaved rounds; returns the raw results."""
    warmup, rounds, steps, eval_images, eval_rounds = (
        QUICK[config]
        if args.quick
        else (
            args.warmup,
            args.rounds,
            args.steps,
            args.eval_images,
            args.eval_rounds,
        )
    )
    args.eval_images = eval_images
    workers, result = [], {"config": config, "impls": {}, "load_start": harness.loadavg()}
    try:
        for impl in args.impls:  # built one after the other: builds do not compete
            harness.progress(config, f"starting {impl}")
            worker = Worker(impl, config, args)
            if "error" in worker.info:
                result["impls"][impl] = {"error": worker.info["error"], "stderr_tail": worker.info["stderr_tail"]}
                worker.close()
                continue
            workers.append(worker)
            result["impls"][impl] = {"info": worker.info, "train": {}, "eval": {}}
            harness.progress(config, f"{impl} built in {worker.info['build_s']:.0f} s")
        for worker in workers:
            train, evals = _tasks(worker, args)
            for label, command in train:
                reply = worker.ask(count=warmup, **command)
                if "wall_ms" not in reply:  # the worker failed (e.g. torch.compile without a C++ compiler)
                    failure = str(reply.get("error") or reply)[-500:]
                    harness.progress(config, f"{worker.impl} {label} failed: {failure}")
                    result["impls"][worker.impl]["train"][label] = {"error": failure, "wall": [], "cpu": []}
                    continue
                harness.progress(config, f"{worker.impl} {label} warm-up: {_fmt(reply['wall_ms'])} ms")
                result["impls"][worker.impl]["train"][label] = {"warmup_ms": reply["wall_ms"], "wall": [], "cpu": []}
            for label, command in evals:
                reply = worker.ask(count=1, **command)
                result["impls"][worker.impl]["eval"][label] = {"error": reply["error"], "wall": [], "cpu": []}
        for index in range(max(rounds, eval_rounds)):
            order = workers[index % len(workers) :] + workers[: index % len(workers)] if workers else []
            for worker in order:
                train, evals = _tasks(worker, args)
                jobs = [("train", label, command, steps) for label, command in train] if index < rounds else []
                jobs += [("eval", label, command, 1) for label, command in evals] if index < eval_rounds else []
                for section, label, command, count in jobs:
                    cell = result["impls"][worker.impl][section][label]
                    if cell.get("error"):
                        continue
                    reply = worker.ask(count=count, **command)
                    if reply.get("error"):
                        cell["error"] = reply["error"]
                        continue
                    cell["wall"] += reply["wall_ms"]
                    cell["cpu"] += reply["cpu_ms"]
                    harness.progress(config, f"round {index + 1} {worker.impl} {label}: {_fmt(reply['wall_ms'])} ms")
    finally:
        for worker in workers:
            worker.close()
    result["load_end"] = harness.loadavg()
    return result


def _fmt(values):
    return "/".join(f"{v:.0f}" for v in values)


def _median(values):
    return statistics.median(values) if values else None


def report(machine, results, args):
    """Print the tables: ms/step (ratio to native) and evaluation images/s (ratio to native)."""
    console = harness.console(200)
    harness.print_lines(console, ["[bold]Machine[/bold]"], indent="")
    harness.print_lines(console, [harness.escape(line) for line in harness.machine_lines(machine)])
    impls = list(args.impls)
    for result in results:
        config = result["config"]
        spec = CONFIGS[config]
        cells = result["impls"]
        native = (cells.get("native") or {}).get("train", {}).get("metric", {})
        native_ms, native_cpu = _median(native.get("wall", [])), _median(native.get("cpu", []))
        rows = []
        for kind, label in (("metric", "N-pair ms/step"), ("hdml", "HDML ms/step")):
            if kind not in args.models:
                continue
            row = [label]
            for impl in impls:
                cell = (cells.get(impl) or {}).get("train", {}).get("metric" if impl == "native" else kind)
                if impl == "native" and kind != "metric":
                    row.append("—")
                elif not cell or cell.get("error") or not cell.get("wall"):
                    row.append("[red]error[/red]" if impl in cells else "-")
                else:
                    ms = _median(cell["wall"])
                    ratio_text = f" ({ms / native_ms:.2f})" if native_ms else ""
                    if native_cpu and impl != "native":
                        ratio_text += f" [{_median(cell['cpu']) / native_cpu:.2f}]"
                    colour = _colour(impl, ms / native_ms if native_ms else None)
                    row.append(f"{colour[0]}{ms:.0f}{ratio_text}{colour[1]}")
            rows.append(row)
        native_eval = (cells.get("native") or {}).get("eval", {}).get("native", {})
        native_ips = _images_per_s(native_eval, args)
        for mode in args.eval_modes:
            row = [f"eval {mode} images/s"]
            for impl in impls:
                if impl == "native":
                    row.append(f"{native_ips:.0f}" if native_ips and mode == args.eval_modes[0] else "")
                    continue
                cell = (cells.get(impl) or {}).get("eval", {}).get(mode)
                ips = _images_per_s(cell, args)
                if ips is None:
                    row.append("n/a" if cell and cell.get("error") else "-")
                else:
                    row.append(f"{ips:.0f}" + (f" ({ips / native_ips:.2f})" if native_ips else ""))
            rows.append(row)
        columns = [("", "left")] + [(SHORT[impl], "right") for impl in impls]
        load = f"load {result['load_start'][0]:.1f} -> {result['load_end'][0]:.1f}" if result["load_start"] else ""
        title = (
            f"{spec['label']}: median ms over rounds (wall ratio to native) [CPU-time ratio]; "
            f"malloc={args.malloc}; {load}"
        )
        harness.print_table(console, title, columns, rows)
        notes = []
        for impl in impls:
            cell = cells.get(impl) or {}
            if "error" in cell:
                notes.append(
                    f"[red]{impl}: {harness.escape(cell['error'])}[/red]\n{harness.escape(cell['stderr_tail'])}"
                )
                continue
            info = cell["info"]
            params = info["parameters"]
            steps = {k: len(v["wall"]) for k, v in cell["train"].items()}
            notes.append(
                f"{SHORT[impl]}: {params['trainable']:,} trainable / {params['total']:,} weights (metric model)"
                + (f", jit_compile={params['jit_compile']}" if "jit_compile" in params else "")
                + f"; built in {info['build_s']:.0f} s; timed steps {steps}; "
                + "warm-up ms "
                + ", ".join(f"{k} {_fmt(v['warmup_ms'])}" for k, v in cell["train"].items())
            )
        counts = {(cells.get(i) or {}).get("info", {}).get("parameters", {}).get("total") for i in impls} - {None}
        notes.append(
            "parameter counts "
            + ("[green]equal[/green]" if len(counts) == 1 else f"[red]differ: {sorted(counts)}[/red]")
        )
        harness.print_lines(console, notes)


def _images_per_s(cell, args):
    if not cell or cell.get("error") or not cell.get("wall"):
        return None
    return args.eval_images / (_median(cell["wall"]) / 1e3)


def _colour(impl, value):
    target = TARGETS.get(impl, 1.0)
    if value is None or impl == "native":
        return "", ""
    return ("[green]", "[/green]") if value <= target else ("[red]", "[/red]")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--impls", type=harness.csv_list(), default=list(IMPLS), help="comma list of " + ",".join(IMPLS)
    )
    parser.add_argument("--configs", type=harness.csv_list(), default=list(CONFIGS), help="comma list of configs")
    parser.add_argument("--models", type=harness.csv_list(), default=list(MODELS), help="comma list of metric,hdml")
    parser.add_argument("--eval-modes", type=harness.csv_list(), default=list(EVAL_MODES), help="evaluation modes")
    parser.add_argument("--quick", action="store_true", help="short run: few rounds and steps (see QUICK)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per model (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per model per round (default 2)")
    parser.add_argument("--eval-images", type=int, default=512, help="images per evaluation (default 512)")
    parser.add_argument("--eval-rounds", type=int, default=3, help="evaluation rounds (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker, pinned; 0: library defaults")
    parser.add_argument("--nice", type=int, default=10, help="niceness added to every worker (default 10)")
    parser.add_argument(
        "--malloc",
        choices=list(MALLOC),
        default="no-mmap",
        help="glibc malloc settings of every worker: no-mmap (default: MALLOC_MMAP_THRESHOLD_ and "
        "MALLOC_TRIM_THRESHOLD_ 4 GiB, the same heap behaviour for every process) or default",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the raw results to this file")
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    parser.add_argument("--config", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [i for i in args.impls if i not in IMPLS] + [c for c in args.configs if c not in CONFIGS]
    unknown += [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown value(s) {unknown}; impls: {IMPLS}; configs: {list(CONFIGS)}; models: {MODELS}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    machine = harness.machine_facts()
    print(
        f"kerasml throughput: impls={','.join(args.impls)} configs={','.join(args.configs)} "
        f"threads={args.threads} nice={args.nice} malloc={args.malloc}{' quick' if args.quick else ''}; "
        f"load {machine['loadavg']}",
        flush=True,
    )
    started = time.perf_counter()
    results = [run_config(config, args) for config in args.configs]
    machine["total_wall_s"] = time.perf_counter() - started
    report(machine, results, args)
    print(f"total {machine['total_wall_s']:.0f} s; load at end {harness.loadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "results": results}, indent=1))
        print(f"wrote {args.json}")
    failed = any("error" in cell for result in results for cell in result["impls"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
