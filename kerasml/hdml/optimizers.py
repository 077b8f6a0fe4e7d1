"""`ParameterGroupOptimizer`: one Keras optimizer per group of variables.

HDML trains three disjoint groups from one forward pass, each with its own
optimizer (the authors: Adam at 7e-5 for backbone + projector, 1e-2 for the
generator, 1e-3 for the classifier). Keras' ``fit`` drives a single
``model.optimizer`` on every backend (TensorFlow and PyTorch call ``apply``,
JAX calls ``stateless_apply``), so this optimizer holds the group optimizers
and hands each one its own variables and gradients. The updates are exactly
those of the separate optimizers. It lives in `kerasml.models.optimizers`
(`kerasml.models.MetricModel` uses it too); this module re-exports it.
"""

from kerasml.models.optimizers import ParameterGroupOptimizer

__all__ = ["ParameterGroupOptimizer"]
