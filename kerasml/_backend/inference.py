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

Chunks are NumPy slices converted on the way in (`keras.ops.convert_to_tensor`, which places them
on the backend's default device) and converted back to NumPy on the way out, so that device
memory holds one chunk at a time. Outputs are float32 whatever the model's dtype policy (a
``mixed_bfloat16`` model's embeddings are cast inside the compiled function).
"""

import weakref

import keras
import numpy as np

_FUNCTIONS = weakref.WeakKeyDictionary()


def _tensorflow(model):
    import tensorflow as tf

    return tf.function(lambda x: _float32(model(x, training=False)), reduce_retracing=True)


def _jax(model):
    import jax

    @jax.jit
    def run(trainable, non_trainable, x):
        outputs, _ = model.stateless_call(trainable, non_trainable, x, training=False)
        return _float32(outputs)

    def call(x):
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        return run(trainable, non_trainable, x)

    return call


def _torch(model):
    import torch

    def call(x):
        with torch.no_grad():
            return _float32(model(x, training=False))

    return call


def _plain(model):
    return lambda x: _float32(model(x, training=False))


def _float32(outputs):
    return keras.tree.map_structure(lambda t: keras.ops.cast(t, "float32"), outputs)


_BUILDERS = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}


def inference_function(model):
    """The cached compiled function ``f(x) -> model(x, training=False)`` of ``model`` on the active backend."""
    backend = keras.backend.backend()
    cached = _FUNCTIONS.get(model)
    if cached is None or cached[0] != backend:
        cached = (backend, _BUILDERS.get(backend, _plain)(model))
        _FUNCTIONS[model] = cached
    return cached[1]


def predict_batches(model, batches):
    """``model(x, training=False)`` of each input array of ``batches``, as float32 NumPy, one at a time.

    On JAX a batch with fewer rows than the first is padded to the first one's size (and the
    padding's outputs dropped), so that one compilation serves every batch.

    Args:
        model: a Keras model (or layer) with one array output.
        batches: an iterable of input arrays (NumPy, or anything ``numpy.asarray`` takes).

    Yields:
        The outputs of each batch (NumPy, float32).
    """
    function = inference_function(model)
    pad_to = None
    for x in batches:
        x = np.asarray(x)
        rows = len(x)
        if keras.backend.backend() == "jax":
            pad_to = rows if pad_to is None else pad_to
            if 0 < rows < pad_to:
                x = np.concatenate([x, np.zeros((pad_to - rows, *x.shape[1:]), x.dtype)])
        yield np.asarray(keras.ops.convert_to_numpy(function(keras.ops.convert_to_tensor(x))))[:rows]


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
