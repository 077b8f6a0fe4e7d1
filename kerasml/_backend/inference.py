"""Compiled inference per backend: ``model(x, training=False)`` over an array, chunk by chunk.

The function each backend runs (built once per model, then cached):

- TensorFlow: ``tf.function(model(x, training=False), reduce_retracing=True)`` (a graph, no eager
  op dispatch);
- JAX: ``jax.jit`` of ``model.stateless_call(trainable, non_trainable, x, training=False)``, the
  variables' current values passed on every call (so training between calls is seen); the last,
  shorter chunk is padded to the chunk size (rows are independent in inference mode) so that one
  compilation serves every chunk;
- PyTorch: the model's call under ``torch.no_grad()`` (no autograd graph; the backbone takes
  kerasml's fast path, `kerasml._backend.torch_layers`).

Across replicas (`replica_outputs`): where a distribution of several replicas is active, each chunk
is split along its rows over them, consecutive slices in replica order (the rows padded to a
multiple of the replicas, the padding's outputs dropped), and the outputs come back in the
original order:

- JAX, under a ``keras.distribution.DataParallel`` of several devices (as `kerasml run` trains in):
  the chunk is placed with the distribution's data layout (rows sharded over the mesh's batch
  axis; ``jax.make_array_from_callback``, so several processes each holding the whole chunk build
  one global array), the weights replicated, and the jitted forward runs on every device; the
  output stays sharded by rows and is gathered (across processes with
  ``jax.experimental.multihost_utils.process_allgather``);
- TensorFlow, under a ``tf.distribute`` strategy of several replicas in sync (the model's
  ``distribute_strategy``, else the current one): each replica's slice is placed on its device
  (``experimental_distribute_values_from_function``) and ``strategy.run`` of the forward runs in a
  ``tf.function``;
- PyTorch: one process per replica, so nothing here; `kerasml.experiment.embed` gives each process
  of the group its share of the batches.

Chunks are NumPy slices converted on the way in (`keras.ops.convert_to_tensor`, which places them
on the backend's default device) and converted back to NumPy on the way out, so that device
memory holds one chunk at a time. Outputs are float32 whatever the model's dtype policy (a
``mixed_bfloat16`` model's embeddings are cast inside the compiled function).
"""

import weakref

import keras
import numpy as np

_FUNCTIONS = weakref.WeakKeyDictionary()


# ------------------------------------------------------------------------------ TensorFlow ---
def _tensorflow(model):
    import tensorflow as tf

    single = tf.function(lambda x: _float32(model(x, training=False)), reduce_retracing=True)
    per_strategy = weakref.WeakKeyDictionary()

    def forward(x):
        return _float32(model(x, training=False))

    def across(strategy):
        def run(inputs):
            return strategy.run(forward, args=(inputs,))

        return tf.function(run, reduce_retracing=True)

    def call(x):
        strategy = _tensorflow_strategy(model) if len(x) else None
        if strategy is None:
            return [("", _numpy(single(keras.ops.convert_to_tensor(x))))]
        if strategy not in per_strategy:
            per_strategy[strategy] = across(strategy)
        devices = strategy.extended.worker_devices
        size = len(x) // len(devices)

        def value(context):
            replica = context.replica_id_in_sync_group
            with tf.device(devices[replica]):
                return tf.convert_to_tensor(x[replica * size : (replica + 1) * size])

        inputs = strategy.experimental_distribute_values_from_function(value)
        outputs = strategy.experimental_local_results(per_strategy[strategy](inputs))
        return [(device, _numpy(output)) for device, output in zip(devices, outputs)]

    return call


