"""`MetricModel`: backbone → `EmbeddingProjector` → embedding ``z``, trained on a metric loss.

The base of every kerasml embedding model: `kerasml.hdml.HDMLModel` subclasses
it and adds HDML's branch. One training step on ``(x, labels)``::

    y = g(x)                      backbone features [B, F]
    z = f(y)                      projector: embeddings [B, D]
    loss = J_m + weight decay     J_m = base_loss(labels, z)
"""

import keras
import numpy as np
from keras import ops

from kerasml import losses as kl
from kerasml.layers import EmbeddingProjector
from kerasml.losses.pairwise import as_embeddings, as_labels

#: Adam's learning rate of the metric group (backbone + projector) when none is given: the HDML authors'.
DEFAULT_LEARNING_RATE = 7e-5


@keras.saving.register_keras_serializable(package="kerasml")
class MetricModel(keras.Model):
    """Backbone → `EmbeddingProjector` → ``z`` trained on a kerasml loss.

    ``model(x)`` / ``predict`` return the embeddings ``z`` ``[B, D]`` (not
    normalised; evaluation normalises them). ``fit(x, labels)`` minimises
    ``J_m + weight decay`` and logs ``J_m`` beside ``loss``. Any kerasml loss
    works; batches must follow its layout (``loss.layout``).

    Args:
        backbone: a `keras.Model` (or layer) mapping images to features ``[B, F]``.
        embedding_dim: size of ``z``. Defaults to ``128``.
        loss: the metric loss: a `kerasml.losses` instance, name or config.
            Defaults to ``"npair"``.
        weight_decay: ``r`` in ``r · Σ ½‖W‖²`` over the kernels (rank ≥ 2
            variables) of backbone and projector. Defaults to ``0.0``.
        **kwargs: `keras.Model` arguments (``name``...).

    Example:

    >>> import keras, kerasml
    >>> backbone = kerasml.models.backbones.get("small_cnn", input_shape=(32, 32, 3), feature_dim=16)
    >>> model = kerasml.models.MetricModel(backbone, embedding_dim=8, loss="contrastive")
    >>> model.compile()  # Adam(7e-5, ε=1e-8)
    >>> model.group_learning_rates(1e-3)
    {'metric': 0.001}
    """

    #: the parameter groups, each trained by its own optimizer.
    parameter_groups = ("metric",)

    def __init__(self, backbone, embedding_dim=128, loss="npair", weight_decay=0.0, **kwargs):
        super().__init__(**kwargs)
        self.base_loss = kl.get(loss)
        self.backbone = backbone
        self.embedding_dim = int(embedding_dim)
        self.weight_decay = float(weight_decay)
        self.feature_dim = int(backbone.output_shape[-1])
        self.projector = EmbeddingProjector(self.embedding_dim, name="projector")
        self.projector.build((None, self.feature_dim))
        self.term_trackers = {name: keras.metrics.Mean(name=name) for name in self.logged_terms()}
        self._features_for_loss = None
        self.built = True

    def logged_terms(self):
        """Names of the loss terms ``fit`` logs besides ``loss``."""
        return ("J_m",)

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
        """Configure training; the default optimizer is Adam (ε = 1e-8) per parameter group.

        Args:
            optimizer: ``None`` (Adam per group at `group_learning_rates`), a dict
                ``{group: optimizer}`` over ``parameter_groups`` (missing groups get
                the default Adam), or one optimizer for every variable.
            learning_rates: dict ``{group: rate}`` overriding the default rates.
            **kwargs: other `keras.Model.compile` arguments. ``loss`` is not
                accepted: the loss is given at construction.
        """
        if "loss" in kwargs:
            raise ValueError(
                f"{type(self).__name__} takes its base loss at construction ({type(self).__name__}(..., loss=...)); "
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

    def group_learning_rates(self, metric_rate=DEFAULT_LEARNING_RATE):
        """``{group: learning rate}`` for each parameter group, the metric group at ``metric_rate``."""
        return {"metric": metric_rate}

    def group_optimizer(self, optimizers=None, learning_rates=None):
        """The optimizer over this model's parameter groups (see `compile`)."""
        rates = self.group_learning_rates()
        chosen = dict(optimizers or {})
        for given, what in ((learning_rates or {}, "learning rate"), (chosen, "optimizer")):
            unknown = sorted(set(given) - set(self.parameter_groups))
            if unknown:
                raise ValueError(
                    f"Unknown parameter group(s) {unknown} in the {what}s of {type(self).__name__}. "
                    f"Groups: {sorted(self.parameter_groups)}"
                )
        rates.update(learning_rates or {})
        for group in self.parameter_groups:
            chosen.setdefault(group, keras.optimizers.Adam(rates[group], epsilon=1e-8))
        return self._combine_optimizers(chosen)

    def _combine_optimizers(self, optimizers):
        return optimizers["metric"]

    def _weight_decay(self):
        if not self.weight_decay:
            return 0.0
        kernels = [
            v for v in self.backbone.trainable_variables + self.projector.trainable_variables if len(v.shape) >= 2
        ]
        return self.weight_decay * sum(0.5 * ops.sum(ops.square(ops.cast(v, "float32"))) for v in kernels)

    def _forward_for_loss(self, x, y, y_pred, training):
        """``(labels, features, z)`` of a batch, reusing the features of the ``call`` that made ``y_pred``."""
        if y is None:
            raise ValueError(f"{type(self).__name__} needs labels: call fit(x, labels).")
        features = self._features_for_loss
        self._features_for_loss = None
        if y_pred is None or features is None:
            features = self.backbone(x, training=training)
            y_pred = self.projector(features, training=training)
        return as_labels(y), as_embeddings(features), as_embeddings(y_pred)

    def _metric_loss(self, labels, z):
        """``(J_m, J_m + weight decay)``; ``J_m`` is logged."""
        j_m = self.base_loss(labels, z)
        self.term_trackers["J_m"].update_state(j_m)
        return j_m, j_m + self._weight_decay()

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        labels, _, z = self._forward_for_loss(x, y, y_pred, training)
        return self._metric_loss(labels, z)[1]

    # ------------------------------------------------------------ serialization
    def get_config(self):
        return {
            "name": self.name,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "embedding_dim": self.embedding_dim,
            "loss": keras.saving.serialize_keras_object(self.base_loss),
            "weight_decay": self.weight_decay,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"], custom_objects=custom_objects)
        config["loss"] = kl.get(keras.saving.deserialize_keras_object(config["loss"], custom_objects=custom_objects))
        return cls(**config)
