"""Data-parallel training with global-batch semantics, on each backend's own engine.

A metric loss compares the samples of a batch with each other, so on ``R``
replicas it must see the *global* batch, not each replica's shard. kerasml
keeps this promise: a step on ``R`` replicas with per-replica batch ``B/R``
gives the same losses, metrics and parameter updates as one device with
batch ``B`` (up to float32 rounding), for every kerasml loss, `MetricModel`
and `HDMLModel`.

- **JAX** (``keras.distribution.DataParallel``): the jitted step is one SPMD
  program over the global batch; nothing here does anything.
- **TensorFlow** (``tf.distribute.MirroredStrategy``,
  ``MultiWorkerMirroredStrategy``): inside the replica context a kerasml loss
  all-gathers labels and embeddings (`gather_batch`), computes the loss of the
  global batch on every replica and returns its per-replica share (loss / R,
  Keras' convention); batch-norm statistics of kerasml's layers are all-reduced
  (`batch_moments`).
- **PyTorch** (``torch.distributed`` process group, one process per replica):
  the same gathers through ``torch.distributed``; gradients are averaged over
  the processes as ``DistributedDataParallel`` does (`synchronize`, automatic for
  `MetricModel` and `HDMLModel` in ``fit``).

Exact gradients: in the gathered batch only this replica's rows carry a
gradient, scaled by ``R`` (every replica computes the same global loss, so the
gradient of the global loss with respect to these rows is ``R`` times what one
replica's copy gives). Terms that reach parameters directly (weight decay,
HDML's generator and classifier) are computed identically by every replica,
so they too reach the parameters ``R`` times over all replicas. Summed over the
replicas with the loss divided by ``R`` (TensorFlow) or averaged (PyTorch), the
gradients equal the one-device gradient.

Shards: replica ``r`` of ``R`` holds rows ``shard_bounds(B, R, r)`` of each global
batch of ``B`` rows: consecutive slices in replica order, as ``tf.distribute``
and ``keras.distribution`` split a batch. The gather concatenates the shards in
replica order, so the loss sees the global batch in its planned order and
layout (an N-pair batch stays ``[a_1..a_N; p_1..p_N]``, a structured triplet
batch ``[anchors; positives; negatives]``) whatever ``R`` is.

The gathers are collectives: every replica must call the loss together (as
``fit`` and ``evaluate`` do). To compute a loss on one replica's own rows only,
call it inside `global_batch_scope`.

Starting a distribution (devices, processes, launchers' environments) is
`kerasml.distribution.launch`; its names are exported here too.
"""

import contextlib
import threading

import keras
from keras import ops

from kerasml import _backend
from kerasml.distribution.launch import (
    ALL,
    DistributionError,
    ReplicaFailed,
    Session,
    Topology,
    batch_size_problem,
    launcher_environment,
    replicate,
    spawn,
    spawns,
    start,
    topology,
)

__all__ = [
    "ALL",
    "DistributionError",
    "ReplicaFailed",
    "Session",
    "ShardedBatches",
    "Topology",
    "batch_moments",
    "batch_size_problem",
    "gather_arrays",
    "gather_batch",
    "global_batch_scope",
    "launcher_environment",
    "process_shard",
    "replica_count",
    "replicate",
    "scale_loss",
    "shard",
    "shard_bounds",
    "spawn",
    "spawns",
    "start",
    "synchronize",
    "topology",
]

_STATE = threading.local()


def replica_count():
    """How many replicas' shards make up the batch the running step sees (see the module docstring).

    1 on one device, under JAX SPMD, outside a replica context and inside
    `global_batch_scope` (where tensors are already global).
    """
    if getattr(_STATE, "depth", 0):
        return 1
    return _backend.replica_count()


@contextlib.contextmanager
def global_batch_scope():
    """Mark a block whose tensors already hold the global batch: gathers and syncs inside it do nothing."""
    _STATE.depth = getattr(_STATE, "depth", 0) + 1
    try:
        yield
    finally:
        _STATE.depth -= 1


