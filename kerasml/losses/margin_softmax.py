"""Margin-softmax losses: ArcFace, CosFace and sub-centre ArcFace.

A classifier whose weights ``W`` (``loss.proxies``, one row per class, or K
sub-centres per class) and the embeddings are L2-normalised, so its logits are
cosines ``cos θ_c``; a margin on the target class's logit makes the classes
separate by an angle. The weights are trained with the model: see
`kerasml.losses.parametric` (`kerasml.models.MetricModel` does it for you).
"""

import math

import keras
from keras import ops

from kerasml._validation import check_int
from kerasml.losses.pairwise import as_embeddings, as_labels
from kerasml.losses.parametric import ProxyLoss, class_mask, proxy_cosine, softmax_cross_entropy

# sin θ = sqrt(1 − cos² θ) is floored at sqrt(1e-12): its derivative is infinite at cos θ = ±1.
_SIN_SQUARED_FLOOR = 1e-12


def _additive_angular_logits(cosine, target, margin_degrees, scale):
    # cos(θ + m) = cos θ cos m − sin θ sin m: exact at θ = 0, where arccos would need clipping.
    margin = math.radians(margin_degrees)
    sine = ops.sqrt(ops.maximum(1.0 - ops.square(cosine), _SIN_SQUARED_FLOOR))
    with_margin = cosine * math.cos(margin) - sine * math.sin(margin)
    return scale * ops.where(target, with_margin, cosine)


def _arcface(labels, embeddings, proxies, margin, scale):
    cosine = proxy_cosine(embeddings, proxies)
    if len(ops.shape(proxies)) == 3:
        cosine = ops.max(cosine, axis=-1)  # the nearest sub-centre of each class
    target = class_mask(labels, ops.shape(proxies)[0])
    return softmax_cross_entropy(_additive_angular_logits(cosine, target, margin, scale), target)


def arcface_loss(labels, embeddings, proxies, margin=28.6, scale=64.0):
    """ArcFace loss of a batch, functional form of `ArcFaceLoss` (and of `SubCenterArcFaceLoss`).

    Args:
        labels: int class ids ``[B]`` in ``[0, C)``.
        embeddings: float ``[B, D]``.
        proxies: the class weights ``[C, D]``, or ``[C, K, D]`` with K sub-centres
            per class (each class's cosine is then the largest of its sub-centres').
        margin: the additive angular margin ``m`` in degrees.
        scale: ``s``.

    Returns:
        The scalar loss (float32).
    """
    return _arcface(as_labels(labels), as_embeddings(embeddings), as_embeddings(proxies), float(margin), float(scale))


class _AngularMarginLoss(ProxyLoss):
    def __init__(self, num_classes, embedding_dim, margin, scale, lr_multiplier, initializer, name, reduction, dtype):
        self.margin = float(margin)
        self.scale = float(scale)
        super().__init__(num_classes, embedding_dim, lr_multiplier, initializer, name, reduction, dtype)

    def call(self, y_true, y_pred):
        return _arcface(y_true, y_pred, as_embeddings(self.proxies), self.margin, self.scale)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "scale": self.scale}


