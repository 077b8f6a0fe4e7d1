"""TensorFlow-specific helpers."""

import tensorflow as tf

#: how ``tf.distribute`` combines the replicas' gradients: summed (each replica's loss is its share).
GRADIENT_REDUCTION = "sum"


def is_concrete(x):
    """True when TensorFlow executes eagerly (not inside ``tf.function``)."""
    return tf.executing_eagerly() and hasattr(x, "numpy")


def _replica_context():
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync < 2:
        return None
    return context


def replica_count():
    """Replicas in sync in the current ``tf.distribute`` replica context (1 outside one)."""
    context = _replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def all_gather_rows(tensors):
    """``([every replica's rows of each tensor, in replica order], index of this replica's first row)``.

    The tensors share their number of rows, which may differ between replicas
    (``all_gather`` accepts it). No gradient flows through the result.
    """
    context = _replica_context()
    tensors = [tf.stop_gradient(tf.convert_to_tensor(x)) for x in tensors]
    sizes = context.all_gather(tf.shape(tensors[0])[:1], axis=0)
    start = tf.reduce_sum(sizes[: context.replica_id_in_sync_group])
    return [context.all_gather(x, axis=0) for x in tensors], start


def all_reduce_sum(x):
    """Sum of ``x`` over the replicas; its gradient is the sum of the replicas' gradients."""
    return _replica_context().all_reduce(tf.distribute.ReduceOp.SUM, x)


def accelerator_count():
    """GPUs TensorFlow sees (0 on CPU); does not start TensorFlow's runtime."""
    return len(tf.config.list_physical_devices("GPU"))


_STRATEGY = {}


def start_distribution(topology, timeout_s):
    """``MirroredStrategy`` over ``topology.devices`` GPUs (or logical CPU devices) of this one process.

    Logical CPU devices can be made only before TensorFlow's runtime starts; one strategy is
    kept per process (a second one would reuse the first one's collective keys).
    """
    key = (topology.devices, topology.num_processes)
    if key in _STRATEGY:
        return _STRATEGY[key]
    gpus = tf.config.list_physical_devices("GPU")
    kind = "GPU" if gpus else "CPU"
    if not gpus and topology.devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * topology.devices)
        except RuntimeError:
            pass  # started already: whatever it has is checked below
    local = tf.config.list_logical_devices(kind)
    if len(local) < topology.devices:
        raise ValueError(
            f"distribution.devices = {topology.devices}, but TensorFlow has {len(local)} {kind} device(s) in this "
            "process: its runtime started before the CPU could be split into logical devices. Run in a new process "
            "(`kerasml run` does), or lower distribution.devices."
        )
    _STRATEGY[key] = tf.distribute.MirroredStrategy([device.name for device in local[: topology.devices]])
    return _STRATEGY[key]
