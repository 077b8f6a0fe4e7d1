"""Proxy-based losses: Proxy-Anchor, ProxyNCA, normalised softmax and SoftTriple.

Each learns proxies (one or K vectors per class, ``loss.proxies``) that are
trained with the model: see `kerasml.losses.parametric` for how a model owns
them (`kerasml.models.MetricModel` does it for you). Embeddings and proxies are
L2-normalised inside the loss; ``s(x, p)`` is their cosine similarity.
"""

import keras
from keras import ops

from kerasml._validation import check_int
from kerasml.losses.pairwise import (
    as_embeddings,
    as_labels,
    l2_normalize,
    masked_logsumexp,
    masked_mean,
    pairwise_squared_distances,
)
from kerasml.losses.parametric import ProxyLoss, class_mask, proxy_cosine, softmax_cross_entropy


def _num_classes(proxies):
    return ops.shape(proxies)[0]


# ----------------------------------------------------------------- Proxy-Anchor


def _proxy_anchor(labels, embeddings, proxies, margin, alpha):
    cosine = proxy_cosine(embeddings, proxies)  # [B, C]
    positive = class_mask(labels, _num_classes(proxies))
    negative = ops.logical_not(positive)
    # log(1 + Σ_x exp(·)) over the batch axis = softplus(masked logsumexp); an empty set gives 0.
    positive_term = ops.softplus(masked_logsumexp(-alpha * (cosine - margin), positive, axis=0))  # [C]
    negative_term = ops.softplus(masked_logsumexp(alpha * (cosine + margin), negative, axis=0))  # [C]
    return masked_mean(positive_term, ops.any(positive, axis=0)) + ops.mean(negative_term)


def proxy_anchor_loss(labels, embeddings, proxies, margin=0.1, alpha=32.0):
    """Proxy-Anchor loss of a batch, functional form of `ProxyAnchorLoss`.

    Args:
        labels: int class ids ``[B]`` in ``[0, C)``.
        embeddings: float ``[B, D]``.
        proxies: float ``[C, D]``.
        margin: ``δ``.
        alpha: ``α``.

    Returns:
        The scalar loss (float32).
    """
    return _proxy_anchor(
        as_labels(labels), as_embeddings(embeddings), as_embeddings(proxies), float(margin), float(alpha)
    )


