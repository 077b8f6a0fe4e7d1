"""General Keras layers of kerasml.

- `EmbeddingProjector`: features ``y`` → embeddings ``z`` (batch-norm + linear).
- `InputNormalization`: RGB pixels on the 0–255 scale (uint8 or float) → the backbone's input.
- `kerasml.layers.batch_norm`: the batch-norm helper shared by the projector and
  HDML's generator (statistics updates that can be switched off per call).

HDML's layers (`BlockMean`, `HardnessAwareAugmentation`, `HDMLGenerator`) live in `kerasml.hdml`.
"""

from kerasml.layers.input_normalization import InputNormalization
from kerasml.layers.projector import EmbeddingProjector

__all__ = ["EmbeddingProjector", "InputNormalization"]
