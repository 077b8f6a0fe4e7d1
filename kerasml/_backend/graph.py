"""Run a functional Keras model layer by layer, with backend functions in place of some layers' ``call``.

The backends' fast paths (`kerasml._backend.torch_layers`, `kerasml._backend.tensorflow_layers`)
give, for a layer, a function computing the same outputs with other kernels; `run` walks the
model's graph (``model.layers`` in their topological order, wired through the public
``layer.input`` / ``layer.output``) and calls that function where there is one, the layer itself
elsewhere. The model, its layers and its variables are untouched.
"""

import inspect
import weakref

import keras

_PLANS = weakref.WeakKeyDictionary()


def _plan(model, fast_function):
    """``(input id, steps, output id)`` of a functional model, or ``None`` when there is no graph to run.

    A step is ``(layer, fast function or None, whether the layer's ``call`` takes ``training``,
    input ids (a list, or one id), output id)``; ids are those of the model's symbolic tensors.
    ``None`` too when no layer has a fast function, or a layer is used twice (no single input).
    """
    try:
        inputs, outputs, layers = list(model.inputs), list(model.outputs), list(model.layers)
    except (AttributeError, ValueError, TypeError):
        return None
    if len(inputs) != 1 or len(outputs) != 1:
        return None
    steps, known, fast = [], {id(inputs[0])}, 0
    for layer in layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            layer_inputs, layer_output = layer.input, layer.output  # raise for a layer used twice
        except (AttributeError, ValueError):
            return None
        if not isinstance(layer_output, keras.KerasTensor):
            return None
        ids = [id(t) for t in layer_inputs] if isinstance(layer_inputs, (list, tuple)) else id(layer_inputs)
        if any(i not in known for i in (ids if isinstance(ids, list) else [ids])):
            return None
        function = fast_function(layer)
        fast += function is not None
        takes_training = "training" in inspect.signature(layer.call).parameters
        steps.append((layer, function, takes_training, ids, id(layer_output)))
        known.add(id(layer_output))
    if not fast or id(outputs[0]) not in known:
        return None
    return id(inputs[0]), steps, id(outputs[0])


def plan(model, fast_function):
    """The cached `_plan` of ``model`` with ``fast_function(layer) -> f or None`` (``None``: not applicable)."""
    try:
        cached = _PLANS.get(model)
    except TypeError:
        return None
    if cached is None or cached[0] is not fast_function:
        cached = (fast_function, _plan(model, fast_function))
        _PLANS[model] = cached
    return cached[1]


def run(graph, inputs, training=False):
    """Outputs of a `plan` on ``inputs``; ``None`` when ``graph`` is ``None``.

    Each fast function gets ``(inputs, training)`` and may return ``None`` for inputs it does not
    handle: the layer is then called as usual.
    """
    if graph is None:
        return None
    input_id, steps, output_id = graph
    values = {input_id: inputs}
    training = bool(training)
    for layer, function, takes_training, ids, output in steps:
        args = [values[i] for i in ids] if isinstance(ids, list) else values[ids]
        result = None if function is None else function(args, training)
        if result is None:
            result = layer(args, training=training) if takes_training else layer(args)
        values[output] = result
    return values[output_id]