@keras.saving.register_keras_serializable(package="kerasml")
class ArcFaceLoss(_AngularMarginLoss):
    """ArcFace (additive angular margin): softmax cross-entropy with the target's angle widened by ``m``.

    With ``θ_c`` the angle between the embedding and class weight ``W_c``::

        L = mean_i −log( exp(s cos(θ_{y_i} + m)) / (exp(s cos(θ_{y_i} + m)) + Σ_{c ≠ y_i} exp(s cos θ_c)) )

    (eq. 3 of Deng et al.). Batch convention: any labelled batch, labels in
    ``[0, num_classes)``.

    Defaults: ``m = 28.6°`` (0.5 rad, the paper's) and ``s = 64``, as
    pytorch-metric-learning (PML)'s ``ArcFaceLoss(num_classes, embedding_size,
    margin=28.6, scale=64)``: the same values for the same weights (PML stores
    them transposed, ``[D, C]``), the margin in degrees as in PML. Like PML, and
    unlike the authors' insightface code, ``cos(θ + m)`` is used as is when
    ``θ + m > π`` (insightface then switches to ``cos θ − m sin m``). Weights
    start standard normal (PML's default) and train at the model's rate.

    Args:
        num_classes: number of classes ``C`` (required before the loss is called).
        embedding_dim: size ``D`` of the embeddings.
        margin: ``m`` in degrees. Defaults to ``28.6``.
        scale: ``s``. Defaults to ``64.0``.
        lr_multiplier: the weights' learning-rate multiple in
            `kerasml.models.MetricModel`. Defaults to ``1.0``.
        initializer: initializer of the weights; ``None`` for standard normal.
        name: name of the loss. Defaults to ``"arcface_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.ArcFaceLoss(num_classes=2, embedding_dim=2, margin=90.0, scale=1.0)
    >>> loss.proxies = np.eye(2)
    >>> round(float(loss(np.array([0]), np.array([[1.0, 0.0]]))), 4)  # θ_y + m = 90°: log(1 + e^0)
    0.6931

    Reference:
        Deng, Guo, Xue, Zafeiriou, "ArcFace: Additive Angular Margin Loss for
        Deep Face Recognition", CVPR 2019.
    """

    names = ("arcface", "additive_angular_margin")

    def __init__(
        self,
        num_classes=None,
        embedding_dim=None,
        margin=28.6,
        scale=64.0,
        lr_multiplier=1.0,
        initializer=None,
        name="arcface_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(num_classes, embedding_dim, margin, scale, lr_multiplier, initializer, name, reduction, dtype)


@keras.saving.register_keras_serializable(package="kerasml")
class SubCenterArcFaceLoss(_AngularMarginLoss):
    """Sub-centre ArcFace: ArcFace with K sub-centres per class, the nearest one counting.

    With ``W_c^k`` the K weights of class ``c`` (``loss.proxies`` ``[C, K, D]``),
    ``cos θ_c = max_k cos(x, W_c^k)``, then ArcFace on those ``θ_c``::

        L = mean_i −log( exp(s cos(θ_{y_i} + m)) / (exp(s cos(θ_{y_i} + m)) + Σ_{c ≠ y_i} exp(s cos θ_c)) )

    (Deng et al. 2020). Noisy samples gather around non-dominant sub-centres, so
    the dominant one stays clean. Batch convention: any labelled batch, labels
    in ``[0, num_classes)``.

    Defaults: ``K = 3``, ``m = 28.6°``, ``s = 64``, as pytorch-metric-learning
    (PML)'s ``SubCenterArcFaceLoss(num_classes, embedding_size, margin=28.6,
    scale=64, sub_centers=3)`` (same values; PML lays the weights out as
    ``[D, C·K]``). The paper's second stage (dropping samples far from the
    dominant sub-centre) is left to the user. Weights start standard normal and
    train at the model's rate.

    Args:
        num_classes: number of classes ``C`` (required before the loss is called).
        embedding_dim: size ``D`` of the embeddings.
        margin: ``m`` in degrees. Defaults to ``28.6``.
        scale: ``s``. Defaults to ``64.0``.
        sub_centers: ``K``. Defaults to ``3``.
        lr_multiplier: the weights' learning-rate multiple in
            `kerasml.models.MetricModel`. Defaults to ``1.0``.
        initializer: initializer of the weights; ``None`` for standard normal.
        name: name of the loss. Defaults to ``"sub_center_arcface_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.SubCenterArcFaceLoss(2, 2, margin=90.0, scale=1.0, sub_centers=2)
    >>> loss.proxies = [[[1.0, 0.0], [-1.0, 0.0]], [[0.0, 1.0], [0.0, -1.0]]]
    >>> round(float(loss(np.array([0]), np.array([[1.0, 0.0]]))), 4)  # nearest centres: cos 1 and 0
    0.6931

    Reference:
        Deng, Guo, Liu, Gong, Zafeiriou, "Sub-center ArcFace: Boosting Face
        Recognition by Large-Scale Noisy Web Faces", ECCV 2020.
    """

    names = ("sub_center_arcface", "subcenter_arcface")

    def __init__(
        self,
        num_classes=None,
        embedding_dim=None,
        margin=28.6,
        scale=64.0,
        sub_centers=3,
        lr_multiplier=1.0,
        initializer=None,
        name="sub_center_arcface_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        self.sub_centers = check_int("sub_centers", sub_centers, "SubCenterArcFaceLoss")
        super().__init__(num_classes, embedding_dim, margin, scale, lr_multiplier, initializer, name, reduction, dtype)

    @property
    def proxies_per_class(self):
        return self.sub_centers

    def get_config(self):
        return {**super().get_config(), "sub_centers": self.sub_centers}


# ------------------------------------------------------------------------ CosFace


def _cosface(labels, embeddings, proxies, margin, scale):
    cosine = proxy_cosine(embeddings, proxies)
    target = class_mask(labels, ops.shape(proxies)[0])
    logits = scale * (cosine - margin * ops.cast(target, cosine.dtype))
    return softmax_cross_entropy(logits, target)


def cosface_loss(labels, embeddings, proxies, margin=0.35, scale=64.0):
    """CosFace loss of a batch, functional form of `CosFaceLoss`.

    Args:
        labels: int class ids ``[B]`` in ``[0, C)``.
        embeddings: float ``[B, D]``.
        proxies: the class weights ``[C, D]``.
        margin: the cosine margin ``m``.
        scale: ``s``.

    Returns:
        The scalar loss (float32).
    """
    return _cosface(as_labels(labels), as_embeddings(embeddings), as_embeddings(proxies), float(margin), float(scale))


@keras.saving.register_keras_serializable(package="kerasml")
class CosFaceLoss(ProxyLoss):
    """CosFace (large margin cosine loss): softmax cross-entropy with ``m`` taken off the target's cosine.

    With ``θ_c`` the angle between the embedding and class weight ``W_c``::

        L = mean_i −log( exp(s (cos θ_{y_i} − m)) / (exp(s (cos θ_{y_i} − m)) + Σ_{c ≠ y_i} exp(s cos θ_c)) )

    (eq. 4 of Wang et al.). Batch convention: any labelled batch, labels in
    ``[0, num_classes)``.

    Defaults: ``m = 0.35``, ``s = 64`` (the paper's), as pytorch-metric-learning
    (PML)'s ``CosFaceLoss(num_classes, embedding_size, margin=0.35, scale=64)``
    (same values; PML stores the weights transposed). Weights start standard
    normal and train at the model's rate.

    Args:
        num_classes: number of classes ``C`` (required before the loss is called).
        embedding_dim: size ``D`` of the embeddings.
        margin: ``m``. Defaults to ``0.35``.
        scale: ``s``. Defaults to ``64.0``.
        lr_multiplier: the weights' learning-rate multiple in
            `kerasml.models.MetricModel`. Defaults to ``1.0``.
        initializer: initializer of the weights; ``None`` for standard normal.
        name: name of the loss. Defaults to ``"cosface_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.CosFaceLoss(num_classes=2, embedding_dim=2, margin=1.0, scale=1.0)
    >>> loss.proxies = np.eye(2)
    >>> round(float(loss(np.array([0]), np.array([[1.0, 0.0]]))), 4)  # logits 1 − 1 and 0: log 2
    0.6931

    Reference:
        Wang, Wang, Zhou, Ji, Gong, Zhou, Li, Liu, "CosFace: Large Margin Cosine
        Loss for Deep Face Recognition", CVPR 2018.
    """

    names = ("cosface", "large_margin_cosine")

    def __init__(
        self,
        num_classes=None,
        embedding_dim=None,
        margin=0.35,
        scale=64.0,
        lr_multiplier=1.0,
        initializer=None,
        name="cosface_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        self.margin = float(margin)
        self.scale = float(scale)
        super().__init__(num_classes, embedding_dim, lr_multiplier, initializer, name, reduction, dtype)

    def call(self, y_true, y_pred):
        return _cosface(y_true, y_pred, as_embeddings(self.proxies), self.margin, self.scale)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "scale": self.scale}
