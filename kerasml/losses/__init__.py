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
"""

import difflib
import re

import keras

from kerasml.losses._base import MetricLoss
from kerasml.losses._layouts import check_npair_batch, check_triplet_batch
from kerasml.losses.angular import AngularLoss, angular_loss
from kerasml.losses.contrastive import ContrastiveLoss, contrastive_loss
from kerasml.losses.divergence import DivergenceLoss, divergence_loss
from kerasml.losses.lifted import LiftedStructureLoss, lifted_structure_loss
from kerasml.losses.npair import NPairLoss, npair_loss
from kerasml.losses.triplet import TripletLoss, triplet_loss

_CLASSES = {
    cls.__name__: cls
    for cls in (ContrastiveLoss, TripletLoss, LiftedStructureLoss, NPairLoss, AngularLoss, DivergenceLoss)
}

# Keys are names lower-cased with "_", "-", " " and a trailing "loss" removed.
# The study's spellings ("Triplet", "NpairLoss", "LiftedStructLoss"...) reduce to these.
_ALIASES = {
    "contrastive": ContrastiveLoss,
    "triplet": TripletLoss,
    "liftedstructure": LiftedStructureLoss,
    "liftedstruct": LiftedStructureLoss,
    "lifted": LiftedStructureLoss,
    "npair": NPairLoss,
    "npairs": NPairLoss,
    "angular": AngularLoss,
    "divergence": DivergenceLoss,
}


def _key(name):
    key = re.sub(r"[\s_\-]", "", name).lower()
    return key[: -len("loss")] if key.endswith("loss") and len(key) > 4 else key


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
    if isinstance(identifier, keras.losses.Loss):
        return identifier
    if isinstance(identifier, str):
        return _class_for(identifier)()
    if isinstance(identifier, dict):
        if "type" in identifier:
            params = {k: v for k, v in identifier.items() if k != "type"}
            return _class_for(identifier["type"])(**params)
        if "class_name" in identifier:
            cls = _class_for(identifier["class_name"])
            return cls.from_config(dict(identifier.get("config", {})))
    raise ValueError(
        "Invalid value for argument `identifier`. Expected a loss name, a config "
        "dict with 'class_name' or 'type', or a keras.losses.Loss. "
        f"Received: identifier={identifier!r}"
    )


def _class_for(name):
    if name in _CLASSES:
        return _CLASSES[name]
    cls = _ALIASES.get(_key(str(name)))
    if cls is not None:
        return cls
    known = sorted(_ALIASES)
    close = difflib.get_close_matches(_key(str(name)), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown kerasml loss {name!r}. Known names: {', '.join(known)}.{hint}")


__all__ = [
    "AngularLoss",
    "ContrastiveLoss",
    "DivergenceLoss",
    "LiftedStructureLoss",
    "MetricLoss",
    "NPairLoss",
    "TripletLoss",
    "angular_loss",
    "check_npair_batch",
    "check_triplet_batch",
    "contrastive_loss",
    "divergence_loss",
    "get",
    "lifted_structure_loss",
    "npair_loss",
    "triplet_loss",
]
