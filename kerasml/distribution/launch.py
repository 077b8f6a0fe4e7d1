"""Starting data-parallel training: how many replicas, in which processes, on each backend's own engine.

A `Topology` says how a run is spread: ``devices`` per process, ``num_processes``
processes (hosts, or the launcher's ranks), this process's ``process_id`` and the
``coordinator`` address of process 0. `topology` fills what the caller leaves unset
from the launcher's environment (`launcher_environment`): ``torchrun``'s ``RANK`` /
``WORLD_SIZE`` / ``MASTER_ADDR`` / ``MASTER_PORT`` on PyTorch, ``TF_CONFIG`` on
TensorFlow, Keras' ``KERAS_DISTRIBUTION_*`` variables or JAX's cluster detection
(when ``JAX_COORDINATOR_ADDRESS`` is set) on JAX.

`start` turns a topology into the backend's engine and returns a `Session` whose
``scope()`` the model must be built (or loaded) and trained in:

- **JAX**: ``keras.distribution.DataParallel`` over the devices; with no accelerator,
  ``devices = N`` splits the CPU into N host devices (``jax_num_cpu_devices``, which
  must be set before JAX first initialises its backend); several processes through
  ``jax.distributed`` (gloo collectives on CPU), each feeding its shard of every global batch.
- **TensorFlow**: ``tf.distribute.MirroredStrategy`` over the GPUs or, with none, N
  logical CPU devices (set before TensorFlow initialises its runtime), in one
  process (several ``TF_CONFIG`` workers are refused for now).
- **PyTorch**: one ``torch.distributed`` process per device (gloo on CPU, NCCL on GPU).
  Under ``torchrun`` each process is one replica already; otherwise `spawn` starts
  the ``devices`` processes of this host (the ``"spawn"`` start method, also on
  Windows) and each calls the function given with its `Session`.

``train.batch_size`` is the global batch of all ``replicas``; `batch_size_problem` says
when it cannot be split. Only process 0 (``session.is_chief``) should write files or
print. A process that dies ends the job: its peers' collectives fail (at the latest after
`timeout_s` seconds), and `spawn` raises `ReplicaFailed` with the rank that died.
"""

import contextlib
import dataclasses
import json
import os
import socket
import sys

import keras

from kerasml import _backend

__all__ = [
    "ALL",
    "DistributionError",
    "ReplicaFailed",
    "Session",
    "Topology",
    "batch_size_problem",
    "launcher_environment",
    "replicate",
    "spawn",
    "spawns",
    "start",
    "topology",
]

#: ``devices = "all"``: every accelerator of the host (1 on a machine without one).
ALL = "all"
#: Seconds a collective (or JAX's heartbeat) waits for the other processes before the run fails, so that a
#: dead replica ends the run instead of hanging it; the environment variable ``KERASML_DISTRIBUTION_TIMEOUT``
#: (seconds) overrides it.
TIMEOUT_S = 600


def timeout_s(environ=None):
    """Seconds a collective waits for the other processes: ``KERASML_DISTRIBUTION_TIMEOUT``, else `TIMEOUT_S`."""
    value = _int(os.environ if environ is None else environ, "KERASML_DISTRIBUTION_TIMEOUT")
    return value if value is not None and value > 0 else TIMEOUT_S


class DistributionError(ValueError):
    """A distribution that cannot start (devices, processes, batch), or a replica process that failed."""


class ReplicaFailed(DistributionError):
    """A replica's process failed or died during the run; the run stopped with it.

    Attributes:
        rank: the process's rank (replica index ``0..replicas-1``), or ``None`` when not known.
        replicas: replicas in all.
        cause: what happened (``"ended with signal SIGKILL"``, ``"failed: <its error>"``...).
    """

    def __init__(self, rank, replicas, cause):
        self.rank = rank
        self.replicas = int(replicas)
        self.cause = cause
        who = f"the replica process of rank {rank}" if rank is not None else "a replica process"
        super().__init__(f"{who} (of {self.replicas}) {cause}")


