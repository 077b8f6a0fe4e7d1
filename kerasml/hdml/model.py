"""`HDMLModel`: `MetricModel` (backbone → projector → z) plus HDML's branch.

One training step on a batch ``(x, labels)`` (HDML.md §"One training step"):

1. ``y = g(x)``, ``z = f(y)``; ``J_m`` = base loss on ``z``.
2. ``ẑ`` = hardness-aware augmentation of ``z`` (eq. 1, ``λ₀ = exp(−α/J_avg)``).
3. Generator on one batch holding ``z`` and the synthetic batch (``ẑ``, with the anchors):
   ``y' = i(z)``, ``ỹ = i(ẑ)``; ``J_recon = Σ (y − y')²``,
   ``J_soft`` = CE of the classifier on ``ỹ`` against the synthetics' labels,
   ``J_gen = (1 − λ) J_recon + λ c_soft J_soft``.
4. ``z̃ = f(ỹ)``; ``J_syn`` = base loss on the synthetic tuples;
   ``J_metric = w (J_m + weight decay) + (1 − w) J_syn``, ``w = exp(−β/J̄_gen)``.
5. ``J_cls`` = CE of the classifier on the real ``y``.

Where the HDML authors' code computes a step differently from the paper's
clean form (the generator's batch, ``J_soft``'s reduction, the triplet sum,
the N-pair L2 term in ``J_syn``, weight decay on biases, what ``J_avg``
averages, the logged scaling), the model's ``convention`` object decides
(`kerasml.hdml.conventions`): ``"kerasml"`` (default) or ``"authors"``.

Gradient routing (§6) with one loss ``J_metric + J_gen + J_cls`` and
``stop_gradient`` placed so that each parameter group sees exactly its own
objective:

- backbone + projector ← ``J_metric`` only: ``J_gen`` reads ``z``, ``ẑ`` and
  ``y`` through ``stop_gradient``; ``J_syn`` goes through a second generator
  pass whose *weights* are gradient-stopped, so it reaches ``z`` through the
  generator without training it;
- generator ← ``J_gen`` only; ``J_soft`` reads the classifier's weights
  through ``stop_gradient``;
- classifier ← ``J_cls`` only (on ``stop_gradient(y)``).

The three groups then take their own optimizer (`ParameterGroupOptimizer`),
so the updates equal three separate optimizers' (the authors' Adam at 7e-5,
1e-2 and 1e-3). The same code runs under Keras' own ``fit`` on TensorFlow,
PyTorch and JAX.
"""

import keras
import numpy as np
from keras import ops

from kerasml._backend import is_concrete
from kerasml._validation import check_choice
from kerasml.hdml import conventions
from kerasml.hdml import ops as H
from kerasml.hdml.layers import BlockMean, HardnessAwareAugmentation, HDMLGenerator
from kerasml.hdml.optimizers import ParameterGroupOptimizer
from kerasml.losses import layouts
from kerasml.losses.pairwise import as_embeddings
from kerasml.models.metric_model import MetricModel

GENERATOR = "hdml_generator"
CLASSIFIER = "hdml_classifier"
TERMS = ("J_m", "J_syn", "J_metric", "J_recon", "J_soft", "J_gen", "J_cls", "w")
SYNTHETIC_STATISTICS = ("batch", "update")
#: HDMLModel's own arguments (beyond MetricModel's and ``num_classes``): the keys of a spec's ``[hdml]`` table.
HDML_ARGUMENTS = (
    "alpha",
    "beta",
    "soft_weight",
    "softmax_factor",
    "block_size",
    "initial_mean",
    "generator_units",
    "synthetic_statistics",
    "generator_learning_rate",
    "classifier_learning_rate",
    "convention",
)


