"""The few operations that differ per Keras backend, behind one interface.

Each backend has one small module (``tensorflow.py``, ``torch.py``, ``jax.py``);
the module of the active backend (``keras.backend.backend()``) is imported on
first use, so importing kerasml never imports a framework the user did not pick.
"""

import contextlib
import importlib
import os
import warnings

import keras
import numpy as np

from kerasml._validation import check_choice

_MODULES = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}


def _active():
    name = _MODULES.get(keras.backend.backend())
    if name is None:
        return None
    return importlib.import_module(f"kerasml._backend.{name}")


def is_concrete(x):
    """Whether ``x`` holds values now (eager), as opposed to a traced symbol.

    NumPy arrays and Python sequences are concrete. Backend tensors are concrete
    outside ``tf.function`` / ``jax.jit`` / ``torch.compile`` tracing. Used to run
    data-dependent checks (batch layouts) only where they can raise.
    """
    if isinstance(x, (np.ndarray, list, tuple, int, np.integer)):
        return True
    module = _active()
    return True if module is None else module.is_concrete(x)


def replica_count():
    """How many replicas each hold a shard of the batch that the running step sees.

    ``tf.distribute`` replica context: its replicas in sync; PyTorch: the
    processes of the default ``torch.distributed`` group; JAX: 1, because under
    ``keras.distribution`` one SPMD program sees the whole batch. 1 outside any
    distribution.
    """
    module = _active()
    return 1 if module is None else module.replica_count()


def process_shard():
    """``(processes, this process's index)`` of a PyTorch process group; ``(1, 0)`` elsewhere."""
    module = _active()
    return module.process_shard() if module is not None and hasattr(module, "process_shard") else (1, 0)


def all_gather_rows(tensors):
    """``([each tensor's rows of every replica, in replica order], this replica's first row)``, no gradient.

    The tensors share their number of rows (on each replica; it may differ between replicas).
    """
    return _active().all_gather_rows(list(tensors))


def all_reduce_sum(x):
    """``x`` summed over the replicas (differentiable: the gradient is summed over the replicas too)."""
    return _active().all_reduce_sum(x)


def gradient_reduction():
    """``"sum"`` (``tf.distribute``) or ``"mean"`` (PyTorch, like DDP): how replicas' gradients combine."""
    module = _active()
    return "sum" if module is None else module.GRADIENT_REDUCTION


def synchronize(variables):
    """PyTorch: broadcast ``variables`` from process 0 and average their gradients; elsewhere nothing."""
    module = _active()
    if module is not None and hasattr(module, "synchronize"):
        module.synchronize(variables)


def accelerator_count():
    """GPUs (TPUs) the active backend sees on this host; 0 on a CPU-only machine."""
    module = _active()
    return 0 if module is None else module.accelerator_count()


def start_distribution(topology, timeout_s):
    """Start a `kerasml.distribution.launch.Topology` on the active backend's engine; see its `start`."""
    return _active().start_distribution(topology, timeout_s)


def start_cluster(timeout_s):
    """JAX: start ``jax.distributed`` from the environment; ``(number of processes, this process's index)``."""
    return _active().start_cluster(timeout_s)


def start_process_group(coordinator, rank, world_size, local_rank, timeout_s):
    """PyTorch: join the default ``torch.distributed`` group (gloo on CPU, NCCL on GPU)."""
    _active().start_process_group(coordinator, rank, world_size, local_rank, timeout_s)


def stop_process_group():
    """PyTorch: leave the default ``torch.distributed`` group."""
    _active().stop_process_group()


def is_collective_failure(error):
    """Whether ``error`` is a collective across processes that failed (a peer process died, the network broke)."""
    module = _active()
    check = getattr(module, "is_collective_failure", None)
    return bool(check is not None and check(error))


def abandon_cluster(status):
    """After a collective failed because other processes died: make this process exit with ``status``.

    JAX: its exit handler would otherwise abort at ``jax.distributed``'s shutdown barrier (status 134).
    Other backends: nothing to do.
    """
    hook = getattr(_active(), "abandon_cluster", None)
    if hook is not None:
        hook(status)


# ------------------------------------------------------------------ fast paths (issue 13) ---
# Backend kernels for the same layers and weights: kerasml/_backend/torch_layers.py (layout copies, fused
# batch-norm), kerasml/_backend/tensorflow_layers.py (fused batch-norm), kerasml/_backend/jax_layers.py (CPU:
# convolution kernel and max-pooling gradients without XLA's slow CPU kernels).

_FAST_PATH_MODULES = {"torch": "torch_layers", "tensorflow": "tensorflow_layers", "jax": "jax_layers"}
# On unless KERASML_FAST_PATHS=0. (A resumed run stays bit-identical: tests/test_hdml_training.py's exact resume.)
_fast_paths = {"enabled": os.environ.get("KERASML_FAST_PATHS", "1").strip().lower() not in ("0", "false", "off")}


def fast_paths_enabled():
    """Whether `call_functional` may use the backend's fast path (``KERASML_FAST_PATHS=0`` turns it off)."""
    return _fast_paths["enabled"]