def _is_floating(x):
    return "float" in keras.backend.standardize_dtype(x.dtype)


def gather_batch(*tensors):
    """The global batch of each tensor: every replica's rows, concatenated in replica order.

    Identity (the tensors as a tuple) when `replica_count` is 1. Floating
    tensors keep a gradient on this replica's own rows only, multiplied by the
    number of replicas ``R`` (see the module docstring); the other replicas'
    rows are constants. Integer tensors (labels) carry no gradient.

    Args:
        *tensors: backend tensors with the same rows on axis 0 (their number may differ per replica).

    Returns:
        A tuple of the gathered tensors, in the order given.
    """
    count = replica_count()
    if count == 1:
        return tuple(tensors)
    tensors = [ops.convert_to_tensor(x) for x in tensors]
    everyone, start = _backend.all_gather_rows(tensors)
    gathered = []
    for x, rows in zip(tensors, everyone):
        if not _is_floating(x):
            gathered.append(rows)
            continue
        own = x + (count - 1) * (x - ops.stop_gradient(x))  # the value of x, the gradient times R
        end = start + ops.shape(x)[0]
        gathered.append(ops.concatenate([rows[:start], own, rows[end:]], axis=0))
    return tuple(gathered)


def process_shard():
    """``(processes, this process's index)`` of a PyTorch process group, whose processes each hold a shard.

    ``(1, 0)`` elsewhere: ``tf.distribute`` and ``keras.distribution`` drive every replica from one process.
    """
    return _backend.process_shard()


def gather_arrays(*arrays):
    """Every process's rows of each NumPy array, concatenated in process order (`process_shard`).

    The arrays share their number of rows on each process (it may differ between processes). Every
    process must call it together. On one process the arrays come back as they are.

    Returns:
        A tuple of NumPy arrays.
    """
    if process_shard()[0] == 1:
        return tuple(arrays)
    gathered, _ = _backend.all_gather_rows([ops.convert_to_tensor(array) for array in arrays])
    return tuple(ops.convert_to_numpy(array) for array in gathered)


def scale_loss(loss):
    """This replica's share of a global-batch loss: ``loss / R`` where replicas' gradients are summed.

    ``tf.distribute`` sums the replicas' gradients and Keras divides each
    replica's loss by ``R`` (and multiplies it back for the logs); PyTorch
    averages them, so the loss stays whole. Call it outside `global_batch_scope`.
    """
    count = replica_count()
    if count == 1 or _backend.gradient_reduction() == "mean":
        return loss
    return loss * (1.0 / count)


def batch_moments(x):
    """Mean and variance of ``x [M, F]`` over the rows of the global batch (axis 0).

    On one replica (or in `global_batch_scope`) this is ``keras.ops.moments``;
    across replicas the row sums are all-reduced, mean first, then the squared
    deviations (two passes, as on one device). Differentiable.
    """
    if replica_count() == 1:
        return ops.moments(x, axes=[0])
    rows = ops.reshape(ops.cast(ops.shape(x)[0], x.dtype), (1,))
    sums = _backend.all_reduce_sum(ops.concatenate([ops.sum(x, axis=0), rows], axis=0))
    total = sums[-1]
    mean = sums[:-1] / total
    variance = _backend.all_reduce_sum(ops.sum(ops.square(x - mean), axis=0)) / total
    return mean, variance


def synchronize(model):
    """Make ``model`` train in step with the other replicas.

    Every ``keras.layers.BatchNormalization`` of ``model`` then normalises with the
    statistics of the global batch (`batch_moments`) whenever `replica_count` is
    above 1 (``tf.distribute`` replicas, PyTorch processes; under JAX's SPMD program
    it already sees the global batch). With a ``torch.distributed`` process group
    of more than one process it also copies every variable of ``model`` from
    process 0 and averages the gradients of its trainable variables across
    processes during backpropagation (what ``DistributedDataParallel`` does, with
    the same collectives), so Keras' ``fit`` can train any model. `MetricModel`
    calls it itself when training starts. Idempotent; call it after the model is
    built and before ``fit``.

    Args:
        model: a built `keras.Model`.
    """
    for layer in _sublayers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and not hasattr(layer, "_kerasml_local_moments"):
            # Keras' hook for a batch-norm's statistics (public only as TensorFlow's `synchronized`).
            layer._kerasml_local_moments = layer._moments
            layer._moments = _GlobalMoments(layer)
    _backend.synchronize(model.variables)