@keras.saving.register_keras_serializable(package="kerasml")
class HDMLModel(MetricModel):
    """`MetricModel` trained with hardness-aware deep metric learning.

    ``model(x)`` / ``predict`` return the embeddings ``z`` ``[B, D]`` (not
    normalised; evaluation normalises them). ``fit(x, labels)`` runs the step
    described in the module docstring and logs ``J_m, J_syn, J_metric,
    J_recon, J_soft, J_gen, J_cls, w`` (running means over the epoch, like any
    Keras metric) besides ``loss``.

    Batches must follow the base loss's layout, for a loss HDML can synthesise
    for (``loss.hdml_layout``): ``[a_1..a_N; p_1..p_N]`` (any even size, N
    distinct classes) for `NPairLoss`/`AngularLoss`, ``[anchors; positives;
    negatives]`` for ``TripletLoss(mining="structured")``, any labelled batch
    (several samples per class) for the pair-based `ContrastiveLoss`,
    `MultiSimilarityLoss`, `LiftedStructureLoss` and `CircleLoss`, whose every
    anchor–negative pair gets a synthetic negative (B² synthetic rows;
    ``convention="kerasml"`` only; docs/hdml.md, "HDML beyond tuples"). Labels
    must be ``0..num_classes−1`` (the classifier's classes).

    With ``convention="kerasml"``, ``J_avg`` averages the *unweighted* base
    loss ``J_m`` and the terms are logged unweighted; ``convention="authors"``
    reproduces the HDML authors' step exactly (see `kerasml.hdml.conventions`
    and ``docs/hdml.md``). Synthetic features are projected with batch
    statistics that do not update the projector's moving averages
    (``synthetic_statistics="batch"``); the authors' code updated them
    (``"update"``, independent of ``convention``).

    Args:
        backbone: a `keras.Model` (or layer) mapping images to features ``[B, F]``.
        embedding_dim: size of ``z``. Defaults to ``128``.
        loss: base metric loss: a `kerasml.losses` instance, name or config.
            Defaults to ``"npair"``.
        num_classes: number of training classes (the classifier's size, >= 2).
        weight_decay: ``r`` in ``r · Σ ½‖W‖²`` over the kernels (rank ≥ 2
            variables) of backbone and projector (``convention="authors"``:
            every variable but batch-norm γ/β, biases included), added to
            ``J_m``'s side of eq. (2). Defaults to ``0.0``.
        alpha: ``α`` of eq. (1). Defaults to ``90.0``.
        beta: ``β`` of eq. (2). Defaults to ``5e3`` (the authors' 1e4 for Cars).
        soft_weight: ``λ`` in ``J_gen``. Defaults to ``0.5``.
        softmax_factor: ``c_soft`` in ``J_gen``. Defaults to ``1e4``.
        block_size: steps per ``J_avg`` / ``J̄_gen`` block. Defaults to ``64``.
        initial_mean: ``J_avg`` and ``J̄_gen`` before the first block. Defaults to ``1e6``.
        generator_units: the generator's hidden width. Defaults to ``512``.
        synthetic_statistics: ``"batch"`` or ``"update"``, see above.
        generator_learning_rate: Adam's rate for the generator group when
            `compile` builds the optimizer. Defaults to ``1e-2`` (authors).
        classifier_learning_rate: Adam's rate for the classifier group.
            Defaults to ``1e-3`` (authors).
        convention: ``"kerasml"`` (the paper's step, written cleanly) or
            ``"authors"`` (the HDML authors' code, ``wzzheng/HDML``: generator
            batch, ``J_soft`` as two means for N-pair, triplet sums, N-pair L2
            in ``J_syn``, weight decay on biases, ``J_avg`` of ``w (J_m + wd)``,
            weighted logged terms). Defaults to ``"kerasml"``.
        **kwargs: `keras.Model` arguments (``name``...).
    """

    parameter_groups = ("metric", "generator", "classifier")

    def __init__(
        self,
        backbone,
        embedding_dim=128,
        loss="npair",
        num_classes=None,
        weight_decay=0.0,
        alpha=90.0,
        beta=5e3,
        soft_weight=0.5,
        softmax_factor=1e4,
        block_size=64,
        initial_mean=1e6,
        generator_units=512,
        synthetic_statistics="batch",
        generator_learning_rate=1e-2,
        classifier_learning_rate=1e-3,
        convention="kerasml",
        **kwargs,
    ):
        if num_classes is None or int(num_classes) < 2:
            raise ValueError(
                "Invalid value for argument `num_classes`. HDML's classifier needs the number of "
                f"training classes (>= 2). Received: num_classes={num_classes}"
            )
        check_choice("synthetic_statistics", synthetic_statistics, SYNTHETIC_STATISTICS)
        convention = conventions.get(convention)
        super().__init__(backbone, embedding_dim=embedding_dim, loss=loss, weight_decay=weight_decay, **kwargs)
        self.layout = H.synthesis_layout(self.base_loss, convention.name)
        self._convention = convention
        self.num_classes = int(num_classes)
        self.alpha, self.beta = float(alpha), float(beta)
        self.soft_weight, self.softmax_factor = float(soft_weight), float(softmax_factor)
        self.block_size, self.initial_mean = int(block_size), float(initial_mean)
        self.generator_units = int(generator_units)
        self.synthetic_statistics = synthetic_statistics
        self.generator_learning_rate = float(generator_learning_rate)
        self.classifier_learning_rate = float(classifier_learning_rate)

        self.augmentation = HardnessAwareAugmentation(
            self.alpha, self.layout, self.block_size, self.initial_mean, name="hdml_augmentation"
        )
        self.generator = HDMLGenerator(self.feature_dim, self.generator_units, name=GENERATOR)
        self.generator.build((None, self.embedding_dim))
        self.classifier = keras.layers.Dense(self.num_classes, name=CLASSIFIER)
        self.classifier.build((None, self.feature_dim))
        self.j_gen_mean = BlockMean(self.block_size, self.initial_mean, name="j_gen_mean")

    def logged_terms(self):
        return TERMS

    @property
    def convention(self):
        """The convention's name: ``"kerasml"`` or ``"authors"`` (`kerasml.hdml.conventions`)."""
        return self._convention.name

    # ---------------------------------------------------------------- training
    def group_learning_rates(self, metric_rate=None):
        """``{"metric", "generator", "classifier"}`` rates; the metric one defaults to 7e-5."""
        rates = super().group_learning_rates() if metric_rate is None else super().group_learning_rates(metric_rate)
        return {**rates, "generator": self.generator_learning_rate, "classifier": self.classifier_learning_rate}

    def _combine_optimizers(self, optimizers):
        prefixes = {"generator": [f"{GENERATOR}/"], "classifier": [f"{CLASSIFIER}/"]}
        return ParameterGroupOptimizer(optimizers, prefixes=prefixes, default_group="metric")

    def _check_labels(self, y):
        if is_concrete(y):
            values = np.asarray(ops.convert_to_numpy(y)).reshape(-1)
            bad = values[(values < 0) | (values >= self.num_classes)]
            if bad.size:
                raise ValueError(
                    f"HDMLModel's classifier has num_classes={self.num_classes}, so labels must lie in "
                    f"0..{self.num_classes - 1}; received label(s) {sorted(set(bad.tolist()))[:8]}. "
                    "Remap the training classes to 0..C-1 (kerasml.data streams do)."
                )
            # The augmentation reads the batch by position, even where the base loss accepts any order.
            layouts.LAYOUTS[self.layout].check_labels(values, f"HDMLModel ({self.layout} synthesis)")

    def _weight_decay(self):
        if not self.weight_decay:
            return 0.0
        variables = self._convention.decayed(self.backbone.trainable_variables + self.projector.trainable_variables)
        return self.weight_decay * sum(0.5 * ops.sum(ops.square(ops.cast(v, "float32"))) for v in variables)

    def _metric_loss(self, labels, z):
        """``(J_m, J_m + weight decay)`` as the convention computes them (logged by `compute_loss`)."""
        j_m = self.base_loss.real_loss(labels, z, convention=self.convention)
        return j_m, j_m + self._weight_decay()

    def batch_loss(self, labels, features, z, training=True):
        self._check_labels(labels)
        j_m, regularised = self._metric_loss(labels, z)
        w = H.synthetic_weight(self.beta, self.j_gen_mean.value)
        if not training:
            logged = self._convention.logged({"J_m": j_m, "regularised": regularised}, w, 1.0, 1.0)
            self.term_trackers["J_m"].update_state(logged["J_m"])
            return regularised
        terms = self._hdml_terms(labels, z, features)
        j_metric = H.metric_objective(regularised, terms["J_syn"], w)
        self.augmentation.update_j_avg(self._convention.block_mean_input(j_m, regularised, w))
        self.j_gen_mean.update(terms["J_gen"])
        values = {**terms, "J_m": j_m, "regularised": regularised, "J_metric": j_metric, "w": w}
        logged = self._convention.logged(values, w, self.soft_weight, self.softmax_factor)
        for name in TERMS:
            self.term_trackers[name].update_state(logged[name])
        return self.objective(j_metric, terms["J_gen"], terms["J_cls"])

    def objective(self, j_metric, j_gen, j_cls):
        """The scalar that ``fit`` differentiates: ``J_metric + J_gen + J_cls``.

        The ``stop_gradient`` routing makes each parameter group receive the
        gradient of its own term only, so the sum is the three objectives at once.
        """
        return j_metric + j_gen + j_cls

    def _hdml_terms(self, labels, z, features):
        """``J_syn``, ``J_recon``, ``J_soft``, ``J_gen`` and ``J_cls`` of one batch.

        The generator decodes one batch (the convention's: the real embeddings
        ``z`` first, then the synthetic batch) twice with identical values: once
        with stopped inputs (trains the generator through ``J_gen``) and once
        with stopped weights (carries ``J_syn`` back to ``z``). Both passes see
        the same batch, so ``J_soft`` and ``J_syn`` judge the same synthetic
        features ``ỹ``. The synthetic batch is the anchors then the N² tuples
        (N-pair: blocks ``(N, N²)``, the two arguments of ``synthetic_loss``),
        every sample then the B² grid of `kerasml.hdml.ops.pull_pair_negatives`
        (``"any"``, pair-based losses: blocks ``(B, B²)``) or ``[ã; p̃; ñ]``
        (triplet: one block).
        """
        sg = ops.stop_gradient
        if self.layout == "npair":
            n = ops.shape(z)[0] // 2
            real_count, kept = 2 * n, n
            _, pulled = self.augmentation(z)  # [N, N, D]
            pulled = ops.reshape(pulled, (-1, self.embedding_dim))  # row i*N + j: p_j pulled toward a_i
            # Synthetic rows: the anchors, then the N² pulled negatives.
            synthetic_labels = ops.concatenate([labels[:n], ops.tile(labels[n:real_count], [n])], axis=0)
            blocks = (n, n * n)
        elif self.layout == "any":
            count = ops.shape(z)[0]
            real_count, kept = count, count
            _, pulled = self.augmentation(z, labels)  # [B, B, D]
            pulled = ops.reshape(pulled, (-1, self.embedding_dim))  # row i*B + j: z_j, pulled toward z_i if negative
            # Synthetic rows: every sample as an anchor, then the B² rows (each keeps its sample's label).
            synthetic_labels = ops.concatenate([labels, ops.tile(labels, [count])], axis=0)
            blocks = (count, count * count)
        else:
            n = ops.shape(z)[0] // 3
            real_count, kept = 3 * n, 2 * n
            _, _, pulled = self.augmentation(z)  # [n, D]
            # Synthetic rows: anchors, positives, then the pulled negatives.
            synthetic_labels = labels[:real_count]
            blocks = (real_count,)
        generator_inputs, synthetic_rows = self._convention.generator_batch(z[:real_count], kept, pulled)

        # Generator pass: trains the generator only (its inputs are stopped).
        decoded = self.generator(sg(generator_inputs), training=True)
        j_recon = H.reconstruction_loss(sg(features[:real_count]), decoded[:real_count])
        # float32, as the classifier's variables (the decoded rows are float16 / bfloat16 in mixed precision).
        synthetic = ops.cast(synthetic_rows(decoded), "float32")
        frozen_logits = ops.matmul(synthetic, sg(self.classifier.kernel)) + sg(self.classifier.bias)
        j_soft = self._convention.soft_cross_entropy(frozen_logits, synthetic_labels, self.num_classes, blocks)
        j_gen = H.generator_loss(j_recon, j_soft, self.soft_weight, self.softmax_factor)

        # Metric pass: the same values, but J_syn reaches z through the generator without training it.
        regenerated = self.generator(
            generator_inputs, training=True, stop_weight_gradients=True, update_statistics=False
        )
        projected = as_embeddings(
            self.projector(
                synthetic_rows(regenerated), training=True, update_statistics=self.synthetic_statistics == "update"
            )
        )
        if self.layout == "triplet":
            j_syn = self.base_loss.synthetic_loss(labels, projected, None, convention=self.convention)
        else:  # "npair", "any": the anchors, then each anchor's row of tuples
            tuples = ops.reshape(projected[kept:], (kept, kept, self.embedding_dim))
            j_syn = self.base_loss.synthetic_loss(labels, projected[:kept], tuples, convention=self.convention)

        j_cls = H.soft_cross_entropy(self.classifier(sg(features)), labels, self.num_classes)
        return {"J_syn": j_syn, "J_recon": j_recon, "J_soft": j_soft, "J_gen": j_gen, "J_cls": j_cls}

    # ------------------------------------------------------------ serialization
    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            **{name: getattr(self, name) for name in HDML_ARGUMENTS},
        }
