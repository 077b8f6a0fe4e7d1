"""`MetricLoss`: the base class of every kerasml loss."""

import keras
import numpy as np
from keras import ops

from kerasml._backend import is_concrete
from kerasml.losses._pairwise import as_embeddings, as_labels


class MetricLoss(keras.losses.Loss):
    """Base class of kerasml's losses: a whole batch in, one scalar out.

    Compared with `keras.losses.Loss` it changes two things:

    - labels stay integers. `keras.losses.Loss.__call__` casts ``y_true`` to the
      loss dtype, which under float16/bfloat16 merges distinct class ids (256 and
      257 are equal in bfloat16). Here labels become int32 and embeddings float32
      whatever the input dtypes; only the returned scalar takes the loss dtype.
    - the loss is a property of the batch (it compares samples with each other),
      so it is not a per-sample vector and takes no ``sample_weight``.

    Subclasses implement ``call(y_true, y_pred)`` with ``y_true`` int32 ``[B]``
    and ``y_pred`` float32 ``[B, D]``, and may override ``check_batch(labels)``,
    which runs on the labels as a NumPy array whenever they are concrete (eager
    execution, PyTorch, ``run_eagerly=True``) and raises ``ValueError`` on a
    batch that breaks the loss's layout. Inside a traced graph the check cannot
    run; each loss then stays finite and ignores the tuples its layout rules out.

    Args:
        name: name of the loss instance.
        reduction: kept for Keras compatibility; a batch-level loss is already a
            scalar, so every reduction returns it unchanged.
        dtype: dtype of the returned loss value. Defaults to
            `keras.backend.floatx()`. Computation is float32 regardless.
    """

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._requested_dtype = dtype

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                f"Invalid value for argument `sample_weight` of {type(self).__name__}. "
                "A metric loss compares the samples of a batch with each other and "
                "has no per-sample weights. Expected: None. Received: a "
                f"{type(sample_weight).__name__}. Drop `sample_weight`/`class_weight` "
                "from `fit`, or balance classes in the batch sampler instead."
            )
        with keras.name_scope(self.name):
            if self._checks_layout and is_concrete(y_true):
                self.check_batch(np.asarray(ops.convert_to_numpy(y_true)).reshape(-1))
            loss = self.call(as_labels(y_true), as_embeddings(y_pred))
            return ops.cast(loss, self.dtype)

    @property
    def _checks_layout(self):
        return type(self).check_batch is not MetricLoss.check_batch

    def check_batch(self, labels):
        """Raise `ValueError` if the concrete ``labels`` break this loss's layout.

        Args:
            labels: NumPy array ``[B]`` of the batch's class ids.
        """
        del labels

    def get_config(self):
        return {**super().get_config(), "dtype": self._requested_dtype}
