"""Models: backbones, and the embedding models trained with or without HDML.

- `kerasml.models.backbones`: feature extractors (GoogLeNet, keras.applications, a small CNN).
- `HDMLModel`: backbone → projector → embedding, trained with HDML (or without: ``hdml=False``).
- `MetricModel`: the plain baseline (`HDMLModel` with ``hdml=False``).
"""

from kerasml.models import backbones
from kerasml.models.hdml_model import HDMLModel, MetricModel

__all__ = ["HDMLModel", "MetricModel", "backbones"]
