"""The running means Keras logs during an epoch, kept at a mid-epoch checkpoint so that a resume logs them on."""

import keras
import numpy as np

__all__ = ["metric_state", "restore_metric_state"]


def metric_state(model):
    """The model's metric variables (the epoch's running sums and counts Keras logs) and its replicas.

    Returns:
        ``{"replicas": R, "variables": [[path, values], ...]}``; ``R`` is the number of
        ``tf.distribute`` replicas of a TensorFlow model (1 on the other backends), whose "sum on
        read" metric variables add up per-replica copies.
    """
    return {
        "replicas": _replicas(model),
        "variables": [[v.path, np.asarray(keras.ops.convert_to_numpy(v)).tolist()] for v in model.metrics_variables],
    }


def restore_metric_state(model, state):
    """Assign a `metric_state` back to the model's metric variables.

    Nothing is assigned unless every variable path and the number of replicas match: how the
    per-replica copies of a TensorFlow metric add up differs between metrics, so a resume on
    another number of replicas starts the epoch's running means afresh.

    Returns:
        Whether the state was restored.
    """
    variables = model.metrics_variables
    if not isinstance(state, dict) or state.get("replicas") != _replicas(model):
        return False
    if [path for path, _ in state["variables"]] != [v.path for v in variables]:
        return False
    for variable, (_, values) in zip(variables, state["variables"]):
        variable.assign(np.asarray(values, dtype=variable.dtype).reshape(variable.shape))
    return True


def _replicas(model):
    # The replicas of a TensorFlow model's `tf.distribute` strategy (Keras' TF trainer); 1 on the other backends.
    strategy = getattr(model, "distribute_strategy", None)
    return int(getattr(strategy, "num_replicas_in_sync", 1) or 1)
