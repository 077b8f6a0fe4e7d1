"""kerasml: deep metric learning for Keras 3 on TensorFlow, PyTorch and JAX.

Public modules:

- :mod:`kerasml.losses`: metric losses (contrastive, triplet, lifted structure,
  N-pair, angular, divergence) usable in any ``model.compile(loss=...)``.
"""

__version__ = "0.1.0"

from kerasml import losses

__all__ = ["__version__", "losses"]