@dataclasses.dataclass(frozen=True)
class Topology:
    """How a run is spread over devices and processes.

    Attributes:
        devices: devices (replicas) each process drives; on PyTorch, processes this host starts.
        num_processes: processes of the job (hosts, or a launcher's ranks).
        process_id: this process, ``0..num_processes-1``; process 0 writes the run folder.
        coordinator: ``host:port`` of process 0 (``""``: the launcher's, or a free local port).
        launcher: where the values came from: ``""`` (the caller), ``"torchrun"``, ``"TF_CONFIG"``,
            ``"keras"`` (``KERAS_DISTRIBUTION_*``) or ``"jax"`` (JAX's cluster detection).
    """

    devices: int = 1
    num_processes: int = 1
    process_id: int = 0
    coordinator: str = ""
    launcher: str = ""

    @property
    def replicas(self):
        """Replicas in all: ``devices * num_processes``; each gets ``batch_size / replicas`` rows."""
        return self.devices * self.num_processes

    @property
    def is_chief(self):
        """Whether this is process 0 (the one that writes the run folder and prints)."""
        return self.process_id == 0


def batch_size_problem(batch_size, replicas, layout_accepts=None):
    """Why a global batch of ``batch_size`` rows cannot be split over ``replicas``, or ``None``.

    The loss's layout (``[a_1..a_N; p_1..p_N]`` for N-pair...) holds for the global batch, which
    every replica's loss gathers (see `kerasml.distribution`); the shards only need the same
    number of rows.

    Args:
        batch_size: the global batch.
        replicas: replicas in all.
        layout_accepts: ``size -> bool``, whether the loss's layout takes a batch of ``size``
            (the sizes suggested keep it). Defaults to any size.

    Returns:
        ``None``, or ``(expected, fix)`` in the spec's problem wording.
    """
    if replicas <= 1 or batch_size % replicas == 0:
        return None
    sizes = [size for size in range(replicas, 4 * batch_size + replicas, replicas) if (layout_accepts or bool)(size)]
    nearest = [size for size in sizes if size < batch_size][-1:] + [size for size in sizes if size > batch_size][:1]
    return (
        f"a multiple of the {replicas} replicas (train.batch_size is the global batch, split evenly)",
        f"Use train.batch_size = {' or '.join(map(str, nearest))} (a multiple of {replicas} that keeps the loss's "
        "layout), or another distribution.devices.",
    )


def _int(environ, name):
    try:
        return int(environ[name])
    except (KeyError, ValueError):
        return None


def launcher_environment(backend=None, environ=None):
    """What the launcher of this process says about the job, for ``backend`` (default: Keras').

    Returns:
        A dict with some of ``num_processes``, ``process_id``, ``coordinator`` and ``launcher``
        (empty when no launcher set anything): PyTorch reads ``torchrun``'s ``WORLD_SIZE``,
        ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``; TensorFlow ``TF_CONFIG`` (its chief, then its
        workers, in order); JAX ``KERAS_DISTRIBUTION_NUM_PROCESSES`` / ``_PROCESS_ID`` /
        ``_JOB_ADDRESSES``, else ``launcher = "jax"`` when JAX can detect a cluster
        (``JAX_COORDINATOR_ADDRESS`` set: ``jax.distributed`` finds the rest, e.g. from SLURM or Open MPI).
    """
    backend = backend or keras.backend.backend()
    environ = os.environ if environ is None else environ
    if backend == "torch" and _int(environ, "WORLD_SIZE") is not None and _int(environ, "RANK") is not None:
        address = environ.get("MASTER_ADDR", "")
        port = environ.get("MASTER_PORT", "")
        return {
            "num_processes": _int(environ, "WORLD_SIZE"),
            "process_id": _int(environ, "RANK"),
            "coordinator": f"{address}:{port}" if address and port else "",
            "launcher": "torchrun",
        }
    if backend == "tensorflow" and environ.get("TF_CONFIG"):
        try:
            config = json.loads(environ["TF_CONFIG"])
            cluster, task = config["cluster"], config["task"]
            chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
            index = int(task.get("index", 0))
            process_id = index if task["type"] == "chief" else len(chiefs) + index
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise DistributionError(
                f"TF_CONFIG is not a valid cluster description ({error}). Expected JSON like "
                '{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}.'
            ) from None
        members = chiefs + workers
        return {
            "num_processes": len(members),
            "process_id": process_id,
            "coordinator": members[0] if members else "",
            "launcher": "TF_CONFIG",
        }
    if backend == "jax":
        count = _int(environ, "KERAS_DISTRIBUTION_NUM_PROCESSES")
        if count is not None:
            addresses = environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES", "")
            return {
                "num_processes": count,
                "process_id": _int(environ, "KERAS_DISTRIBUTION_PROCESS_ID") or 0,
                "coordinator": addresses.split(",")[0],
                "launcher": "keras",
            }
        if environ.get("JAX_COORDINATOR_ADDRESS"):
            return {"launcher": "jax"}
    return {}


