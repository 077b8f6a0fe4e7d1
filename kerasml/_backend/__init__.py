"""The few operations that differ per Keras backend, behind one interface.

Each backend has one small module (``tensorflow.py``, ``torch.py``, ``jax.py``);
the module of the active backend (``keras.backend.backend()``) is imported on
first use, so importing kerasml never imports a framework the user did not pick.
"""

import importlib

import keras
import numpy as np

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
