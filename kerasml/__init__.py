"""kerasml: deep metric learning for Keras 3 on TensorFlow, PyTorch and JAX.

Public modules (imported on first use, so ``import kerasml`` and the ``kerasml`` command
start without loading Keras or a framework):

- :mod:`kerasml.losses`: metric losses (contrastive, triplet, lifted structure,
  N-pair, angular, divergence) usable in any ``model.compile(loss=...)``.
- :mod:`kerasml.layers`: the embedding projector.
- :mod:`kerasml.models`: backbones and `MetricModel`.
- :mod:`kerasml.hdml`: HDML (`HDMLModel`, its layers, equations and group optimizer).
- :mod:`kerasml.preprocessing`: the image normalisations.
- :mod:`kerasml.data`: dataset download, HDF5 ingest, samplers and batch streams.
- :mod:`kerasml.evaluation`: Recall@K, NMI and F1 of embeddings.
- :mod:`kerasml.spec`, :mod:`kerasml.experiment`, :mod:`kerasml.reporting`: TOML experiment
  specs, training runs and their reports.

`kerasml.MetricModel` and `kerasml.HDMLModel` are shortcuts to the two models.
"""

import importlib
from typing import TYPE_CHECKING

from kerasml._version import __version__

_SUBMODULES = (
    "data",
    "distribution",
    "evaluation",
    "experiment",
    "hdml",
    "layers",
    "losses",
    "models",
    "preprocessing",
    "reporting",
    "spec",
)
_SHORTCUTS = {"HDMLModel": "kerasml.hdml", "MetricModel": "kerasml.models"}

__all__ = [
    "HDMLModel",
    "MetricModel",
    "__version__",
    "data",
    "distribution",
    "evaluation",
    "experiment",
    "hdml",
    "layers",
    "losses",
    "models",
    "preprocessing",
    "reporting",
    "spec",
]

if TYPE_CHECKING:  # what static tools see; at run time `__getattr__` imports on first access
    from kerasml import (
        data,
        distribution,
        evaluation,
        experiment,
        hdml,
        layers,
        losses,
        models,
        preprocessing,
        reporting,
        spec,
    )
    from kerasml.hdml import HDMLModel
    from kerasml.models import MetricModel


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"kerasml.{name}")
    if name in _SHORTCUTS:
        value = getattr(importlib.import_module(_SHORTCUTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kerasml' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
