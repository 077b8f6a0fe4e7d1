"""Models: backbones and the embedding model.

- `kerasml.models.backbones`: feature extractors (GoogLeNet, keras.applications, a small CNN).
- `MetricModel`: backbone → projector → embedding, trained on a metric loss. HDML's
  model, `kerasml.hdml.HDMLModel`, subclasses it.
- `ParameterGroupOptimizer`: one optimizer per group of variables (the models' parameter groups).
"""

from kerasml.models import backbones
from kerasml.models.metric_model import MetricModel
from kerasml.models.optimizers import ParameterGroupOptimizer

__all__ = ["MetricModel", "ParameterGroupOptimizer", "backbones"]
