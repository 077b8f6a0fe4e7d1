"""Subprocess for tests/test_distribution.py: training steps on 1 device and on 2 replicas, same global batch.

Usage: ``python tests/distribution_worker.py BACKEND OUT_DIR CASE[,CASE...]``.

For each case it builds the model once from a seed, keeps its initial weights, and trains two global
batches (one epoch of ``fit``, ``shuffle=False``) from those weights twice: on one device with the
global batch, and on two replicas with half a batch each, through the backend's own engine:

- tensorflow: ``tf.distribute.MirroredStrategy`` over two logical CPU devices (``strategy.scope()``,
  ``compile``, ``fit``);
- jax: ``keras.distribution.DataParallel`` over two forced host devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=2``, set here before JAX is imported);
- torch: two ``gloo`` processes on 127.0.0.1 (``torch.multiprocessing.spawn``), each fitting its shard
  of every global batch.

Writes ``OUT_DIR/results.npz`` with ``{case}/{mode}/w{i}`` (weights after training, initial weights as
``{case}/initial/w{i}``) and ``OUT_DIR/logs.json`` (``{case: {mode: fit's logs}}``).
"""

import json
import os
import socket
import sys
import time
from pathlib import Path

BACKEND, OUT = sys.argv[1], Path(sys.argv[2])
CASES = sys.argv[3].split(",")
REPLICAS = 2
os.environ["KERAS_BACKEND"] = BACKEND
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if BACKEND == "jax":
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={REPLICAS}"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

GLOBAL_BATCH = 12
STEPS = 2
CLASSES = 8
LEARNING_RATE = 0.05
STRATEGY = None


def _configure_tensorflow():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * REPLICAS)


if BACKEND == "tensorflow":
    _configure_tensorflow()

import keras  # noqa: E402
from helpers import tiny_backbone  # noqa: E402

import kerasml  # noqa: E402


def batches(case):
    """``(x, labels)`` of ``STEPS`` global batches in the case's layout, deterministic."""
    rng = np.random.default_rng(7)
    labels = []
    for _ in range(STEPS):
        if case.endswith("npair"):
            half = rng.choice(CLASSES, size=GLOBAL_BATCH // 2, replace=False)
            labels.append(np.concatenate([half, half]))
        elif case.endswith("structured"):
            n = GLOBAL_BATCH // 3
            anchors = rng.integers(0, CLASSES, size=n)
            labels.append(np.concatenate([anchors, anchors, (anchors + rng.integers(1, CLASSES, size=n)) % CLASSES]))
        else:
            labels.append(rng.permutation(np.arange(GLOBAL_BATCH) % 4))
    x = rng.normal(size=(STEPS * GLOBAL_BATCH, 8, 8, 1)).astype("float32")
    return x, np.concatenate(labels).astype("int32")


def loss_of(case):
    kind = case.split("_", 1)[1]
    losses = kerasml.losses
    return {
        "npair": lambda: losses.NPairLoss(),
        "structured": lambda: losses.TripletLoss(margin=0.5, mining="structured"),
        "all": lambda: losses.TripletLoss(margin=0.5, mining="all"),
        "contrastive": lambda: losses.ContrastiveLoss(margin=1.0),
    }[kind]()


def build(case):
    """A compiled model of ``case`` (``keras_*``: a plain Keras model with a kerasml loss)."""
    sgd = keras.optimizers.SGD
    if case.startswith("keras_"):
        model = keras.Sequential([tiny_backbone(), keras.layers.Dense(8)])
        model.compile(optimizer=sgd(LEARNING_RATE), loss=loss_of(case))
        return model
    if case.startswith("metric_"):
        model = kerasml.MetricModel(tiny_backbone(), embedding_dim=8, loss=loss_of(case), weight_decay=1e-3)
        model.compile(optimizer=sgd(LEARNING_RATE))
        return model
    model = kerasml.HDMLModel(
        tiny_backbone(),
        embedding_dim=8,
        loss=loss_of(case),
        num_classes=CLASSES,
        weight_decay=1e-3,
        block_size=1,
        generator_units=16,
        softmax_factor=1.0,
        beta=2.0,
        alpha=1.0,
    )
    model.compile(optimizer={group: sgd(LEARNING_RATE) for group in model.parameter_groups})
    return model


def fit(model, x, y, batch_size):
    history = model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return {name: float(values[-1]) for name, values in history.history.items()}


def initial_weights(case):
    keras.utils.set_random_seed(1234)
    model = build(case)
    model(np.zeros((GLOBAL_BATCH, 8, 8, 1), "float32"))
    return [np.array(w) for w in model.get_weights()]


def single(case, weights):
    """Train on one device with the global batch."""
    model = build(case)
    model.set_weights(weights)
    x, y = batches(case)
    logs = fit(model, x, y, GLOBAL_BATCH)
    return [np.array(w) for w in model.get_weights()], logs


def replicated(case, weights):
    """Train on ``REPLICAS`` replicas (tensorflow, jax) with the backend's engine."""
    x, y = batches(case)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        global STRATEGY
        # One strategy per process: a second one would reuse the first one's collective keys.
        STRATEGY = STRATEGY or tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(REPLICAS)])
        with STRATEGY.scope():
            model = build(case)
            model.set_weights(weights)
        logs = fit(model, x, y, GLOBAL_BATCH)
        # Every replica's copy of every variable (J_avg, J̄_gen, batch-norm statistics included) is the same.
        spread = [
            float(np.abs(np.asarray(part) - np.asarray(v.value.values[0])).max())
            for v in model.variables
            for part in getattr(v.value, "values", ())
        ]
        logs["replica_spread"] = max(spread, default=-1.0)
    else:
        import jax

        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
        try:
            model = build(case)
            model.set_weights(weights)
            logs = fit(model, x, y, GLOBAL_BATCH)
        finally:
            keras.distribution.set_distribution(None)
    return [np.array(w) for w in model.get_weights()], logs