def _sublayers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _sublayers(layer)


class _GlobalMoments:
    """A batch-norm layer's statistics over the global batch across replicas (its own ones on one)."""

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, inputs, mask):
        layer = self.layer
        if mask is not None or replica_count() == 1:
            return layer._kerasml_local_moments(inputs, mask)
        axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
        channels = ops.shape(inputs)[axis]
        rows = ops.reshape(ops.moveaxis(inputs, axis, -1), (-1, channels))
        return batch_moments(rows)


def shard_bounds(batch_size, replicas, replica):
    """``(start, stop)``: the rows of a global batch of ``batch_size`` that ``replica`` holds.

    Consecutive slices in replica order, the first ``batch_size % replicas``
    one row longer (``numpy.array_split``'s rule).

    Args:
        batch_size: rows of the global batch.
        replicas: number of replicas ``R``.
        replica: index ``0..R-1``.
    """
    if not 0 <= replica < replicas:
        raise ValueError(
            f"Invalid value for argument `replica`. Expected 0 <= replica < replicas={replicas}. "
            f"Received: replica={replica}"
        )
    base, extra = divmod(int(batch_size), int(replicas))
    start = replica * base + min(replica, extra)
    return start, start + base + (1 if replica < extra else 0)


def shard(array, batch_size, replicas, replica):
    """The rows of ``array`` (global batches of ``batch_size`` rows, one after another) that ``replica`` holds.

    For feeding ``fit`` on each process of a PyTorch process group: process
    ``r`` calls ``fit(shard(x, B, R, r), shard(y, B, R, r), batch_size=...)``
    with its per-replica batch size, ``shuffle=False``.

    Args:
        array: NumPy array whose length is a multiple of ``batch_size``.
        batch_size: rows of each global batch.
        replicas: number of replicas ``R``.
        replica: index ``0..R-1``.
    """
    if len(array) % batch_size:
        raise ValueError(
            f"Invalid value for argument `array`: its {len(array)} rows are not whole global batches of "
            f"{batch_size}. Drop the last partial batch."
        )
    start, stop = shard_bounds(batch_size, replicas, replica)
    batches = array.reshape((len(array) // batch_size, batch_size, *array.shape[1:]))
    return batches[:, start:stop].reshape((-1, *array.shape[1:]))


class ShardedBatches(keras.utils.PyDataset):
    """Replica ``replica``'s rows of every batch of ``dataset`` (global batches): one process's input.

    For a PyTorch process group, where each process feeds ``fit`` its own shard (`shard_bounds`);
    ``tf.distribute`` and ``keras.distribution`` split the global batches themselves. Reading the
    whole batch and keeping the shard keeps every random choice of the batch (augmentation) the
    same as on one device. ``set_epoch`` and ``on_epoch_end`` go to ``dataset``.

    Args:
        dataset: a `keras.utils.PyDataset` whose items are ``(x, y)`` global batches.
        replicas: number of replicas ``R``.
        replica: index ``0..R-1``.
    """

    def __init__(self, dataset, replicas, replica):
        super().__init__()
        shard_bounds(1, replicas, replica)  # checks the index
        self.dataset = dataset
        self.replicas = int(replicas)
        self.replica = int(replica)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        x, y = self.dataset[index]
        start, stop = shard_bounds(len(y), self.replicas, self.replica)
        return x[start:stop], y[start:stop]

    def set_epoch(self, epoch):
        """Forwarded to ``dataset``."""
        self.dataset.set_epoch(epoch)

    def on_epoch_end(self):
        """Forwarded to ``dataset``."""
        self.dataset.on_epoch_end()