@contextlib.contextmanager
def fast_paths(enabled):
    """Turn the backend fast paths on or off inside a ``with`` block (e.g. to compare with plain Keras)."""
    previous = _fast_paths["enabled"]
    _fast_paths["enabled"] = bool(enabled)
    try:
        yield
    finally:
        _fast_paths["enabled"] = previous


def call_functional(model, inputs, training=False):
    """``model(inputs, training=training)``, computed by the active backend's fast path where it has one.

    On PyTorch a functional model of convolutions, batch-norms, poolings... runs through
    `kerasml._backend.torch_layers.run` (same layers, weights and results; no layout copies, fused
    batch-norm); on TensorFlow its batch-norms take the fused kernel
    (`kerasml._backend.tensorflow_layers.run`); on JAX on a CPU its convolutions and max-poolings get
    faster gradients (`kerasml._backend.jax_layers.run`); for any model or input the fast path
    does not handle, the model is called as usual.
    """
    if _fast_paths["enabled"] and replica_count() == 1:  # across replicas batch-norm needs global statistics
        name = _FAST_PATH_MODULES.get(keras.backend.backend())
        if name is not None:
            outputs = importlib.import_module(f"kerasml._backend.{name}").run(model, inputs, training)
            if outputs is not None:
                return outputs
    return model(inputs, training=training)


#: ``train.compile`` values: what compiles the training step (`jit_compile`).
COMPILE_MODES = ("auto", "off", "xla", "torch.compile")
#: ``train.precision`` values: Keras dtype policies.
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# Which backends have each compiler, and what it is called there (for the warning).
_COMPILERS = {"xla": ("tensorflow", "jax"), "torch.compile": ("torch",)}


def jit_compile(mode, backend=None):
    """The ``jit_compile`` argument of ``Model.compile`` for a ``train.compile`` mode on a backend.

    ``"auto"``: Keras' choice (``jax.jit`` on JAX; XLA on TensorFlow only with a GPU; PyTorch
    eager, which measured faster than ``torch.compile`` on CPU). ``"off"``: no compiler
    (TensorFlow still builds a ``tf.function`` graph; JAX and PyTorch run eagerly). ``"xla"``:
    XLA on TensorFlow, ``jax.jit`` on JAX. ``"torch.compile"``: ``torch.compile`` on PyTorch.
    A compiler the backend does not have falls back to ``"auto"`` with a `UserWarning`.

    Args:
        mode: one of `COMPILE_MODES`.
        backend: the Keras backend; defaults to the active one.

    Returns:
        ``"auto"``, ``True`` or ``False``.

    Raises:
        ValueError: for a mode not in `COMPILE_MODES`.
    """
    check_choice("compile", mode, COMPILE_MODES)
    backend = backend or keras.backend.backend()
    if mode == "auto":
        return "auto"
    if mode == "off":
        return False
    if backend not in _COMPILERS[mode]:
        warnings.warn(
            f'train.compile = "{mode}" is not available on the {backend} backend (it is for '
            f'{" and ".join(_COMPILERS[mode])}); training with compile = "auto" instead.',
            UserWarning,
            stacklevel=2,
        )
        return "auto"
    return True


@contextlib.contextmanager
def precision(name):
    """Build layers under the Keras dtype policy ``name`` (one of `PRECISIONS`), then restore the previous one.

    Layers keep the policy they were built with (a ``.keras`` file records it), so only the
    building needs the scope. ``"mixed_float16"`` models get Keras' loss scaling when compiled.
    """
    check_choice("precision", name, PRECISIONS)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def predict(model, x, batch_size=32):
    """``model(x, training=False)`` over the rows of ``x`` in chunks, compiled per backend, as NumPy.

    See `kerasml._backend.inference` (``tf.function`` on TensorFlow, ``jax.jit`` on JAX,
    ``torch.no_grad`` and the fast path on PyTorch).
    """
    from kerasml._backend import inference

    return inference.predict(model, x, batch_size)


def predict_batches(model, batches):
    """``model(x, training=False)`` of each input array of ``batches`` (compiled as `predict`), float32 NumPy.

    A generator; see `kerasml._backend.inference.predict_batches`.
    """
    from kerasml._backend import inference

    return inference.predict_batches(model, batches)


def memory_is_tracked(variable):
    """Whether an assignment to ``variable`` now will persist after the running step.

    False only inside a Keras stateless scope that maps the model's variables but
    not ``variable`` (JAX's ``fit`` and ``evaluate``): the step carries the new
    values of the model's own variables only, so an assignment to another
    variable is dropped. True eagerly, on TensorFlow and PyTorch (whose steps
    assign in place), and in a scope that maps nothing (Keras' shape-only
    symbolic build, which discards every assignment anyway).
    """
    try:  # Keras exposes no public accessor for the running stateless scope.
        from keras.src.backend.common.stateless_scope import get_stateless_scope
    except ImportError:  # pragma: no cover - a future Keras layout
        return True
    scope = get_stateless_scope()
    return scope is None or not scope.state_mapping or scope.get_current_value(variable) is not None