def topology(devices=1, num_processes=0, process_id=-1, coordinator="", backend=None, environ=None):
    """The `Topology` of a run: the given values, the launcher's environment for those left unset.

    Args:
        devices: devices per process, or ``"all"`` (every accelerator; 1 without one). Defaults to 1.
        num_processes: processes of the job; ``0`` (default): the launcher's, else 1.
        process_id: this process; ``-1`` (default): the launcher's, else 0.
        coordinator: ``host:port`` of process 0; ``""`` (default): the launcher's (or, for a job
            on this host only, a free local port).
        backend: the Keras backend; defaults to the active one.
        environ: the environment; defaults to ``os.environ``.

    Raises:
        DistributionError: for an impossible combination, saying what to change.
    """
    backend = backend or keras.backend.backend()
    found = launcher_environment(backend, environ)
    if devices == ALL:
        devices = max(1, _backend.accelerator_count())
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise DistributionError(
            f'Invalid value for `distribution.devices`: expected an int >= 1 or "all", got {devices!r}.'
        )
    result = Topology(
        devices=devices,
        num_processes=num_processes or found.get("num_processes", 1),
        process_id=process_id if process_id >= 0 else found.get("process_id", 0),
        coordinator=coordinator or found.get("coordinator", ""),
        launcher=found.get("launcher", "") if not (num_processes and process_id >= 0) else "",
    )
    if not 0 <= result.process_id < result.num_processes:
        raise DistributionError(
            f"distribution.process_id = {result.process_id} is not in [0, num_processes - 1 = "
            f"{result.num_processes - 1}]. Give each process its own id from 0."
        )
    if result.num_processes > 1 and not result.coordinator and result.launcher not in ("jax", "TF_CONFIG"):
        raise DistributionError(
            f"A job of {result.num_processes} processes needs distribution.coordinator: the host:port of process 0 "
            '(e.g. "10.0.0.1:29500"), or a launcher that sets it (torchrun, TF_CONFIG, JAX cluster).'
        )
    if backend == "torch" and result.launcher == "torchrun" and devices > 1:
        raise DistributionError(
            f"distribution.devices = {devices} under torchrun: each torchrun process is one replica. Keep "
            "devices = 1 and start one process per device (torchrun --nproc_per_node=N)."
        )
    if backend == "tensorflow" and result.num_processes > 1:
        where = "TF_CONFIG" if result.launcher == "TF_CONFIG" else "distribution.num_processes"
        raise DistributionError(
            f"{where} asks for {result.num_processes} processes, but kerasml runs TensorFlow on one process only "
            "(MultiWorkerMirroredStrategy is not supported by `kerasml run` yet). Use distribution.devices = N on "
            "one host, or the JAX / PyTorch backend for several hosts."
        )
    return result


class Session:
    """A started distribution (`start`): its `Topology` and the scope to build and train in.

    Attributes:
        topology: the `Topology`, as the engine started it.
        engine: the backend's object (a ``tf.distribute`` strategy, a ``keras.distribution.DataParallel``)
            or ``None`` (one device; PyTorch, whose process group is global).
    """

    def __init__(self, topology, engine=None):
        self.topology = topology
        self.engine = engine

    @property
    def is_chief(self):
        """Whether this process writes the run folder and prints."""
        return self.topology.is_chief

    @property
    def replicas(self):
        """Replicas in all."""
        return self.topology.replicas

    def describe(self):
        """One line for the console: the replicas and the engine (e.g. ``"2 replicas: MirroredStrategy"``)."""
        engine = type(self.engine).__name__ if self.engine is not None else "torch.distributed process group"
        topology = self.topology
        return (
            f"{topology.replicas} replicas ({topology.devices} device(s) in each of {topology.num_processes} "
            f"process(es)): {engine}"
        )

    def scope(self):
        """The context to build, load, compile and train the model in (the strategy's or the distribution's)."""
        if self.engine is None:
            return contextlib.nullcontext()
        return self.engine.scope()


