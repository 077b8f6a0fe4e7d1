"""`HDMLModel` (backbone → projector → z, plus HDML's branch) and `MetricModel`.

One training step on a batch ``(x, labels)`` (HDML.md §"One training step"):

1. ``y = g(x)``, ``z = f(y)``; ``J_m`` = base loss on ``z``.
2. ``ẑ`` = hardness-aware augmentation of ``z`` (eq. 1, ``λ₀ = exp(−α/J_avg)``).
3. Generator on the batch ``[z; ẑ]``: ``y' = i(z)``, ``ỹ = i(ẑ)``; ``J_recon = Σ (y − y')²``,
   ``J_soft`` = CE of the classifier on ``ỹ`` against the synthetics' labels,
   ``J_gen = (1 − λ) J_recon + λ c_soft J_soft``.
4. ``z̃ = f(ỹ)``; ``J_syn`` = base loss on the synthetic tuples;
   ``J_metric = w (J_m + weight decay) + (1 − w) J_syn``, ``w = exp(−β/J̄_gen)``.
5. ``J_cls`` = CE of the classifier on the real ``y``.

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

from kerasml import hdml as H
from kerasml import losses as kl
from kerasml._backend import is_concrete
from kerasml.layers import BlockMean, EmbeddingProjector, HardnessAwareAugmentation, HDMLGenerator
from kerasml.losses._pairwise import as_embeddings, as_labels
from kerasml.optimizers import ParameterGroupOptimizer

GENERATOR = "hdml_generator"
CLASSIFIER = "hdml_classifier"
TERMS = ("J_m", "J_syn", "J_metric", "J_recon", "J_soft", "J_gen", "J_cls", "w")
DEFAULT_LEARNING_RATES = {"metric": 7e-5, "generator": 1e-2, "classifier": 1e-3}
SYNTHETIC_STATISTICS = ("batch", "update")


@keras.saving.register_keras_serializable(package="kerasml")
class HDMLModel(keras.Model):
    """Backbone → `EmbeddingProjector` → embedding ``z``, trained with or without HDML.

    ``model(x)`` / ``predict`` return the embeddings ``z`` ``[B, D]`` (not
    normalised; evaluation normalises them). ``fit(x, labels)`` runs the step
    described in the module docstring and logs ``J_m, J_syn, J_metric,
    J_recon, J_soft, J_gen, J_cls, w`` (running means over the epoch, like any
    Keras metric) besides ``loss``. With ``hdml=False`` it is the plain
    baseline: ``loss = J_m + weight decay``, and only ``J_m`` is logged.

    Batches must follow the base loss's layout: ``[a_1..a_N; p_1..p_N]`` (any
    even size, N distinct classes) for `NPairLoss`/`AngularLoss`,
    ``[anchors; positives; negatives]`` for ``TripletLoss(mining="structured")``.
    Labels must be ``0..num_classes−1`` (the classifier's classes).

    ``J_avg`` averages the *unweighted* base loss ``J_m`` (the authors averaged
    ``w·(J_m + weight decay)``; with ``w ≈ 1`` early on the two are close).
    Synthetic features are projected with batch statistics that do not update
    the projector's moving averages (``synthetic_statistics="batch"``); the
    authors' code updated them (``"update"``).

    Args:
        backbone: a `keras.Model` (or layer) mapping images to features ``[B, F]``.
        embedding_dim: size of ``z``. Defaults to ``128``.
        loss: base metric loss: a `kerasml.losses` instance, name or config.
            Defaults to ``"npair"``.
        num_classes: number of training classes (the classifier's size);
            required with ``hdml=True``.
        hdml: train with HDML. Defaults to ``True``.
        alpha: ``α`` of eq. (1). Defaults to ``90.0``.
        beta: ``β`` of eq. (2). Defaults to ``5e3`` (the authors' 1e4 for Cars).
        soft_weight: ``λ`` in ``J_gen``. Defaults to ``0.5``.
        softmax_factor: ``c_soft`` in ``J_gen``. Defaults to ``1e4``.
        block_size: steps per ``J_avg`` / ``J̄_gen`` block. Defaults to ``64``.
        initial_mean: ``J_avg`` and ``J̄_gen`` before the first block. Defaults to ``1e6``.
        generator_units: the generator's hidden width. Defaults to ``512``.
        weight_decay: ``r`` in ``r · Σ ½‖W‖²`` over the kernels (rank ≥ 2
            variables) of backbone and projector, added to ``J_m``'s side of
            eq. (2). Defaults to ``0.0``.
        synthetic_statistics: ``"batch"`` or ``"update"``, see above.
        **kwargs: `keras.Model` arguments (``name``...).
    """

    def __init__(
        self,
        backbone,
        embedding_dim=128,
        loss="npair",
        num_classes=None,
        hdml=True,
        alpha=90.0,
        beta=5e3,
        soft_weight=0.5,
        softmax_factor=1e4,
        block_size=64,
        initial_mean=1e6,
        generator_units=512,
        weight_decay=0.0,
        synthetic_statistics="batch",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.base_loss = kl.get(loss)
        self.hdml = bool(hdml)
        self.layout = H.synthesis_layout(self.base_loss) if self.hdml else None
        if self.hdml and (num_classes is None or int(num_classes) < 2):
            raise ValueError(
                "Invalid value for argument `num_classes`. HDML's classifier needs the number of "
                f"training classes (>= 2). Received: num_classes={num_classes}"
            )
        if synthetic_statistics not in SYNTHETIC_STATISTICS:
            raise ValueError(
                f"Invalid value for argument `synthetic_statistics`. Expected one of {SYNTHETIC_STATISTICS}. "
                f"Received: {synthetic_statistics!r}"
            )
        self.backbone = backbone
        self.embedding_dim = int(embedding_dim)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.alpha, self.beta = float(alpha), float(beta)
        self.soft_weight, self.softmax_factor = float(soft_weight), float(softmax_factor)
        self.block_size, self.initial_mean = int(block_size), float(initial_mean)
        self.generator_units = int(generator_units)
        self.weight_decay = float(weight_decay)
        self.synthetic_statistics = synthetic_statistics

        feature_dim = int(backbone.output_shape[-1])
        self.feature_dim = feature_dim
        self.projector = EmbeddingProjector(self.embedding_dim, name="projector")
        self.projector.build((None, feature_dim))
        if self.hdml:
            self.augmentation = HardnessAwareAugmentation(
                self.alpha, self.layout, self.block_size, self.initial_mean, name="hdml_augmentation"
            )
            self.generator = HDMLGenerator(feature_dim, self.generator_units, name=GENERATOR)
            self.generator.build((None, self.embedding_dim))
            self.classifier = keras.layers.Dense(self.num_classes, name=CLASSIFIER)
            self.classifier.build((None, feature_dim))
            self.j_gen_mean = BlockMean(self.block_size, self.initial_mean, name="j_gen_mean")
        names = TERMS if self.hdml else ("J_m",)
        self.term_trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self._features_for_loss = None
        self.built = True

    # ----------------------------------------------------------------- forward
    def call(self, inputs, training=None):
        features = self.backbone(inputs, training=training)
        if training:
            self._features_for_loss = features
        return self.projector(features, training=training)

    def embed(self, x, batch_size=None):
        """Embeddings of ``x`` as a NumPy array (``predict`` in inference mode)."""
        return np.asarray(self.predict(x, batch_size=batch_size, verbose=0))

    @property
    def metrics(self):
        return [*super().metrics, *self.term_trackers.values()]

    # ---------------------------------------------------------------- training
    def compile(self, optimizer=None, learning_rates=None, **kwargs):
        """Configure training; the default optimizer trains each group with Adam.

        Args:
            optimizer: ``None`` (default: Adam with ε = 1e-8 per parameter group
                at ``learning_rates``), a dict ``{"metric": opt, "generator":
                opt, "classifier": opt}``, a `ParameterGroupOptimizer`, or one
                optimizer shared by every variable.
            learning_rates: dict overriding ``{"metric": 7e-5, "generator":
                1e-2, "classifier": 1e-3}`` for the default optimizer.
            **kwargs: other `keras.Model.compile` arguments. ``loss`` is not
                accepted: the base loss is given at construction.
        """
        if "loss" in kwargs:
            raise ValueError(
                "HDMLModel takes its base loss at construction (HDMLModel(..., loss=...)); "
                "do not pass `loss` to compile()."
            )
        if optimizer is None or isinstance(optimizer, dict):
            optimizer = self.group_optimizer(optimizer, learning_rates)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        """Restore the compiled state (optimizer included) when a ``.keras`` file loads."""
        config = keras.saving.deserialize_keras_object(config)
        super().compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def group_optimizer(self, optimizers=None, learning_rates=None):
        """The `ParameterGroupOptimizer` over this model's groups (see `compile`)."""
        rates = {**DEFAULT_LEARNING_RATES, **(learning_rates or {})}
        unknown = sorted(set(rates) - set(DEFAULT_LEARNING_RATES))
        if unknown:
            raise ValueError(f"Unknown parameter group(s) {unknown}. Groups: {sorted(DEFAULT_LEARNING_RATES)}")
        groups = ["metric", "generator", "classifier"] if self.hdml else ["metric"]
        chosen = dict(optimizers or {})
        for group in groups:
            chosen.setdefault(group, keras.optimizers.Adam(rates[group], epsilon=1e-8))
        prefixes = {"generator": [f"{GENERATOR}/"], "classifier": [f"{CLASSIFIER}/"]} if self.hdml else {}
        return ParameterGroupOptimizer({g: chosen[g] for g in groups}, prefixes=prefixes, default_group="metric")

    def _weight_decay(self):
        if not self.weight_decay:
            return 0.0
        kernels = [
            v for v in self.backbone.trainable_variables + self.projector.trainable_variables if len(v.shape) >= 2
        ]
        return self.weight_decay * sum(0.5 * ops.sum(ops.square(ops.cast(v, "float32"))) for v in kernels)

    def _check_labels(self, y):
        if self.hdml and is_concrete(y):
            values = np.asarray(ops.convert_to_numpy(y)).reshape(-1)
            bad = values[(values < 0) | (values >= self.num_classes)]
            if bad.size:
                raise ValueError(
                    f"HDMLModel's classifier has num_classes={self.num_classes}, so labels must lie in "
                    f"0..{self.num_classes - 1}; received label(s) {sorted(set(bad.tolist()))[:8]}. "
                    "Remap the training classes to 0..C-1 (kerasml.data streams do)."
                )

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y is None:
            raise ValueError("HDMLModel needs labels: call fit(x, labels).")
        self._check_labels(y)
        labels = as_labels(y)
        features = self._features_for_loss
        self._features_for_loss = None
        if y_pred is None or features is None:
            features = self.backbone(x, training=training)
            y_pred = self.projector(features, training=training)
        z = as_embeddings(y_pred)
        j_m = self.base_loss(labels, z)
        regularised = j_m + self._weight_decay()
        self.term_trackers["J_m"].update_state(j_m)
        if not (self.hdml and training):
            return regularised
        terms = self._hdml_terms(labels, z, as_embeddings(features))
        w = H.synthetic_weight(self.beta, self.j_gen_mean.value)
        j_metric = H.metric_objective(regularised, terms["J_syn"], w)
        self.augmentation.update_j_avg(j_m)
        self.j_gen_mean.update(terms["J_gen"])
        values = {**terms, "J_metric": j_metric, "w": w}
        for name in TERMS[1:]:
            self.term_trackers[name].update_state(values[name])
        return self.objective(j_metric, terms["J_gen"], terms["J_cls"])

    def objective(self, j_metric, j_gen, j_cls):
        """The scalar that ``fit`` differentiates: ``J_metric + J_gen + J_cls``.

        The ``stop_gradient`` routing makes each parameter group receive the
        gradient of its own term only, so the sum is the three objectives at once.
        """
        return j_metric + j_gen + j_cls

    def _hdml_terms(self, labels, z, features):
        """``J_syn``, ``J_recon``, ``J_soft``, ``J_gen`` and ``J_cls`` of one batch.

        The generator decodes one batch, ``[z; ẑ]`` (the real embeddings, then the
        pulled negatives), twice with identical values: once with stopped inputs
        (trains the generator through ``J_gen``) and once with stopped weights
        (carries ``J_syn`` back to ``z``). Both passes see the same batch, so
        ``J_soft`` and ``J_syn`` judge the same synthetic features ``ỹ``.
        """
        sg = ops.stop_gradient
        if self.layout == "npair":
            n = ops.shape(z)[0] // 2
            real_count = 2 * n
            _, pulled = self.augmentation(z)  # [N, N, D]
            pulled = ops.reshape(pulled, (-1, self.embedding_dim))  # row i*N + j: p_j pulled toward a_i
            # Synthetic rows of the decoded batch: the anchors, then the N² pulled negatives.
            synthetic_labels = ops.concatenate([labels[:n], ops.tile(labels[n:real_count], [n])], axis=0)
        else:
            n = ops.shape(z)[0] // 3
            real_count = 3 * n
            _, _, pulled = self.augmentation(z)  # [n, D]
            # Synthetic rows: anchors, positives, then the pulled negatives.
            synthetic_labels = labels[:real_count]
        kept_real = n if self.layout == "npair" else 2 * n
        generator_inputs = ops.concatenate([z[:real_count], pulled], axis=0)

        def synthetic_rows(decoded):
            return ops.concatenate([decoded[:kept_real], decoded[real_count:]], axis=0)

        # Generator pass: trains the generator only (its inputs are stopped).
        decoded = self.generator(sg(generator_inputs), training=True)
        j_recon = H.reconstruction_loss(sg(features[:real_count]), decoded[:real_count])
        frozen_logits = ops.matmul(synthetic_rows(decoded), sg(self.classifier.kernel)) + sg(self.classifier.bias)
        j_soft = H.soft_cross_entropy(frozen_logits, synthetic_labels, self.num_classes)
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
        if self.layout == "npair":
            tuples = ops.reshape(projected[n:], (n, n, self.embedding_dim))
            j_syn = H.synthetic_loss(self.base_loss, labels, projected[:n], tuples)
        else:
            j_syn = H.synthetic_loss(self.base_loss, labels, projected, None)

        j_cls = H.soft_cross_entropy(self.classifier(sg(features)), labels, self.num_classes)
        return {"J_syn": j_syn, "J_recon": j_recon, "J_soft": j_soft, "J_gen": j_gen, "J_cls": j_cls}

    # ------------------------------------------------------------ serialization
    def get_config(self):
        return {
            "name": self.name,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "embedding_dim": self.embedding_dim,
            "loss": keras.saving.serialize_keras_object(self.base_loss),
            "num_classes": self.num_classes,
            "hdml": self.hdml,
            "alpha": self.alpha,
            "beta": self.beta,
            "soft_weight": self.soft_weight,
            "softmax_factor": self.softmax_factor,
            "block_size": self.block_size,
            "initial_mean": self.initial_mean,
            "generator_units": self.generator_units,
            "weight_decay": self.weight_decay,
            "synthetic_statistics": self.synthetic_statistics,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"], custom_objects=custom_objects)
        config["loss"] = kl.get(keras.saving.deserialize_keras_object(config["loss"], custom_objects=custom_objects))
        return cls(**config)


@keras.saving.register_keras_serializable(package="kerasml")
class MetricModel(HDMLModel):
    """The plain baseline: backbone → projector → ``z`` trained on the base loss alone.

    The same model as `HDMLModel` with ``hdml=False``: ``loss = J_m + weight
    decay``; any kerasml loss works (no layout restriction beyond the loss's own).

    Args:
        backbone: a `keras.Model` mapping images to features ``[B, F]``.
        embedding_dim: size of ``z``. Defaults to ``128``.
        loss: the metric loss (instance, name or config). Defaults to ``"npair"``.
        weight_decay: see `HDMLModel`. Defaults to ``0.0``.
        **kwargs: other `HDMLModel` / `keras.Model` arguments.
    """

    def __init__(self, backbone, embedding_dim=128, loss="npair", weight_decay=0.0, **kwargs):
        kwargs["hdml"] = False
        super().__init__(backbone, embedding_dim=embedding_dim, loss=loss, weight_decay=weight_decay, **kwargs)
