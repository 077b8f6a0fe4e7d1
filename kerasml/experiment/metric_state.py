"""The running means Keras logs during an epoch, kept at a mid-epoch checkpoint so that a resume logs them on."""

import keras
import numpy as np

__all__ = ["metric_state", "restore_metric_state"]


def metric_state(model):
    """The model's metric variables (the epoch's running sums and counts Keras logs) as ``[[path, values]]``.

    A "sum on read" variable under a ``tf.distribute`` strategy reads as the sum of every replica's
    copy, and each replica adds to its copy at every step; it is stored per step, divided by the
    replicas, so that a resume on another number of replicas weighs the steps alike.
    """
    copies = _metric_copies(model)
    return [
        [v.path, (np.asarray(keras.ops.convert_to_numpy(v)) / (copies if _summed_on_read(v) else 1)).tolist()]
        for v in model.metrics_variables
    ]


def restore_metric_state(model, state):
    """Assign a `metric_state` back to the model's metric variables; nothing unless every path matches.

    Returns:
        Whether the state was restored.
    """
    variables = model.metrics_variables
    if [path for path, _ in state] != [v.path for v in variables]:
        return False
    copies = _metric_copies(model)
    for variable, (_, values) in zip(variables, state):
        value = np.asarray(values, dtype=variable.dtype).reshape(variable.shape)
        variable.assign(value * copies if _summed_on_read(variable) else value)
    return True


def _metric_copies(model):
    # The replicas of a TensorFlow model's `tf.distribute` strategy (Keras' TF trainer); 1 on the other backends.
    strategy = getattr(model, "distribute_strategy", None)
    return int(getattr(strategy, "num_replicas_in_sync", 1) or 1)


def _summed_on_read(variable):
    return variable.synchronization == "on_read" and variable.aggregation == "sum"
