"""Deep metric learning losses for Keras 3, on TensorFlow, PyTorch and JAX.

Every loss takes ``(y_true, y_pred)`` = (int class ids ``[B]``, embeddings
``[B, D]``), returns one scalar per batch, computes in float32 with
``keras.ops`` only, and works in ``model.compile(loss=...)``. Each class has
a functional twin taking ``(labels, embeddings, **params)``.

=====================  ==========================  ============================
class                  function                    batch layout
=====================  ==========================  ============================
`ContrastiveLoss`      `contrastive_loss`          any labelled batch
`TripletLoss`          `triplet_loss`              any (``mining="all"``...) or
                                                   ``[a; p; n]`` (structured)
`LiftedStructureLoss`  `lifted_structure_loss`     any labelled batch
`NPairLoss`            `npair_loss`                ``[a_1..a_N; p_1..p_N]``
`AngularLoss`          `angular_loss`              ``[a_1..a_N; p_1..p_N]``
`DivergenceLoss`       `divergence_loss`           ``y_pred`` ``[B, M, D]``
`MultiSimilarityLoss`  `multi_similarity_loss`     any labelled batch
`CircleLoss`           `circle_loss`               any labelled batch
`SupConLoss`           `supcon_loss`               any labelled batch
`NTXentLoss`           `ntxent_loss`               any labelled batch
`TupletMarginLoss`     `tuplet_margin_loss`        any labelled batch
`FastAPLoss`           `fast_ap_loss`              any labelled batch
`ProxyAnchorLoss`      `proxy_anchor_loss`         any, labels in [0, C) (*)
`ProxyNCALoss`         `proxy_nca_loss`            any, labels in [0, C) (*)
`NormalizedSoftmaxLoss` `normalized_softmax_loss`  any, labels in [0, C) (*)
`SoftTripleLoss`       `soft_triple_loss`          any, labels in [0, C) (*)
`ArcFaceLoss`          `arcface_loss`              any, labels in [0, C) (*)
`SubCenterArcFaceLoss` `arcface_loss`              any, labels in [0, C) (*)
`CosFaceLoss`          `cosface_loss`              any, labels in [0, C) (*)
`MarginLoss`           `margin_loss`               any labelled batch (*)
`CrossBatchMemory`     (wraps a pair loss)         any labelled batch (**)
=====================  ==========================  ============================

(*) trainable parameters (proxies, class weights, ``β``) in a `LossParameters`
layer that the model must own: `kerasml.models.MetricModel` does
(see `kerasml.losses.parametric` for why ``compile(loss=...)`` alone cannot).
(**) a FIFO of past embeddings in a non-trainable `MemoryBank` layer
(``loss.memory``) that the model must own, for the same reason
(`kerasml.losses.xbm`).

The pair and triplet losses take a ``miner`` (`kerasml.losses.miners`: which
pairs or triplets to use, O(B²) memory) and, where the formula allows, a
``distance`` (`kerasml.losses.distances`: ``"euclidean"``, ``"squared"``,
``"cosine"``, ``"dot"``).

Each loss owns its batch layout (`MetricLoss.layout`, see
`kerasml.losses.layouts`) and, where HDML applies, its synthetic loss;
`catalog()` lists them all with their spec names and aliases.
"""

from kerasml.losses import distances, layouts, miners, registry
from kerasml.losses._base import HDML_CONVENTIONS, MetricLoss
from kerasml.losses.angular import AngularLoss, angular_loss
from kerasml.losses.circle import CircleLoss, circle_loss
from kerasml.losses.contrastive import ContrastiveLoss, contrastive_loss
from kerasml.losses.divergence import DivergenceLoss, divergence_loss
from kerasml.losses.fast_ap import FastAPLoss, fast_ap_loss
from kerasml.losses.layouts import Layout, check_npair_batch, check_triplet_batch
from kerasml.losses.lifted import LiftedStructureLoss, lifted_structure_loss
from kerasml.losses.margin import MarginLoss, margin_loss
from kerasml.losses.margin_softmax import ArcFaceLoss, CosFaceLoss, SubCenterArcFaceLoss, arcface_loss, cosface_loss
from kerasml.losses.multi_similarity import MultiSimilarityLoss, multi_similarity_loss
from kerasml.losses.npair import NPairLoss, npair_loss
from kerasml.losses.parametric import LossParameters, ParametricLoss, ProxyLoss
from kerasml.losses.proxy import (
    NormalizedSoftmaxLoss,
    ProxyAnchorLoss,
    ProxyNCALoss,
    SoftTripleLoss,
    normalized_softmax_loss,
    proxy_anchor_loss,
    proxy_nca_loss,
    soft_triple_loss,
)
from kerasml.losses.registry import LossEntry, Registry
from kerasml.losses.supcon import NTXentLoss, SupConLoss, ntxent_loss, supcon_loss
from kerasml.losses.triplet import TripletLoss, triplet_loss
from kerasml.losses.tuplet_margin import TupletMarginLoss, tuplet_margin_loss
from kerasml.losses.xbm import CrossBatchMemory, MemoryBank

