"""Data-parallel scaling: steps/s of a small-CNN N-pair HDML model on 1 and 2 devices, per backend.

What is measured
----------------
For each backend and device count ``R`` (``--devices``, default ``1,2``), one worker subprocess
builds ``kerasml.models.backbones.get("small_cnn", input_shape=(S, S, 3))`` (``--image-size``,
default 32) and an ``HDMLModel(backbone, embedding_dim=128, loss="npair", num_classes=C)``
(``--models hdml``; ``plain`` is the same `MetricModel` without HDML), compiled with the default
Adam per parameter group, and trains it on N-pair global batches of ``--batch`` rows (default
64 = 32 pairs, random images) with each backend's own engine:

- tensorflow: ``R`` logical CPU devices (or the GPUs) under ``tf.distribute.MirroredStrategy``,
  ``train_on_batch`` on the global batch;
- jax: ``R`` forced host devices (``--xla_force_host_platform_device_count``) or the GPUs under
  ``keras.distribution.DataParallel``, ``train_on_batch`` on the global batch;
- torch: ``R`` ``gloo`` processes on 127.0.0.1 (``nccl`` on GPUs), each ``train_on_batch`` on its
  shard (`kerasml.distribution.shard`); steps/s from process 0.

``R = 1`` is the plain one-device run (no strategy, no distribution, no process group). The
first ``--warmup`` steps (tracing, compilation) are not timed; the median of ``--steps`` timed
steps gives steps/s. Efficiency is ``steps/s(R) / steps/s(1)`` (the global batch is the same,
so perfect scaling would be ``R``; on a CPU the "devices" share the same cores, so numbers
below 1 only say what the replication and communication cost there: the GPU table is the
one that measures scaling).

Communication per step (``comm ms``):

- torch: measured inside the step: the time spent in ``torch.distributed`` collectives (the
  loss's all-gathers, the projector's batch-norm all-reduces, the gradient averaging), waiting
  for the other process included;
- tensorflow: the step's collectives replayed alone under the same strategy with the step's
  shapes (all-gathers of labels, features and embeddings of a replica's shard, the two
  batch-norm all-reduces, one batched all-reduce of every gradient);
- jax: XLA inserts the collectives of the SPMD program itself; replayed alone: the all-reduce of
  the gradients (a sharded ``[R, P]`` array summed over devices) and an all-gather of the
  embeddings and features.

On this 2-core machine keep it small (``nice`` it; the defaults are 2 warm-up + 3 timed steps).
Usage::

    python benchmarks/scaling.py [--backends tensorflow,torch,jax] [--devices 1,2] [--models hdml]
        [--batch 64] [--image-size 32] [--steps 3] [--warmup 2] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _harness as harness
from _harness import BACKEND_SHORT, BACKENDS

MODELS = ("plain", "hdml")
EMBEDDING_DIM = 128
FEATURE_DIM = 128


# ------------------------------------------------------------------------------------ worker ---


def _build(args, kerasml):
    backbone = kerasml.models.backbones.get(
        "small_cnn", input_shape=(args.image_size, args.image_size, 3), feature_dim=FEATURE_DIM
    )
    if args.model == "hdml":
        model = kerasml.hdml.HDMLModel(
            backbone, embedding_dim=EMBEDDING_DIM, loss="npair", num_classes=args.num_classes
        )
    else:
        model = kerasml.models.MetricModel(backbone, embedding_dim=EMBEDDING_DIM, loss="npair")
    model.compile()
    return model


def _batches(args, np):
    rng = np.random.default_rng(args.seed)
    pairs = args.batch // 2
    x = rng.normal(size=(2, args.batch, args.image_size, args.image_size, 3)).astype("float32")
    y = []
    for _ in range(2):
        half = rng.choice(args.num_classes, size=pairs, replace=False)
        y.append(np.concatenate([half, half]).astype("int32"))
    return x, np.stack(y)


def _time_steps(model, x, y, args, progress_tag, comm=None):
    times, comm_ms = [], []
    for step in range(args.warmup + args.steps):
        if comm is not None:
            comm["s"] = 0.0
        start = time.perf_counter()
        model.train_on_batch(x[step % 2], y[step % 2])
        elapsed = time.perf_counter() - start
        if step >= args.warmup:
            times.append(elapsed * 1e3)
            if comm is not None:
                comm_ms.append(comm["s"] * 1e3)
        harness.progress(progress_tag, f"step {step + 1}: {elapsed * 1e3:.0f} ms")
    return times, comm_ms


def _parameter_count(model):
    import math

    return sum(math.prod(v.shape) for v in model.trainable_variables)


def _tensorflow_comm_ms(strategy, model, args):
    """The step's collectives alone, under the same strategy and shapes (see the module docstring)."""
    import tensorflow as tf

    rows = args.batch // args.devices
    shapes = [tuple(v.shape) for v in model.trainable_variables]

    def collectives():
        context = tf.distribute.get_replica_context()
        gathered = [
            context.all_gather(tf.zeros([rows], tf.int32), axis=0),
            context.all_gather(tf.zeros([rows, FEATURE_DIM]), axis=0),
            context.all_gather(tf.zeros([rows, EMBEDDING_DIM]), axis=0),
            context.all_reduce("sum", tf.zeros([FEATURE_DIM + 1])),
            context.all_reduce("sum", tf.zeros([FEATURE_DIM])),
        ]
        grads = context.all_reduce("sum", [tf.zeros(shape) for shape in shapes])
        return [tf.reduce_sum(tf.cast(g, tf.float32)) for g in gathered] + [tf.add_n([tf.reduce_sum(g) for g in grads])]

    step = tf.function(lambda: strategy.run(collectives))
    step()
    times = []
    for _ in range(max(args.steps, 5)):
        start = time.perf_counter()
        [t.numpy() for value in step() for t in strategy.experimental_local_results(value)]
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _jax_comm_ms(model, args):
    """Gradient all-reduce and an all-gather of features and embeddings, replayed under the same mesh."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    devices = jax.devices()[: args.devices]
    mesh = jax.sharding.Mesh(devices, ("batch",))
    sharded = NamedSharding(mesh, PartitionSpec("batch"))
    replicated = NamedSharding(mesh, PartitionSpec())
    grads = jax.device_put(jnp.zeros((args.devices, _parameter_count(model))), sharded)
    rows = jax.device_put(jnp.zeros((args.batch, FEATURE_DIM + EMBEDDING_DIM)), sharded)
    step = jax.jit(lambda g, r: (g.sum(axis=0), r), out_shardings=(replicated, replicated))
    jax.block_until_ready(step(grads, rows))
    times = []
    for _ in range(max(args.steps, 5)):
        start = time.perf_counter()
        jax.block_until_ready(step(grads, rows))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _torch_rank(rank, port, args, out):
    from datetime import timedelta

    import numpy as np
    import torch
    import torch.distributed as dist

    keras = harness.start_worker("torch", threads=args.threads)
    import kerasml

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=args.devices, timeout=timedelta(seconds=300))
    comm = {"s": 0.0}

    def timed(function):
        def wrapper(*a, **k):
            start = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                comm["s"] += time.perf_counter() - start

        return wrapper

    for name in ("all_reduce", "all_gather", "broadcast"):
        setattr(dist, name, timed(getattr(dist, name)))
    try:
        keras.utils.set_random_seed(args.seed)
        model = _build(args, kerasml)
        x, y = _batches(args, np)
        shard = kerasml.distribution.shard_bounds(args.batch, args.devices, rank)
        model(x[0][shard[0] : shard[1]])
        kerasml.distribution.synchronize(model)
        times, comm_ms = _time_steps(
            model,
            x[:, shard[0] : shard[1]],
            y[:, shard[0] : shard[1]],
            args,
            f"torch R={args.devices} rank {rank}",
            comm,
        )
        if rank == 0:
            Path(out).write_text(json.dumps({"times_ms": times, "comm_ms": comm_ms}))
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(args):
    backend, devices = args.worker, args.devices
    if backend == "jax" and devices > 1:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    if backend == "tensorflow" and devices > 1:
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
    result = {"backend": backend, "devices": devices, "model": args.model, "loadavg_start": harness.loadavg()}
    if backend == "torch" and devices > 1:
        import torch.multiprocessing as mp

        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "rank0.json"
            mp.spawn(_torch_rank, args=(_free_port(), args, str(out)), nprocs=devices, join=True)
            measured = json.loads(out.read_text())
        result.update(times_ms=measured["times_ms"], comm_ms=statistics.median(measured["comm_ms"]))
        result["comm_how"] = "measured in the step"
    else:
        import numpy as np

        keras = harness.start_worker(backend, threads=args.threads)
        import kerasml

        x, y = _batches(args, np)
        tag = f"{BACKEND_SHORT[backend]} R={devices}"
        if devices == 1:
            keras.utils.set_random_seed(args.seed)
            model = _build(args, kerasml)
            result["times_ms"], _ = _time_steps(model, x, y, args, tag)
            result["comm_ms"] = 0.0
        elif backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_logical_devices("GPU")
            names = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))][:devices]
            strategy = tf.distribute.MirroredStrategy(names)
            with strategy.scope():
                keras.utils.set_random_seed(args.seed)
                model = _build(args, kerasml)
            result["times_ms"], _ = _time_steps(model, x, y, args, tag)
            result["comm_ms"] = _tensorflow_comm_ms(strategy, model, args)
            result["comm_how"] = "collectives replayed alone"
        else:
            import jax

            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()[:devices]))
            keras.utils.set_random_seed(args.seed)
            model = _build(args, kerasml)
            result["times_ms"], _ = _time_steps(model, x, y, args, tag)
            result["comm_ms"] = _jax_comm_ms(model, args)
            result["comm_how"] = "collectives replayed alone"
        result["parameters"] = _parameter_count(model)
    result["loadavg_end"] = harness.loadavg()
    harness.emit(result)


# ------------------------------------------------------------------------------------ parent ---


def _row(result, base):
    if "error" in result:
        return [BACKEND_SHORT[result["backend"]], str(result["devices"]), result["model"], "error", "", "", ""]
    median = statistics.median(result["times_ms"])
    rate = 1e3 / median
    efficiency = harness.ratio(rate, base) if result["devices"] > 1 else None
    return [
        BACKEND_SHORT[result["backend"]],
        str(result["devices"]),
        result["model"],
        f"{median:.0f} ({min(result['times_ms']):.0f}-{max(result['times_ms']):.0f})",
        f"{rate:.2f}",
        f"{result['comm_ms']:.1f}" if result["devices"] > 1 else "-",
        f"{efficiency:.2f}" if efficiency is not None else "-",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", type=harness.csv_list(), default=list(BACKENDS), help="comma list of backends")
    parser.add_argument("--devices", type=harness.csv_list(int), default=[1, 2], help="device counts (default 1,2)")
    parser.add_argument("--models", type=harness.csv_list(), default=["hdml"], help="comma list of plain,hdml")
    parser.add_argument("--batch", type=int, default=64, help="global batch (default 64 = 32 N-pairs)")
    parser.add_argument("--image-size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--num-classes", type=int, default=100, help="training classes C (default 100)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (default 2)")
    parser.add_argument("--threads", type=int, default=0, help="cap CPU threads per process (0: defaults)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per worker")
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.devices = args.devices[0]
        return worker(args)
    if args.batch % 2 or any(args.batch % d for d in args.devices):
        parser.error(f"--batch {args.batch} must be even and divisible by every device count {args.devices}")

    machine = harness.machine_facts()
    results = []
    for backend in args.backends:
        for model in args.models:
            for devices in args.devices:
                command = [sys.executable, __file__, "--worker", backend, "--model", model, "--devices", str(devices)]
                for flag in ("batch", "image_size", "num_classes", "steps", "warmup", "threads", "seed"):
                    command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
                result = harness.run_worker(command, harness.worker_env(backend), timeout=args.timeout)
                result.update(backend=backend, devices=devices, model=model)
                results.append(result)
    rows, base = [], {}
    for result in results:
        if result["devices"] == 1 and "error" not in result:
            base[(result["backend"], result["model"])] = 1e3 / statistics.median(result["times_ms"])
    for result in results:
        rows.append(_row(result, base.get((result["backend"], result["model"]))))
    out = harness.console(120)
    harness.print_table(
        out,
        f"Data-parallel scaling: small CNN {args.image_size}px, N-pair, global batch {args.batch}",
        [
            ("backend", "left"),
            ("devices", "right"),
            ("model", "left"),
            ("step ms median (min-max)", "right"),
            ("steps/s", "right"),
            ("comm ms/step", "right"),
            ("vs 1 device", "right"),
        ],
        rows,
    )
    notes = harness.machine_lines(machine)
    notes += [f"{r['backend']} R={r['devices']}: comm {r['comm_how']}" for r in results if r.get("comm_how")]
    notes += [
        f"{r['backend']} R={r['devices']} {r['model']}: {r['error']}\n{r['stderr_tail']}"
        for r in results
        if "error" in r
    ]
    harness.print_lines(out, notes)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
