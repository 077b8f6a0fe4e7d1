"""JAX-specific helpers."""

import atexit
import os
import sys

import jax

#: under ``keras.distribution`` (SPMD) one program sees the global batch: there is nothing to combine.
GRADIENT_REDUCTION = "sum"


def is_concrete(x):
    """True unless ``x`` is a tracer (inside ``jax.jit``, ``grad``, ``vmap``...)."""
    return not isinstance(x, jax.core.Tracer)


def replica_count():
    """Always 1: under ``keras.distribution.DataParallel`` the jitted step sees the whole (sharded) batch."""
    return 1


def accelerator_count():
    """GPUs or TPUs JAX sees on this host (0 on CPU). Initialises JAX's backend."""
    return sum(1 for device in jax.local_devices() if device.platform != "cpu")


def start_cluster(timeout_s):
    """``jax.distributed`` from the environment (JAX's cluster detection): ``(processes, this one)``."""
    _initialize(None, None, None, timeout_s)
    return jax.process_count(), jax.process_index()


def is_collective_failure(error):
    """Whether ``error`` is a collective across processes that failed (a dead peer, a heartbeat timeout).

    JAX raises it as a ``JaxRuntimeError``, or a ``ValueError`` when it surfaces while reading a result.
    """
    text = str(error)
    return isinstance(error, (jax.errors.JaxRuntimeError, ValueError)) and any(
        word in text for word in ("Gloo", "gloo", "heartbeat", "coordination", "Connection", "NCCL")
    )


def abandon_cluster(status):
    """After the other processes died: end this one with ``status`` at exit, before JAX's shutdown barrier.

    ``jax.distributed``'s exit handler waits for every process at a barrier and aborts the process
    (SIGABRT, status 134) when one is gone; an exit handler registered later runs first and ends the
    process with ``status`` once Python's own clean-up is done (streams flushed).
    """
    atexit.register(_exit_now, int(status))


def _exit_now(status):
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing more to say
            pass
    os._exit(status)


def _initialize(coordinator, num_processes, process_id, timeout_s):
    # What `keras.distribution.initialize` does, with bounded waits: a process that dies is noticed by the
    # others within `timeout_s` (its heartbeats stop), and a job whose processes do not all come fails. On
    # CPU the processes' collectives go through gloo (JAX has none across CPU processes otherwise).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator,
        num_processes,
        process_id,
        initialization_timeout=int(timeout_s),
        heartbeat_timeout_seconds=max(10, int(timeout_s)),
    )


def start_distribution(topology, timeout_s):
    """``keras.distribution.DataParallel`` over ``topology.devices`` devices of each process.

    With no accelerator, the CPU is split into that many host devices, which JAX allows only
    before its backend starts.
    """
    import keras

    if topology.num_processes > 1 and topology.launcher != "jax":  # "jax": `start_cluster` did it
        _initialize(topology.coordinator, topology.num_processes, topology.process_id, timeout_s)
    try:
        jax.config.update("jax_num_cpu_devices", max(topology.devices, _forced_devices()))
    except RuntimeError:
        pass  # started already: whatever it has is checked below
    local = jax.local_devices()
    if len(local) < topology.devices:
        forced = " (or split the CPU)" if local[0].platform == "cpu" else ""
        raise ValueError(
            f"distribution.devices = {topology.devices}, but JAX has {len(local)} {local[0].platform} device(s) in "
            f"this process: it was started before the CPU could be split. Start a new process{forced} with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={topology.devices} set before JAX is imported "
            "(`kerasml run` does it), or lower distribution.devices."
        )
    devices = [
        device
        for process in range(jax.process_count())
        for device in [d for d in jax.devices() if d.process_index == process][: topology.devices]
    ]
    # Several processes: each feeds its own shard of every global batch (`kerasml.distribution.ShardedBatches`).
    return keras.distribution.DataParallel(devices=devices, auto_shard_dataset=topology.num_processes == 1)


def _forced_devices():
    import os
    import re

    match = re.search(r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))
    return int(match.group(1)) if match else 1