def _tensorflow_strategy(model):
    """The ``tf.distribute`` strategy of several replicas to run ``model`` under, or ``None``."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        return None  # inside one replica's step: its own rows only
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    return strategy if strategy.num_replicas_in_sync > 1 else None


# ------------------------------------------------------------------------------------- JAX ---
def _jax(model):
    import jax

    def forward(trainable, non_trainable, x):
        outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return _float32(outputs)

    single = jax.jit(forward)
    per_mesh = {}

    def call(x):
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        distribution = _jax_distribution() if len(x) else None
        if distribution is None:
            return [("", _numpy(single(trainable, non_trainable, keras.ops.convert_to_tensor(x))))]
        from jax.experimental import multihost_utils
        from jax.sharding import NamedSharding, PartitionSpec

        data = distribution.get_data_layout(x.shape).backend_layout
        rows = NamedSharding(data.mesh, PartitionSpec(distribution.batch_dim_name))
        if data.mesh not in per_mesh:
            per_mesh[data.mesh] = jax.jit(forward, out_shardings=rows)
        replicated = NamedSharding(data.mesh, PartitionSpec())
        trainable, non_trainable = jax.device_put((trainable, non_trainable), replicated)
        inputs = jax.make_array_from_callback(x.shape, data, lambda index: x[index])
        outputs = per_mesh[data.mesh](trainable, non_trainable, inputs)
        if not outputs.is_fully_addressable:  # several processes: every one gets every row
            gathered = np.asarray(multihost_utils.process_allgather(outputs, tiled=True))
            devices = list(data.mesh.devices.flat)
            return [(str(d), part) for d, part in zip(devices, np.split(gathered, len(devices)))]
        shards = sorted(outputs.addressable_shards, key=lambda shard: shard.index[0].start or 0)
        return [(str(shard.device), np.asarray(shard.data)) for shard in shards]

    return call


def _jax_distribution():
    """The active ``keras.distribution.DataParallel`` of several devices, or ``None``."""
    distribution = keras.distribution.distribution()
    if not isinstance(distribution, keras.distribution.DataParallel):
        return None
    return distribution if distribution.device_mesh.devices.size > 1 else None


# --------------------------------------------------------------------------------- PyTorch ---
def _torch(model):
    import torch

    def call(x):
        with torch.no_grad():
            return [("", _numpy(_float32(model(keras.ops.convert_to_tensor(x), training=False))))]

    return call


def _plain(model):
    return lambda x: [("", _numpy(_float32(model(keras.ops.convert_to_tensor(x), training=False))))]


def _float32(outputs):
    return keras.tree.map_structure(lambda t: keras.ops.cast(t, "float32"), outputs)


def _numpy(tensor):
    return np.asarray(keras.ops.convert_to_numpy(tensor))


_BUILDERS = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}


def replica_count(model):
    """How many replicas `replica_outputs` splits ``model``'s rows over now (1 without a distribution)."""
    backend = keras.backend.backend()
    if backend == "jax":
        distribution = _jax_distribution()
        return 1 if distribution is None else int(distribution.device_mesh.devices.size)
    if backend == "tensorflow":
        strategy = _tensorflow_strategy(model)
        return 1 if strategy is None else int(strategy.num_replicas_in_sync)
    return 1


def _inference_function(model):
    backend = keras.backend.backend()
    cached = _FUNCTIONS.get(model)
    if cached is None or cached[0] != backend:
        cached = (backend, _BUILDERS.get(backend, _plain)(model))
        _FUNCTIONS[model] = cached
    return cached[1]


def replica_outputs(model, x):
    """``model(x, training=False)`` of the rows of ``x``, computed across the active distribution's replicas.

    The rows are split into consecutive slices in replica order (see the module docstring), padded
    to a multiple of the replicas with zeros whose outputs are dropped. One replica (no distribution)
    computes them all.

    Args:
        model: a Keras model (or layer) with one array output.
        x: an array of inputs (NumPy, or anything ``numpy.asarray`` takes), rows first.

    Returns:
        A list of ``(device, outputs)``, one per replica in replica order: the device that ran the
        replica (``""`` for the default device) and the float32 NumPy outputs of its rows
        (padding dropped, so the last replicas may have fewer rows, or none). Their concatenation
        is the output of ``x``.
    """
    x = np.asarray(x)
    rows = len(x)
    replicas = replica_count(model)
    if replicas > 1 and rows % replicas:
        x = _pad(x, -(-rows // replicas) * replicas)
    parts, start = [], 0
    for device, output in _inference_function(model)(x):
        parts.append((device, output[: max(0, rows - start)]))
        start += len(output)
    return parts


def _pad(x, rows):
    return np.concatenate([x, np.zeros((rows - len(x), *x.shape[1:]), x.dtype)])


def predict_batches(model, batches):
    """``model(x, training=False)`` of each input array of ``batches``, as float32 NumPy, one at a time.

    On JAX a batch with fewer rows than the first is padded to the first one's size (and the
    padding's outputs dropped), so that one compilation serves every batch. Under a distribution
    of several replicas each batch is split across them (`replica_outputs`).

    Args:
        model: a Keras model (or layer) with one array output.
        batches: an iterable of input arrays (NumPy, or anything ``numpy.asarray`` takes).

    Yields:
        The outputs of each batch (NumPy, float32).
    """
    pad_to = None
    for x in batches:
        x = np.asarray(x)
        rows = len(x)
        if keras.backend.backend() == "jax":
            pad_to = rows if pad_to is None else pad_to
            if 0 < rows < pad_to:
                x = _pad(x, pad_to)
        parts = [output for _, output in replica_outputs(model, x)]
        yield (parts[0] if len(parts) == 1 else np.concatenate(parts))[:rows]


def predict(model, x, batch_size=32):
    """``model(x, training=False)`` for the rows of ``x``, ``batch_size`` at a time, as one NumPy array.

    Args:
        model: a Keras model (or layer) with one array output.
        x: an array of inputs (NumPy, or anything ``numpy.asarray`` takes), rows first.
        batch_size: rows per chunk. Defaults to ``32``.

    Returns:
        The outputs of every row, concatenated (NumPy, float32).
    """
    x = np.asarray(x)
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"Invalid value for argument `batch_size`. Expected an integer >= 1. Received: {batch_size}")
    chunks = [x[start : start + batch_size] for start in range(0, len(x), batch_size)] or [x]
    return np.concatenate(list(predict_batches(model, chunks)))