@keras.saving.register_keras_serializable(package="kerasml")
class ProxyAnchorLoss(ProxyLoss):
    """Proxy-Anchor loss: each class proxy is an anchor pulling its samples and pushing the others.

    With ``s(x, p)`` the cosine similarity, ``P`` all ``C`` proxies, ``P⁺`` the
    proxies of the classes present in the batch, ``X_p⁺`` the samples of
    proxy ``p``'s class and ``X_p⁻`` the others::

        L = 1/|P⁺| Σ_{p ∈ P⁺} log(1 + Σ_{x ∈ X_p⁺} exp(−α (s(x, p) − δ)))
          + 1/|P|  Σ_{p ∈ P}  log(1 + Σ_{x ∈ X_p⁻} exp( α (s(x, p) + δ)))

    This is eq. (4) of Kim et al. Batch convention: any labelled batch, labels
    in ``[0, num_classes)`` (checked on concrete labels; in a traced graph an
    out-of-range label has no proxy and only enters negative terms).

    Defaults follow the paper and pytorch-metric-learning (PML)'s
    ``ProxyAnchorLoss(num_classes, embedding_size, margin=0.1, alpha=32)``, which
    gives the same values for the same proxies. The proxies start as the
    authors' He-normal (std ``sqrt(2/C)``) and train at ``lr_multiplier = 100``
    times the model's learning rate, as in the authors' code.

    Args:
        num_classes: number of classes ``C``. Required before the loss is
            called (here or through `configure`).
        embedding_dim: size ``D`` of the embeddings (`kerasml.models.MetricModel`
            sets it).
        margin: ``δ``. Defaults to ``0.1``.
        alpha: ``α``, the scale. Defaults to ``32.0``.
        lr_multiplier: `kerasml.models.MetricModel` trains the proxies at this
            multiple of its learning rate. Defaults to ``100.0``.
        initializer: initializer of the proxies; ``None`` for He-normal.
        name: name of the loss. Defaults to ``"proxy_anchor_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.ProxyAnchorLoss(num_classes=2, embedding_dim=2)
    >>> loss.proxies = np.eye(2)                  # class 0 at e1, class 1 at e2
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0]])    # each sample on its proxy
    >>> round(float(loss(np.array([0, 1]), x)), 4)  # log(1 + e^{32·0.1}): negatives at s = 0
    3.24

    Train it in your own model (Keras trains only a model's variables, see
    `kerasml.losses.parametric`):
    ``kerasml.models.MetricModel(my_model, embedding_dim=D, loss=ProxyAnchorLoss(num_classes=C))``.

    Reference:
        Kim, Kim, Cho, Kwak, "Proxy Anchor Loss for Deep Metric Learning", CVPR 2020.
    """

    names = ("proxy_anchor",)

    def __init__(
        self,
        num_classes=None,
        embedding_dim=None,
        margin=0.1,
        alpha=32.0,
        lr_multiplier=100.0,
        initializer=None,
        name="proxy_anchor_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        self.margin = float(margin)
        self.alpha = float(alpha)
        super().__init__(num_classes, embedding_dim, lr_multiplier, initializer, name, reduction, dtype)

    def default_initializer(self, name):
        return keras.initializers.VarianceScaling(2.0, mode="fan_in", distribution="untruncated_normal")

    def call(self, y_true, y_pred):
        return _proxy_anchor(y_true, y_pred, as_embeddings(self.proxies), self.margin, self.alpha)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin, "alpha": self.alpha}


# ---------------------------------------------------------------------- ProxyNCA


def _proxy_nca(labels, embeddings, proxies, softmax_scale):
    x = l2_normalize(embeddings)
    p = l2_normalize(proxies)
    logits = -softmax_scale * pairwise_squared_distances(x, p)  # [B, C]
    return softmax_cross_entropy(logits, class_mask(labels, _num_classes(proxies)))


def proxy_nca_loss(labels, embeddings, proxies, softmax_scale=1.0):
    """ProxyNCA loss of a batch, functional form of `ProxyNCALoss`.

    Args:
        labels: int class ids ``[B]`` in ``[0, C)``.
        embeddings: float ``[B, D]``.
        proxies: float ``[C, D]``.
        softmax_scale: ``s``, multiplies the negative squared distances.

    Returns:
        The scalar loss (float32).
    """
    return _proxy_nca(as_labels(labels), as_embeddings(embeddings), as_embeddings(proxies), float(softmax_scale))


