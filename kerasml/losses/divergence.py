"""Divergence loss between the heads of an ensemble embedding (Kim et al., 2018)."""

import keras
from keras import ops

from kerasml.losses._base import MetricLoss
from kerasml.losses.layouts import HEADS
from kerasml.losses.pairwise import as_embeddings


def _split_heads(embeddings, heads):
    if len(embeddings.shape) == 3:
        if heads is not None and embeddings.shape[1] != heads:
            raise ValueError(
                f"Invalid value for argument `heads`. y_pred has shape {tuple(embeddings.shape)} "
                f"([B, M, D] with M={embeddings.shape[1]}). Received: heads={heads}"
            )
        return embeddings
    if len(embeddings.shape) != 2 or heads is None:
        raise ValueError(
            "DivergenceLoss expects y_pred of shape [B, M, D], or [B, M*D] with "
            f"`heads=M`. Received: shape={tuple(embeddings.shape)}, heads={heads}"
        )
    width = embeddings.shape[1]
    if width is None or width % heads:
        raise ValueError(
            f"Invalid value for argument `heads`. The embedding width {width} must be "
            f"a multiple of `heads`. Received: heads={heads}"
        )
    return ops.reshape(embeddings, (-1, heads, width // heads))  # [B, M, D]


def divergence_loss(embeddings, margin=1.0, heads=None):
    """Divergence loss of a batch, functional form of `DivergenceLoss`.

    ``L = mean over samples b and head pairs m < n of max(0, margin − ‖e_bm − e_bn‖²)``.

    Args:
        embeddings: float ``[B, M, D]``, or ``[B, M*D]`` with ``heads=M``.
        margin: the squared distance beyond which two heads cost nothing.
        heads: ``M`` for a flat ``[B, M*D]`` input.

    Returns:
        The scalar loss (float32); 0 for a single head.
    """
    e = _split_heads(as_embeddings(embeddings), heads)
    m = e.shape[1]
    if m < 2:
        return ops.sum(e) * 0.0
    diff = ops.expand_dims(e, 2) - ops.expand_dims(e, 1)  # [B, M, M, D]
    d2 = ops.sum(ops.square(diff), axis=-1)  # [B, M, M]
    index = ops.arange(m)
    upper = ops.cast(ops.expand_dims(index, 1) < ops.expand_dims(index, 0), d2.dtype)
    hinge = ops.relu(margin - d2) * upper
    pairs = m * (m - 1) // 2
    return ops.mean(ops.sum(hinge, axis=(1, 2)) / pairs)


@keras.saving.register_keras_serializable(package="kerasml")
class DivergenceLoss(MetricLoss):
    """Divergence loss: pushes apart the M embeddings that M heads give one image.

    For an ensemble of ``M`` embedding heads ``e_b1..e_bM`` of each image ``b``::

        L = mean_b mean_{m<n} max(0, margin − ‖e_bm − e_bn‖²)

    Batch convention: ``y_pred`` is ``[B, M, D]`` (as `EmbeddingProjector(heads=M)`
    gives), or ``[B, M*D]`` with ``heads=M``; ``y_true`` is accepted and ignored
    (the loss needs no labels). It is a regulariser, added to a metric loss on
    each head. Squared distances need no square root, so identical heads have
    finite gradients; a single head gives 0.

    Defaults follow Kim et al. (squared Euclidean distance, margin 1).

    Args:
        margin: the squared-distance margin. Defaults to ``1.0``.
        heads: ``M`` when ``y_pred`` is flat ``[B, M*D]``. Defaults to ``None``.
        name: name of the loss. Defaults to ``"divergence_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.DivergenceLoss(margin=1.0)
    >>> heads = np.array([[[0.0, 0.0], [0.5, 0.0]]])    # one image, two heads
    >>> float(loss(np.zeros(1), heads))                  # 1 - 0.25
    0.75

    Reference:
        Kim, Goyal, Chawla, Lee, Kwon, "Attention-based Ensemble for Deep Metric
        Learning", ECCV 2018.
    """

    names = ("divergence",)
    batch_layout = HEADS

    def __init__(self, margin=1.0, heads=None, name="divergence_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.margin = float(margin)
        self.heads = None if heads is None else int(heads)

    def call(self, y_true, y_pred):
        del y_true
        return divergence_loss(y_pred, margin=self.margin, heads=self.heads)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "heads": self.heads}
