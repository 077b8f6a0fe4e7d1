"""`MetricModel`: backbone → `EmbeddingProjector` → embedding ``z``, trained on a metric loss.

The base of every kerasml embedding model: `kerasml.hdml.HDMLModel` subclasses
it and adds HDML's branch. One training step on ``(x, labels)``::

    y = g(x)                      backbone features [B, F]
    z = f(y)                      projector: embeddings [B, D]
    loss = J_m + weight decay     J_m = base_loss(labels, z)
"""

import threading

import keras
import numpy as np
from keras import ops

from kerasml import distribution
from kerasml import losses as kl
from kerasml._backend import call_functional
from kerasml._backend import predict as backend_predict
from kerasml.layers import EmbeddingProjector, InputNormalization
from kerasml.losses.pairwise import as_embeddings, as_labels
from kerasml.models.optimizers import ParameterGroupOptimizer

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
            Defaults to ``"npair"``. A loss with trainable parameters
            (`kerasml.losses.ProxyAnchorLoss`, ``ArcFaceLoss``...) gets its
            ``embedding_dim`` from the model, which owns and trains them
            (group ``"loss"``, at the loss's ``lr_multiplier`` times the metric rate).
        weight_decay: ``r`` in ``r · Σ ½‖W‖²`` over the kernels (rank ≥ 2
            variables) of backbone and projector. Defaults to ``0.0``.
        input_normalization: ``None`` (the model takes images the way the backbone does,
            normalised by the data pipeline) or a normalisation
            (`kerasml.preprocessing.get_normalization`: ``"imagenet"``, ``"tf"``, a backbone name...)
            that the model applies first (`kerasml.layers.InputNormalization`): it then takes RGB
            pixels on the 0–255 scale, uint8 or float, e.g. the ``dtype="uint8"`` batches of
            `kerasml.data.TrainStream`. Saved in the ``.keras`` file. Defaults to ``None``.
        **kwargs: `keras.Model` arguments (``name``...).

    Example:

    >>> import keras, kerasml
    >>> backbone = kerasml.models.backbones.get("small_cnn", input_shape=(32, 32, 3), feature_dim=16)
    >>> model = kerasml.models.MetricModel(backbone, embedding_dim=8, loss="contrastive")
    >>> model.compile()  # Adam(7e-5, ε=1e-8)
    >>> model.group_learning_rates(1e-3)
    {'metric': 0.001}
    """

    @property
    def parameter_groups(self):
        """The parameter groups, each trained by its own optimizer: ``"metric"``, and ``"loss"`` for a loss's own."""
        return tuple(self.group_learning_rates())

    def __init__(self, backbone, embedding_dim=128, loss="npair", weight_decay=0.0, input_normalization=None, **kwargs):
        super().__init__(**kwargs)
        self.base_loss = kl.get(loss)
        self.input_normalization = (
            None if input_normalization is None else InputNormalization(input_normalization, name="input_normalization")
        )
        self.backbone = backbone
        self.embedding_dim = int(embedding_dim)
        self.weight_decay = float(weight_decay)
        self.feature_dim = int(backbone.output_shape[-1])
        self.projector = EmbeddingProjector(self.embedding_dim, name="projector")
        self.projector.build((None, self.feature_dim))
        # The loss's trainable parameters (proxies...), sized for this model and owned by it so that fit trains them.
        self.loss_parameters = self.base_loss.configure(embedding_dim=self.embedding_dim).parameters
        self.term_trackers = {name: keras.metrics.Mean(name=name) for name in self.logged_terms()}
        # Per thread: tf.distribute runs each replica's step in its own thread.
        self._step_cache = threading.local()
        self.built = True

    def logged_terms(self):
        """Names of the loss terms ``fit`` logs besides ``loss``."""
        return ("J_m",)

    # ----------------------------------------------------------------- forward
    def backbone_features(self, inputs, training=None):
        """The backbone's features ``y`` of the model's inputs (normalised first with `input_normalization`)."""
        if self.input_normalization is not None:
            inputs = self.input_normalization(inputs)
        return call_functional(self.backbone, inputs, training)  # the backend's fast path, if any

    def call(self, inputs, training=None):
        features = self.backbone_features(inputs, training)
        if training:
            self._step_cache.features = features
        return self.projector(features, training=training)

    def embed(self, x, batch_size=None):
        """Embeddings of ``x`` as a NumPy array, in inference mode.

        An array (NumPy or backend tensor) goes through the backend's compiled inference function,
        ``batch_size`` rows at a time (default 32): ``tf.function`` on TensorFlow, ``jax.jit`` on
        JAX, ``torch.no_grad`` on PyTorch (`kerasml._backend.predict`). Anything else ``predict``
        takes (a ``tf.data.Dataset``, a generator...) goes through ``predict``.
        """
        if isinstance(x, np.ndarray) or keras.ops.is_tensor(x):
            return backend_predict(self, keras.ops.convert_to_numpy(x), batch_size or 32)
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
        """``{group: learning rate}`` for each parameter group, the metric group at ``metric_rate``.

        A loss with trainable parameters (``loss.parameters``: proxies, class
        weights) adds the group ``"loss"`` at ``lr_multiplier × metric_rate``.
        """
        rates = {"metric": metric_rate}
        # A loss's non-trainable state (cross-batch memory) needs no optimizer.
        if getattr(self, "loss_parameters", None) is not None and self.loss_parameters.trainable_variables:
            rates["loss"] = metric_rate * self.loss_parameters.lr_multiplier
        return rates

    def group_optimizer(self, optimizers=None, learning_rates=None):
        """The optimizer over this model's parameter groups (see `compile`).

        A ``"metric"`` rate in ``learning_rates`` also sets the rate of the groups derived from it (``"loss"``).
        """
        metric_rate = (learning_rates or {}).get("metric")
        rates = self.group_learning_rates() if metric_rate is None else self.group_learning_rates(metric_rate)
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
        if "loss" not in optimizers:
            return optimizers["metric"]
        prefixes = {"loss": [v.path for v in self.loss_parameters.trainable_variables]}
        return ParameterGroupOptimizer(optimizers, prefixes=prefixes, default_group="metric")

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
        features = getattr(self._step_cache, "features", None)
        self._step_cache.features = None
        if y_pred is None or features is None:
            features = self.backbone_features(x, training)
            y_pred = self.projector(features, training=training)
        return as_labels(y), as_embeddings(features), as_embeddings(y_pred)

    def _metric_loss(self, labels, z):
        """``(J_m, J_m + weight decay)``; ``J_m`` is logged."""
        j_m = self.base_loss(labels, z)
        self.term_trackers["J_m"].update_state(j_m)
        return j_m, j_m + self._weight_decay()

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The loss of the *global* batch (every replica's rows; see `kerasml.distribution`), as this replica's share.

        Labels, backbone features and embeddings are gathered across replicas
        (identity on one device); `batch_loss` computes the objective on them.
        """
        labels, features, z = self._forward_for_loss(x, y, y_pred, training)
        labels, features, z = distribution.gather_batch(labels, features, z)
        with distribution.global_batch_scope():
            loss = self.batch_loss(labels, features, z, training)
        return distribution.scale_loss(loss)

    def batch_loss(self, labels, features, z, training=True):
        """The objective of one (global) batch: ``J_m + weight decay``; logs the terms.

        Args:
            labels: int labels ``[B]``.
            features: backbone features ``y`` ``[B, F]``.
            z: embeddings ``[B, D]``.
            training: whether this is a training step.
        """
        return self._metric_loss(labels, z)[1]

    def make_train_function(self, force=False):
        # PyTorch process groups: equal start and averaged gradients (no-op elsewhere).
        distribution.synchronize(self)
        return super().make_train_function(force=force)

    # ------------------------------------------------------------ serialization
    def get_config(self):
        return {
            "name": self.name,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "embedding_dim": self.embedding_dim,
            "loss": keras.saving.serialize_keras_object(self.base_loss),
            "weight_decay": self.weight_decay,
            "input_normalization": (
                None if self.input_normalization is None else self.input_normalization.normalization.to_config()
            ),
            # The model's own policy: compile() wraps the optimizer for loss scaling under mixed_float16.
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"], custom_objects=custom_objects)
        config["loss"] = kl.get(keras.saving.deserialize_keras_object(config["loss"], custom_objects=custom_objects))
        return cls(**config)
