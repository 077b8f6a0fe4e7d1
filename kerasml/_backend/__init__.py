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