#: Every kerasml loss, in the order the docs and ``kerasml losses`` list them.
LOSSES = (
    ContrastiveLoss,
    TripletLoss,
    LiftedStructureLoss,
    NPairLoss,
    AngularLoss,
    DivergenceLoss,
    MultiSimilarityLoss,
    CircleLoss,
    SupConLoss,
    NTXentLoss,
    TupletMarginLoss,
    FastAPLoss,
    ProxyAnchorLoss,
    ProxyNCALoss,
    NormalizedSoftmaxLoss,
    SoftTripleLoss,
    ArcFaceLoss,
    SubCenterArcFaceLoss,
    CosFaceLoss,
    MarginLoss,
)
_REGISTRY = Registry(LOSSES)
registry.set_default(_REGISTRY)


def catalog():
    """Every loss as a `LossEntry` (spec name, class, aliases, layout, HDML): one list for docs, CLI and errors.

    >>> import kerasml
    >>> [entry.name for entry in kerasml.losses.catalog()][:2]
    ['contrastive', 'triplet']
    """
    return _REGISTRY.catalog()


def loss_class(name):
    """The loss class for a spec name, alias or class name (case- and separator-insensitive).

    Raises:
        ValueError: for an unknown name, listing the known ones and the closest.

    >>> import kerasml
    >>> kerasml.losses.loss_class("NpairLoss").__name__
    'NPairLoss'
    """
    return _REGISTRY.loss_class(name)


def get(identifier):
    """Return a kerasml loss from a name, a config dict or an instance.

    Args:
        identifier: one of
            - a name, case- and separator-insensitive, with or without a
              ``Loss`` suffix: ``"npair"``, ``"NPairLoss"``, ``"n_pair"``, the
              study's ``"NpairLoss"`` and ``"Triplet"``, ``"lifted_structure"``...
              The loss gets its default parameters;
            - a dict ``{"class_name": "TripletLoss", "config": {...}}`` (what
              `keras.saving.serialize_keras_object` writes), or
              ``{"type": "triplet", **params}`` as in a kerasml spec;
            - a `keras.losses.Loss` instance, returned unchanged.

    Returns:
        A `keras.losses.Loss`.

    Raises:
        ValueError: for an unknown name, listing the known ones and the closest.

    Example:

    >>> import kerasml
    >>> kerasml.losses.get("NpairLoss").l2_reg
    0.002
    >>> kerasml.losses.get({"type": "triplet", "margin": 0.2}).margin
    0.2
    """
    return _REGISTRY.get(identifier)


__all__ = [
    "HDML_CONVENTIONS",
    "LOSSES",
    "AngularLoss",
    "ArcFaceLoss",
    "CircleLoss",
    "ContrastiveLoss",
    "CosFaceLoss",
    "CrossBatchMemory",
    "DivergenceLoss",
    "FastAPLoss",
    "Layout",
    "LiftedStructureLoss",
    "LossEntry",
    "LossParameters",
    "MarginLoss",
    "MemoryBank",
    "MetricLoss",
    "MultiSimilarityLoss",
    "NPairLoss",
    "NTXentLoss",
    "NormalizedSoftmaxLoss",
    "ParametricLoss",
    "ProxyAnchorLoss",
    "ProxyLoss",
    "ProxyNCALoss",
    "SoftTripleLoss",
    "SubCenterArcFaceLoss",
    "SupConLoss",
    "TripletLoss",
    "TupletMarginLoss",
    "angular_loss",
    "arcface_loss",
    "catalog",
    "check_npair_batch",
    "check_triplet_batch",
    "circle_loss",
    "contrastive_loss",
    "cosface_loss",
    "distances",
    "divergence_loss",
    "fast_ap_loss",
    "get",
    "layouts",
    "lifted_structure_loss",
    "loss_class",
    "margin_loss",
    "miners",
    "multi_similarity_loss",
    "normalized_softmax_loss",
    "npair_loss",
    "ntxent_loss",
    "proxy_anchor_loss",
    "proxy_nca_loss",
    "soft_triple_loss",
    "supcon_loss",
    "triplet_loss",
    "tuplet_margin_loss",
]
