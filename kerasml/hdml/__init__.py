"""Hardness-aware deep metric learning (HDML, Zheng et al., CVPR 2019), in one package.

- `kerasml.hdml.ops`: the equations as ``keras.ops`` functions — eq. (1)
  `pull_negatives` / `pull_npair_negatives` / `pull_pair_negatives` (every
  anchor–negative pair of any labelled batch, for pair-based losses) with ``λ₀ = exp(−α/J_avg)``
  (`hardness_factor`), eq. (2) `metric_objective` with ``w = exp(−β/J̄_gen)``
  (`synthetic_weight`), `reconstruction_loss`, `soft_cross_entropy`,
  `generator_loss`, and `synthesis_layout` (asks the loss).
- `kerasml.hdml.layers`: `BlockMean` (J_avg, J̄_gen), `HardnessAwareAugmentation`
  (eq. 1 with J_avg as state), `HDMLGenerator`.
- `kerasml.hdml.model`: `HDMLModel`, a `kerasml.models.MetricModel` plus HDML's branch.
- `kerasml.hdml.optimizers`: `ParameterGroupOptimizer` (one optimizer per group).
- `kerasml.hdml.conventions`: ``"kerasml"`` (the paper's step, default) and
  ``"authors"`` (the HDML authors' code exactly), the decisions `HDMLModel`
  asks its convention (``HDMLModel(..., convention=...)``, docs/hdml.md).

Each base loss computes its own synthetic loss ``J_syn``
(`kerasml.losses.MetricLoss.synthetic_loss`).
"""

from kerasml.hdml.conventions import CONVENTIONS, AuthorsConvention, KerasmlConvention
from kerasml.hdml.layers import BlockMean, HardnessAwareAugmentation, HDMLGenerator
from kerasml.hdml.model import CLASSIFIER, GENERATOR, HDML_ARGUMENTS, TERMS, HDMLModel
from kerasml.hdml.ops import (
    generator_loss,
    hardness_factor,
    metric_objective,
    pull_negatives,
    pull_npair_negatives,
    pull_pair_negatives,
    reconstruction_loss,
    soft_cross_entropy,
    synthesis_layout,
    synthetic_weight,
)
from kerasml.hdml.optimizers import ParameterGroupOptimizer

__all__ = [
    "CLASSIFIER",
    "CONVENTIONS",
    "GENERATOR",
    "HDML_ARGUMENTS",
    "TERMS",
    "AuthorsConvention",
    "BlockMean",
    "HDMLGenerator",
    "HDMLModel",
    "HardnessAwareAugmentation",
    "KerasmlConvention",
    "ParameterGroupOptimizer",
    "generator_loss",
    "hardness_factor",
    "metric_objective",
    "pull_negatives",
    "pull_npair_negatives",
    "pull_pair_negatives",
    "reconstruction_loss",
    "soft_cross_entropy",
    "synthesis_layout",
    "synthetic_weight",
]