def start(topology):
    """Start ``topology`` on the active backend's engine (see the module docstring).

    One device in one process starts nothing. On PyTorch a topology of several devices per
    host must go through `spawn`.

    Returns:
        A `Session`.

    Raises:
        DistributionError: when the devices asked for are not there, or the framework was already
            initialised with fewer devices (with the way to start it right).
    """
    if topology.launcher == "jax":  # jax.distributed finds the processes (JAX_COORDINATOR_ADDRESS, SLURM...)
        count, index = _backend.start_cluster(timeout_s())
        topology = dataclasses.replace(topology, num_processes=count, process_id=index)
    if topology.replicas == 1:
        return Session(topology)
    if spawns(topology):
        raise DistributionError(
            f"On PyTorch, {topology.devices} devices on one host are {topology.devices} processes: start them with "
            "`kerasml.distribution.launch.spawn` (kerasml run does), or with torchrun --nproc_per_node="
            f"{topology.devices}."
        )
    try:
        return Session(topology, _backend.start_distribution(topology, timeout_s()))
    except ValueError as error:  # the devices asked for are not there
        raise DistributionError(str(error)) from None


def free_port():
    """A free TCP port on the loopback interface (for a job on this host only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawns(topology, backend=None):
    """Whether ``topology`` needs `spawn`: PyTorch with several devices on this host (one process each)."""
    return (backend or keras.backend.backend()) == "torch" and topology.devices > 1


def replicate(function, args, topology, batch_size=None):
    """Call ``function(*args, session=session)`` on this host's replicas of ``topology``.

    One process (JAX, TensorFlow, one PyTorch rank): `start`, then the call inside
    ``session.scope()``; its result is returned. Several PyTorch devices: `spawn`, then ``None``.

    Args:
        function: a module-level function (picklable, for `spawn`) taking ``session=``.
        args: its positional arguments (picklable, for `spawn`).
        topology: a `Topology`.
        batch_size: the global batch, checked against the replicas (`batch_size_problem`).

    Raises:
        DistributionError: for a batch that cannot be split, devices that are not there, or a spawned
            process that failed.
    """
    if spawns(topology):
        _check_batch_size(batch_size, topology.replicas)
        spawn(function, args, topology)
        return None
    session = start(topology)
    _check_batch_size(batch_size, session.replicas)
    with session.scope():
        return function(*args, session=session)


def _check_batch_size(batch_size, replicas):
    issue = None if batch_size is None else batch_size_problem(batch_size, replicas)
    if issue is not None:
        raise DistributionError(f"train.batch_size = {batch_size}: expected {issue[0]}. {issue[1]}")


def spawn(function, args, topology):
    """Run ``function(*args, session=session)`` in ``topology.devices`` new processes of PyTorch ranks, and wait.

    Process ``i`` of this host is rank ``process_id * devices + i`` of ``replicas``; the
    processes use the ``"spawn"`` start method (also on Windows), so ``function`` and
    ``args`` must be picklable (``function`` a module-level function). On a single host
    the coordinator is a free port of 127.0.0.1.

    Raises:
        ReplicaFailed: when a process fails or dies: the first one's rank and cause (the others
            are stopped: their collectives fail, and `spawn` ends them).
    """
    import torch.multiprocessing as mp

    coordinator = topology.coordinator or f"127.0.0.1:{free_port()}"
    topology = dataclasses.replace(topology, coordinator=coordinator)
    try:
        # A parent that keeps TensorFlow out (the CLI on JAX / PyTorch) keeps it out of the processes too.
        hidden = "tensorflow" in sys.modules and sys.modules["tensorflow"] is None
        mp.spawn(_spawned, args=(function, args, topology, hidden), nprocs=topology.devices, join=True)
    except mp.ProcessRaisedException as error:
        rank = topology.process_id * topology.devices + error.error_index
        cause = str(error).strip().splitlines()[-1]
        raise ReplicaFailed(rank, topology.replicas, f"failed: {cause}") from None
    except mp.ProcessExitedException as error:
        rank = topology.process_id * topology.devices + error.error_index
        how = f"signal {error.signal_name}" if error.signal_name else f"exit status {error.exit_code}"
        raise ReplicaFailed(rank, topology.replicas, f"ended with {how}") from None


def _spawned(local, function, args, topology, hide_tensorflow=False):
    if hide_tensorflow:
        sys.modules.setdefault("tensorflow", None)
    rank = topology.process_id * topology.devices + local
    _backend.start_process_group(topology.coordinator, rank, topology.replicas, local, timeout_s())
    session = Session(dataclasses.replace(topology, devices=1, num_processes=topology.replicas, process_id=rank))
    try:
        function(*args, session=session)
    finally:
        _backend.stop_process_group()