@keras.saving.register_keras_serializable(package="kerasml")
class ProxyNCALoss(ProxyLoss):
    """ProxyNCA: neighbourhood component analysis against one proxy per class.

    With ``x̂``, ``p̂`` the L2-normalised embedding and proxies and
    ``d(x, p) = ‖x̂ − p̂‖²``::

        L = mean_i −log( exp(−s·d(x_i, p_{y_i})) / Σ_{c} exp(−s·d(x_i, p_c)) )

    Batch convention: any labelled batch, labels in ``[0, num_classes)``.

    Conventions: the sum of the denominator runs over every proxy, the positive
    included, as in pytorch-metric-learning (PML)'s ``ProxyNCALoss(num_classes,
    embedding_size, softmax_scale=1)`` (same values) and ProxyNCA++. Movshovitz-
    Attias et al. leave the positive out of the denominator (the loss can then be
    negative). ``softmax_scale = 1`` is the paper's and PML's; ProxyNCA++ uses a
    temperature of 1/9, i.e. ``softmax_scale=9``. Proxies start standard normal
    and train at ``lr_multiplier = 100`` times the model's rate, the usual
    setting of proxy losses.

    Args:
        num_classes: number of classes ``C`` (required before the loss is called).
        embedding_dim: size ``D`` of the embeddings.
        softmax_scale: ``s``. Defaults to ``1.0``.
        lr_multiplier: the proxies' learning-rate multiple in
            `kerasml.models.MetricModel`. Defaults to ``100.0``.
        initializer: initializer of the proxies; ``None`` for standard normal.
        name: name of the loss. Defaults to ``"proxy_nca_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.ProxyNCALoss(num_classes=2, embedding_dim=2)
    >>> loss.proxies = np.eye(2)
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> round(float(loss(np.array([0, 1]), x)), 4)  # log(1 + e^{-2}): d = 0 to its proxy, 2 to the other
    0.1269

    Reference:
        Movshovitz-Attias, Toshev, Leung, Ioffe, Singh, "No Fuss Distance Metric
        Learning using Proxies", ICCV 2017.
    """

    names = ("proxy_nca",)

    def __init__(
        self,
        num_classes=None,
        embedding_dim=None,
        softmax_scale=1.0,
        lr_multiplier=100.0,
        initializer=None,
        name="proxy_nca_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        self.softmax_scale = float(softmax_scale)
        super().__init__(num_classes, embedding_dim, lr_multiplier, initializer, name, reduction, dtype)

    def call(self, y_true, y_pred):
        return _proxy_nca(y_true, y_pred, as_embeddings(self.proxies), self.softmax_scale)

    def get_config(self):
        return {**super().get_config(), "softmax_scale": self.softmax_scale}


# ------------------------------------------------------------ normalised softmax


def _normalized_softmax(labels, embeddings, proxies, temperature):
    logits = proxy_cosine(embeddings, proxies) / temperature
    return softmax_cross_entropy(logits, class_mask(labels, _num_classes(proxies)))


def normalized_softmax_loss(labels, embeddings, proxies, temperature=0.05):
    """Normalised softmax loss of a batch, functional form of `NormalizedSoftmaxLoss`.

    Args:
        labels: int class ids ``[B]`` in ``[0, C)``.
        embeddings: float ``[B, D]``.
        proxies: float ``[C, D]`` (the class weights).
        temperature: ``T``.

    Returns:
        The scalar loss (float32).
    """
    return _normalized_softmax(as_labels(labels), as_embeddings(embeddings), as_embeddings(proxies), float(temperature))


@keras.saving.register_keras_serializable(package="kerasml")
class NormalizedSoftmaxLoss(ProxyLoss):
    """Normalised softmax (NormSoftmax): softmax cross-entropy of cosine similarities over a temperature.

    With ``s(x, p)`` the cosine similarity and ``p_c`` the class weights (proxies)::

        L = mean_i −log( exp(s(x_i, p_{y_i}) / T) / Σ_c exp(s(x_i, p_c) / T) )

    Batch convention: any labelled batch, labels in ``[0, num_classes)``.

    Defaults: ``T = 0.05`` as Zhai & Wu and pytorch-metric-learning (PML)'s
    ``NormalizedSoftmaxLoss(num_classes, embedding_size, temperature=0.05)``
    (same values; PML stores the weights transposed, ``[D, C]``). Weights start
    standard normal and train at the model's rate (``lr_multiplier = 1``).

    Args:
        num_classes: number of classes ``C`` (required before the loss is called).
        embedding_dim: size ``D`` of the embeddings.
        temperature: ``T``. Defaults to ``0.05``.
        lr_multiplier: the weights' learning-rate multiple in
            `kerasml.models.MetricModel`. Defaults to ``1.0``.
        initializer: initializer of the weights; ``None`` for standard normal.
        name: name of the loss. Defaults to ``"normalized_softmax_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.NormalizedSoftmaxLoss(num_classes=2, embedding_dim=2, temperature=1.0)
    >>> loss.proxies = np.eye(2)
    >>> round(float(loss(np.array([0]), np.array([[1.0, 0.0]]))), 4)  # log(1 + e^{-1})
    0.3133

    Reference:
        Zhai, Wu, "Classification is a Strong Baseline for Deep Metric Learning", BMVC 2019.
    """

    names = ("normalized_softmax", "norm_softmax")

    def __init__(
        self,
        num_classes=None,
        embedding_dim=None,
        temperature=0.05,
        lr_multiplier=1.0,
        initializer=None,
        name="normalized_softmax_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        if not float(temperature) > 0:
            raise ValueError(
                "Invalid value for argument `temperature` of NormalizedSoftmaxLoss. Expected a positive float. "
                f"Received: temperature={temperature!r}"
            )
        self.temperature = float(temperature)
        super().__init__(num_classes, embedding_dim, lr_multiplier, initializer, name, reduction, dtype)

    def call(self, y_true, y_pred):
        return _normalized_softmax(y_true, y_pred, as_embeddings(self.proxies), self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


# -------------------------------------------------------------------- SoftTriple


def _soft_triple(labels, embeddings, proxies, la, gamma, margin, tau):
    cosine = proxy_cosine(embeddings, proxies)  # [B, C, K]
    if ops.shape(proxies)[1] == 1:
        similarity = cosine[..., 0]  # [B, C]
    else:
        similarity = ops.sum(ops.softmax(cosine / gamma, axis=-1) * cosine, axis=-1)  # [B, C]
    target = class_mask(labels, _num_classes(proxies))
    logits = la * (similarity - margin * ops.cast(target, similarity.dtype))
    loss = softmax_cross_entropy(logits, target)
    k = ops.shape(proxies)[1]
    if tau > 0 and k > 1:
        loss = loss + tau * center_spread(proxies)
    return loss


def center_spread(proxies):
    """SoftTriple's regulariser ``R``: mean distance between the centres of each class.

    ``Σ_c Σ_{s<t} sqrt(2 + 1e-5 − 2 ŵ_c^s·ŵ_c^t) / (C K (K − 1))`` for centres
    ``[C, K, D]`` (``‖ŵ^s − ŵ^t‖`` of unit vectors; 1e-5 keeps the gradient finite).
    """
    c, k = ops.shape(proxies)[0], ops.shape(proxies)[1]
    w = l2_normalize(proxies)
    gram = ops.matmul(w, ops.transpose(w, (0, 2, 1)))  # [C, K, K]
    index = ops.arange(k)
    upper = ops.expand_dims(index, 1) < ops.expand_dims(index, 0)  # s < t
    distance = ops.sqrt(ops.maximum(2.0 + 1e-5 - 2.0 * gram, 1e-5))
    return ops.sum(ops.where(upper, distance, 0.0)) / float(c * k * (k - 1))


def soft_triple_loss(labels, embeddings, proxies, la=20.0, gamma=0.1, margin=0.01, tau=0.2):
    """SoftTriple loss of a batch, functional form of `SoftTripleLoss`.

    Args:
        labels: int class ids ``[B]`` in ``[0, C)``.
        embeddings: float ``[B, D]``.
        proxies: float ``[C, K, D]``: the K centres of each class.
        la: ``λ``, the scale of the logits.
        gamma: ``γ``, the temperature of the softmax over a class's centres.
        margin: ``δ``.
        tau: ``τ``, the weight of the centre regulariser (`center_spread`).

    Returns:
        The scalar loss (float32).
    """
    proxies = as_embeddings(proxies)
    if len(ops.shape(proxies)) != 3:
        raise ValueError(
            "Invalid value for argument `proxies` of soft_triple_loss. Expected a [C, K, D] array of K centres "
            f"per class. Received: an array of shape {tuple(ops.shape(proxies))}"
        )
    return _soft_triple(
        as_labels(labels), as_embeddings(embeddings), proxies, float(la), float(gamma), float(margin), float(tau)
    )


@keras.saving.register_keras_serializable(package="kerasml")
class SoftTripleLoss(ProxyLoss):
    """SoftTriple: a softmax over classes, each represented by K centres.

    With ``ŵ_c^k`` the normalised centres (``loss.proxies`` ``[C, K, D]``) and
    ``x̂`` the normalised embedding, the similarity to class ``c`` is a soft
    maximum over its centres::

        S_c(x) = Σ_k softmax_k(x̂·ŵ_c^k / γ) · x̂·ŵ_c^k
        L = mean_i −log( exp(λ (S_{y_i} − δ)) / (exp(λ (S_{y_i} − δ)) + Σ_{c ≠ y_i} exp(λ S_c)) )
            + τ · R,   R = Σ_c Σ_{s<t} ‖ŵ_c^s − ŵ_c^t‖ / (C K (K − 1))

    (eq. 7–9 of Qian et al.; ``R`` is `center_spread`). Batch convention: any
    labelled batch, labels in ``[0, num_classes)``.

    Defaults are the paper's: ``K = 10``, ``λ = 20``, ``γ = 0.1``, ``δ = 0.01``,
    ``τ = 0.2``, and the centres train at ``lr_multiplier = 100`` times the
    model's rate as in the authors' code. pytorch-metric-learning (PML)'s
    ``SoftTripleLoss(num_classes, embedding_size, centers_per_class=10, la=20,
    gamma=0.1, margin=0.01)`` leaves ``R`` out (``tau=0`` here gives its values).
    The adaptive pruning of centres in the paper is not implemented.

    Args:
        num_classes: number of classes ``C`` (required before the loss is called).
        embedding_dim: size ``D`` of the embeddings.
        centers_per_class: ``K``. Defaults to ``10``.
        la: ``λ``. Defaults to ``20.0``.
        gamma: ``γ``. Defaults to ``0.1``.
        margin: ``δ``. Defaults to ``0.01``.
        tau: ``τ``. Defaults to ``0.2``.
        lr_multiplier: the centres' learning-rate multiple in
            `kerasml.models.MetricModel`. Defaults to ``100.0``.
        initializer: initializer of the centres; ``None`` for standard normal.
        name: name of the loss. Defaults to ``"soft_triple_loss"``.
        reduction: accepted for Keras compatibility (the loss is a scalar).
        dtype: dtype of the returned value; computation is float32.

    Example:

    >>> import numpy as np, kerasml
    >>> loss = kerasml.losses.SoftTripleLoss(num_classes=2, embedding_dim=2, centers_per_class=1, la=1.0, margin=0.0)
    >>> loss.proxies = np.eye(2)[:, None, :]      # one centre per class
    >>> round(float(loss(np.array([0]), np.array([[1.0, 0.0]]))), 4)  # log(1 + e^{-1})
    0.3133

    Reference:
        Qian, Shang, Sun, Hu, Li, Jin, "SoftTriple Loss: Deep Metric Learning
        Without Triplet Sampling", ICCV 2019.
    """

    names = ("soft_triple",)

    def __init__(
        self,
        num_classes=None,
        embedding_dim=None,
        centers_per_class=10,
        la=20.0,
        gamma=0.1,
        margin=0.01,
        tau=0.2,
        lr_multiplier=100.0,
        initializer=None,
        name="soft_triple_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        centers_per_class = check_int("centers_per_class", centers_per_class, "SoftTripleLoss")
        if not float(gamma) > 0:
            raise ValueError(
                "Invalid value for argument `gamma` of SoftTripleLoss. Expected a positive float. "
                f"Received: gamma={gamma!r}"
            )
        self.centers_per_class = int(centers_per_class)
        self.la, self.gamma, self.margin, self.tau = float(la), float(gamma), float(margin), float(tau)
        super().__init__(num_classes, embedding_dim, lr_multiplier, initializer, name, reduction, dtype)

    @property
    def proxies_per_class(self):
        return self.centers_per_class

    def call(self, y_true, y_pred):
        proxies = as_embeddings(self.proxies)
        return _soft_triple(y_true, y_pred, proxies, self.la, self.gamma, self.margin, self.tau)

    def get_config(self):
        return {
            **super().get_config(),
            "centers_per_class": self.centers_per_class,
            "la": self.la,
            "gamma": self.gamma,
            "margin": self.margin,
            "tau": self.tau,
        }