def torch_rank(rank, port, cases, out):
    """One ``gloo`` process: fits its shard of every case's global batches from the shared initial weights."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=REPLICAS, timeout=timedelta(seconds=120))
    try:
        initial = np.load(out / "results.npz")
        results, logs = {}, {}
        for case in cases:
            weights = [initial[f"{case}/initial/w{i}"] for i in range(int(initial[f"{case}/count"]))]
            model = build(case)
            model(np.zeros((GLOBAL_BATCH // REPLICAS, 8, 8, 1), "float32"))
            model.set_weights(weights)
            kerasml.distribution.synchronize(model)  # a plain Keras model needs it; MetricModel does it itself
            x, y = batches(case)
            shard = kerasml.distribution.shard
            logs[case] = fit(
                model,
                shard(x, GLOBAL_BATCH, REPLICAS, rank),
                shard(y, GLOBAL_BATCH, REPLICAS, rank),
                GLOBAL_BATCH // REPLICAS,
            )
            results.update({f"{case}/w{i}": np.array(w) for i, w in enumerate(model.get_weights())})
        np.savez(out / f"rank{rank}.npz", **results)
        (out / f"rank{rank}.json").write_text(json.dumps(logs))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    arrays, logs, seconds = {}, {}, {}
    for case in CASES:
        start = time.perf_counter()
        weights = initial_weights(case)
        arrays[f"{case}/count"] = np.array(len(weights))
        arrays.update({f"{case}/initial/w{i}": w for i, w in enumerate(weights)})
        trained, case_logs = single(case, weights)
        arrays.update({f"{case}/single/w{i}": w for i, w in enumerate(trained)})
        logs[case] = {"single": case_logs}
        if BACKEND != "torch":
            trained, case_logs = replicated(case, weights)
            arrays.update({f"{case}/replicated/w{i}": w for i, w in enumerate(trained)})
            logs[case]["replicated"] = case_logs
        seconds[case] = time.perf_counter() - start
    np.savez(OUT / "results.npz", **arrays)
    if BACKEND == "torch":
        import torch.multiprocessing as mp

        mp.spawn(torch_rank, args=(free_port(), CASES, OUT), nprocs=REPLICAS, join=True)
        ranks = [np.load(OUT / f"rank{r}.npz") for r in range(REPLICAS)]
        rank_logs = [json.loads((OUT / f"rank{r}.json").read_text()) for r in range(REPLICAS)]
        for case in CASES:
            for i in range(int(arrays[f"{case}/count"])):
                arrays[f"{case}/replicated/w{i}"] = ranks[0][f"{case}/w{i}"]
                arrays[f"{case}/rank1/w{i}"] = ranks[1][f"{case}/w{i}"]
            logs[case]["replicated"] = rank_logs[0][case]
            logs[case]["rank1"] = rank_logs[1][case]
        np.savez(OUT / "results.npz", **arrays)
    (OUT / "logs.json").write_text(json.dumps({"logs": logs, "seconds": seconds, "replicas": replica_devices()}))


def replica_devices():
    """How many devices or processes the replicated runs used."""
    if BACKEND == "tensorflow":
        return STRATEGY.num_replicas_in_sync if STRATEGY is not None else 0
    if BACKEND == "jax":
        import jax

        return len(jax.devices())
    return REPLICAS if all((OUT / f"rank{r}.npz").exists() for r in range(REPLICAS)) else 0


if __name__ == "__main__":
    main()
