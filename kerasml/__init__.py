"""kerasml: deep metric learning for Keras 3 on TensorFlow, PyTorch and JAX.

Public modules:

- :mod:`kerasml.losses`: metric losses (contrastive, triplet, lifted structure,
  N-pair, angular, divergence) usable in any ``model.compile(loss=...)``.
- :mod:`kerasml.layers`: the embedding projector and HDML's layers.
- :mod:`kerasml.hdml`: HDML's equations as functions (``pull_negatives``...).
- :mod:`kerasml.models`: backbones, `HDMLModel` and `MetricModel`.
- :mod:`kerasml.optimizers`: `ParameterGroupOptimizer` (one optimizer per variable group).
- :mod:`kerasml.data`: dataset download, HDF5 ingest, samplers and batch streams.
"""

__version__ = "0.1.0"

from kerasml import data, hdml, layers, losses, models, optimizers

__all__ = ["__version__", "data", "hdml", "layers", "losses", "models", "optimizers"]
