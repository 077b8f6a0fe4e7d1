"""Keras layers of kerasml: the embedding projector and HDML's building blocks.

- `EmbeddingProjector`: features ``y`` → embeddings ``z`` (batch-norm + linear).
- `HardnessAwareAugmentation`: HDML eq. (1), with ``J_avg`` as state.
- `HDMLGenerator`: HDML's generator, embeddings → features.
- `BlockMean`: the 64-step block mean behind ``J_avg`` and ``J̄_gen``.
"""

from kerasml.layers.hdml import BlockMean, HardnessAwareAugmentation, HDMLGenerator
from kerasml.layers.projector import EmbeddingProjector

__all__ = ["BlockMean", "EmbeddingProjector", "HDMLGenerator", "HardnessAwareAugmentation"]
