"""Distances between embeddings as objects that the pair and triplet losses take.

A `Distance` turns embeddings ``[B, D]`` into a ``[B, C]`` matrix. Two kinds:

- distances (`Euclidean`, `SquaredEuclidean`): small means close;
- similarities (`Cosine`, `DotProduct`): large means close (``is_similarity``).

Losses and miners only need the order "closer / farther", so they work on the
*dissimilarity* ``dissimilarity(matrix)``: the distance itself, or minus the
similarity. A triplet hinge ``D_ap − D_an + m`` then reads ``S_an − S_ap + m``
for a similarity, as in pytorch-metric-learning (PML). Margins and thresholds
stay in the units of the distance the loss uses.

- ``"euclidean"``: `Euclidean`, ``‖x − y‖`` (PML: ``LpDistance(normalize_embeddings=False)``);
- ``"squared"``: `SquaredEuclidean`, ``‖x − y‖²`` (PML: the same with ``power=2``);
- ``"cosine"``: `Cosine`, ``x·y / (‖x‖ ‖y‖)`` (PML: ``CosineSimilarity()``);
- ``"dot"``: `DotProduct`, ``x·y`` (PML: ``DotProductSimilarity(normalize_embeddings=False)``).

PML normalises embeddings by default for every distance; here only `Cosine`
does, and ``normalize=True`` asks for it on the others.

>>> import numpy as np
>>> from kerasml.losses import distances
>>> x = np.array([[3.0, 4.0], [0.0, 0.0]])
>>> np.round(np.asarray(distances.get("euclidean").pairwise(x)), 4).tolist()
[[0.0, 5.0], [5.0, 0.0]]
>>> distances.get("cosine").is_similarity
True
"""

import keras
from keras import ops

from kerasml._validation import did_you_mean
from kerasml.losses.pairwise import (
    as_embeddings,
    l2_normalize,
    pairwise_squared_distances,
    safe_sqrt,
)


class Distance:
    """Base class: a pairwise distance or similarity of embeddings.

    Subclasses set ``name`` and ``is_similarity`` and implement ``_pairwise``
    (and ``_paired`` where a faster row-wise form exists).

    Args:
        normalize: scale embeddings to unit norm first. Defaults to ``False``.
    """

    #: the short name `get` accepts (and configs write).
    name = ""
    #: ``True`` when larger values mean closer (a similarity).
    is_similarity = False

    def __init__(self, normalize=False):
        self.normalize = bool(normalize)

    def _prepare(self, x):
        x = as_embeddings(x)
        return l2_normalize(x) if self.normalize else x

    def pairwise(self, x, y=None):
        """The ``[B, C]`` matrix between the rows of ``x`` ``[B, D]`` and ``y`` ``[C, D]`` (default ``x``).

        When ``y`` is omitted the diagonal is exact (0 for a distance).
        """
        x = self._prepare(x)
        return self._pairwise(x, None if y is None else self._prepare(y))

    def paired(self, x, y):
        """The ``[B]`` values between row ``i`` of ``x`` and row ``i`` of ``y``."""
        return self._paired(self._prepare(x), self._prepare(y))

    def dissimilarity(self, matrix):
        """``matrix`` for a distance, ``−matrix`` for a similarity: small always means close."""
        return -matrix if self.is_similarity else matrix

    def _pairwise(self, x, y):
        raise NotImplementedError

    def _paired(self, x, y):
        raise NotImplementedError

    def get_config(self):
        """The constructor arguments."""
        return {"normalize": self.normalize}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self):
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


@keras.saving.register_keras_serializable(package="kerasml")
class Euclidean(Distance):
    """Euclidean distance ``‖x − y‖`` (gradient-safe at 0).

    Args:
        normalize: scale embeddings to unit norm first (PML's
            ``LpDistance()`` default). Defaults to ``False``.
    """

    name = "euclidean"

    def _pairwise(self, x, y):
        return safe_sqrt(pairwise_squared_distances(x, y))

    def _paired(self, x, y):
        return safe_sqrt(ops.sum(ops.square(x - y), axis=-1))


