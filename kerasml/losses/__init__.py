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
=====================  ==========================  ============================

Each loss owns its batch layout (`MetricLoss.layout`, see
`kerasml.losses.layouts`) and, where HDML applies, its synthetic loss;
`catalog()` lists them all with their spec names and aliases.
"""

from kerasml.losses import layouts
from kerasml.losses._base import MetricLoss
from kerasml.losses.angular import AngularLoss, angular_loss
from kerasml.losses.contrastive import ContrastiveLoss, contrastive_loss
from kerasml.losses.divergence import DivergenceLoss, divergence_loss
from kerasml.losses.layouts import Layout, check_npair_batch, check_triplet_batch
from kerasml.losses.lifted import LiftedStructureLoss, lifted_structure_loss
from kerasml.losses.npair import NPairLoss, npair_loss
from kerasml.losses.registry import LossEntry, Registry
from kerasml.losses.triplet import TripletLoss, triplet_loss

#: Every kerasml loss, in the order the docs and ``kerasml losses`` list them.
LOSSES = (ContrastiveLoss, TripletLoss, LiftedStructureLoss, NPairLoss, AngularLoss, DivergenceLoss)
_REGISTRY = Registry(LOSSES)


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
    "LOSSES",
    "AngularLoss",
    "ContrastiveLoss",
    "DivergenceLoss",
    "Layout",
    "LiftedStructureLoss",
    "LossEntry",
    "MetricLoss",
    "NPairLoss",
    "TripletLoss",
    "angular_loss",
    "catalog",
    "check_npair_batch",
    "check_triplet_batch",
    "contrastive_loss",
    "divergence_loss",
    "get",
    "layouts",
    "lifted_structure_loss",
    "loss_class",
    "npair_loss",
    "triplet_loss",
]
