"""A reference set: the rows a batch's anchors are compared with when they are not just the batch.

A pair-based loss normally compares every sample of a batch with every other
one (a ``[B, B]`` matrix). With a reference set (`Reference`) the anchors stay
the batch's ``B`` rows and the columns are the ``N`` reference rows, whose
first ``B`` rows are the batch itself: ``[batch; extra rows]``. Cross-batch
memory (`kerasml.losses.CrossBatchMemory`) appends past embeddings this way.
Column ``i < B`` is anchor ``i`` itself, so ``(i, i)`` is never a pair; columns
marked invalid (empty memory slots) are never a pair either. Losses and miners
only touch the columns through these masks.
"""

import dataclasses
from typing import Any

from keras import ops


@dataclasses.dataclass(frozen=True)
class Reference:
    """The ``N`` rows a batch of ``B`` anchors is compared with; rows ``0..B-1`` are the batch itself.

    Attributes:
        labels: int32 ``[N]``.
        embeddings: float32 ``[N, D]`` (rows past ``B`` usually carry no gradient).
        valid: bool ``[N]``: rows that take part in pairs (``None``: all).
    """

    labels: Any
    embeddings: Any
    valid: Any = None

    def masks(self, labels):
        """``(positive, negative)`` bool ``[B, N]`` between anchors with ``labels`` ``[B]`` and these rows.

        Positive: same label, not the anchor itself (column ``i`` for anchor
        ``i``), valid. Negative: different label, valid.
        """
        same = ops.expand_dims(labels, 1) == ops.expand_dims(self.labels, 0)
        rows = ops.expand_dims(ops.arange(ops.shape(labels)[0], dtype="int32"), 1)
        columns = ops.expand_dims(ops.arange(ops.shape(self.labels)[0], dtype="int32"), 0)
        positive = ops.logical_and(same, rows != columns)
        negative = ops.logical_not(same)
        if self.valid is not None:
            valid = ops.expand_dims(ops.cast(self.valid, "bool"), 0)
            positive = ops.logical_and(positive, valid)
            negative = ops.logical_and(negative, valid)
        return positive, negative


def reference_embeddings(reference):
    """The reference rows, or ``None`` (the batch itself) without a reference."""
    return None if reference is None else reference.embeddings