@keras.saving.register_keras_serializable(package="kerasml")
class SquaredEuclidean(Distance):
    """Squared Euclidean distance ``‖x − y‖²``.

    Args:
        normalize: scale embeddings to unit norm first. Defaults to ``False``.
    """

    name = "squared"

    def _pairwise(self, x, y):
        return pairwise_squared_distances(x, y)

    def _paired(self, x, y):
        return ops.sum(ops.square(x - y), axis=-1)


@keras.saving.register_keras_serializable(package="kerasml")
class Cosine(Distance):
    """Cosine similarity ``x·y / (‖x‖ ‖y‖)`` in ``[−1, 1]`` (a zero row has similarity 0)."""

    name = "cosine"
    is_similarity = True

    def __init__(self):
        super().__init__(normalize=True)

    def _pairwise(self, x, y):
        return ops.matmul(x, ops.transpose(x if y is None else y))

    def _paired(self, x, y):
        return ops.sum(x * y, axis=-1)

    def get_config(self):
        return {}


@keras.saving.register_keras_serializable(package="kerasml")
class DotProduct(Distance):
    """Dot-product similarity ``x·y``.

    Args:
        normalize: scale embeddings to unit norm first (then it is the
            cosine similarity). Defaults to ``False``.
    """

    name = "dot"
    is_similarity = True

    def _pairwise(self, x, y):
        return ops.matmul(x, ops.transpose(x if y is None else y))

    def _paired(self, x, y):
        return ops.sum(x * y, axis=-1)


#: name → class of every distance.
DISTANCES = {cls.name: cls for cls in (Euclidean, SquaredEuclidean, Cosine, DotProduct)}


def _from_table(kind, table, identifier, argument, base):
    """A `base` instance from a name, a ``{"type": name, **config}`` dict or an instance (distances, miners)."""
    if isinstance(identifier, base):
        return identifier
    if isinstance(identifier, str) and identifier in table:
        return table[identifier]()
    if isinstance(identifier, dict) and identifier.get("type") in table:
        config = {key: value for key, value in identifier.items() if key != "type"}
        return table[identifier["type"]].from_config(config)
    if isinstance(identifier, dict) and "class_name" in identifier:
        return keras.saving.deserialize_keras_object(identifier)
    word = identifier if isinstance(identifier, str) else identifier.get("type") if isinstance(identifier, dict) else ""
    hint = did_you_mean(word, list(table)) if isinstance(word, str) and word else ""
    raise ValueError(
        f"Invalid value for argument `{argument}`. Expected one of {tuple(table)}, a dict "
        f'{{"type": name, ...arguments}} or a `kerasml.losses.{kind}` instance. '
        f"Received: {argument}={identifier!r}.{hint}"
    )


def serialize(obj):
    """A `Distance` or `Miner` as a config value: its name if it has default arguments, else a dict.

    The dict ``{"type": name, **arguments}`` is what a kerasml spec writes under ``[loss]``
    (``distance = {type = "euclidean", normalize = true}``); `get` reads both back.
    """
    if obj is None:
        return None
    config = obj.get_config()
    if config == type(obj)().get_config():
        return obj.name
    return {"type": obj.name, **config}


def get(identifier, argument="distance"):
    """A `Distance` from a name (``"euclidean"``, ``"squared"``, ``"cosine"``, ``"dot"``), a dict or an instance.

    Args:
        identifier: a name, ``{"type": name, **arguments}``, a Keras config
            dict, or a `Distance` (returned unchanged).
        argument: the argument name used in the error message.

    Raises:
        ValueError: for anything else, naming the accepted values.
    """
    return _from_table("distances.Distance", DISTANCES, identifier, argument, Distance)
