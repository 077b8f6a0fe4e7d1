"""PyTorch-specific helpers."""

import torch
import torch.distributed as dist

#: how gradients are combined across processes: averaged, as `DistributedDataParallel` does.
GRADIENT_REDUCTION = "mean"


def is_concrete(x):
    """True for real tensors outside ``torch.compile`` tracing.

    Keras infers output shapes on the ``"meta"`` device, whose tensors hold no
    values; those are not concrete.
    """
    if isinstance(x, torch.Tensor) and x.device.type == "meta":
        return False
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return not compiler.is_compiling()
    return True


def replica_count():
    """Processes in the default ``torch.distributed`` group (1 when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def process_shard():
    """``(processes, this process's rank)`` of the default ``torch.distributed`` group; ``(1, 0)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _symbolic(x):
    return isinstance(x, torch.Tensor) and x.device.type == "meta"


def all_gather_rows(tensors):
    """``([every process's rows of each tensor, in rank order], index of this process's first row)``.

    The tensors share their number of rows, which may differ between processes:
    the sizes are gathered once and each tensor padded to the largest. No
    gradient flows through the result.
    """
    tensors = [torch.as_tensor(x).detach() for x in tensors]
    if _symbolic(tensors[0]):
        return tensors, 0
    world = dist.get_world_size()
    size = torch.tensor([tensors[0].shape[0]], dtype=torch.int64, device=tensors[0].device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s.item()) for s in sizes]
    longest = max(sizes)
    gathered = []
    for x in tensors:
        x = x.contiguous()
        if x.shape[0] < longest:
            x = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        gathered.append(torch.cat([part[:rows] for part, rows in zip(parts, sizes)]))
    return gathered, sum(sizes[: dist.get_rank()])


class _AllReduceSum(torch.autograd.Function):
    """``dist.all_reduce`` (sum) with its gradient: the sum of the processes' gradients."""

    @staticmethod
    def forward(ctx, x):
        total = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx, grad):
        return _AllReduceSum.apply(grad)


def all_reduce_sum(x):
    """Sum of ``x`` over the processes; its gradient is the sum of the processes' gradients."""
    if _symbolic(x):
        return x
    return _AllReduceSum.apply(x)


def synchronize(variables):
    """Start ``variables`` equal on every process and average their gradients across processes.

    Copies every variable's value from process 0 (as `DistributedDataParallel`
    does when it wraps a module), then registers on each trainable parameter a
    hook that all-reduces its gradient and divides it by the number of
    processes as soon as backpropagation has accumulated it. Idempotent.
    """
    world = replica_count()
    if world < 2:
        return
    with torch.no_grad():
        for variable in variables:
            value = variable.value
            if getattr(value, "_kerasml_synchronized", False):
                continue
            dist.broadcast(value.data, src=0)
            if value.requires_grad:
                value.register_post_accumulate_grad_hook(_average_gradient)
            value._kerasml_synchronized = True


def _average_gradient(parameter):
    dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
    parameter.grad.div_(dist.get_world_size())


def accelerator_count():
    """CUDA devices PyTorch sees (0 on CPU)."""
    return torch.cuda.device_count()


def start_process_group(coordinator, rank, world_size, local_rank, timeout_s):
    """Join the default process group: NCCL with one GPU per process (``local_rank``), gloo on CPU.

    ``coordinator``: ``host:port`` of rank 0, or ``"env://"`` (``torchrun``'s store and variables).
    """
    from datetime import timedelta

    if dist.is_initialized():
        return
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        backend = "nccl"
    else:
        torch.set_num_threads(max(1, torch.get_num_threads() // max(1, world_size)))
    dist.init_process_group(
        backend,
        init_method=coordinator if coordinator == "env://" else f"tcp://{coordinator}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )


def stop_process_group():
    """Leave the default process group (if any)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def is_collective_failure(error):
    """Whether ``error`` comes from a ``torch.distributed`` collective that failed (a dead peer, a timeout)."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(word in text for word in ("Gloo", "gloo", "NCCL", "Connection"))


def start_distribution(topology, timeout_s):
    """One process per replica (``torchrun``): join the group; the engine is the global process group."""
    import os

    coordinator = "env://" if topology.launcher == "torchrun" else topology.coordinator
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    start_process_group(coordinator, topology.process_id, topology.num_processes, local_rank, timeout_s)
    return None
