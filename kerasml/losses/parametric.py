"""Losses with trainable parameters (proxies, class weights, a learned margin) and the layer holding them.

Why the parameters live in a `keras.layers.Layer` and not in the loss: Keras
(3.15) trains only the variables of the model. ``fit`` differentiates
``model.trainable_variables`` (JAX passes them as explicit state to the jitted
step, TensorFlow asks the tape for their gradients, PyTorch reads their
``.grad``), and those are the model's own variables and its sub-layers'.
``model.compile(loss=...)`` keeps the loss in ``model.loss``, which the model
tracks only if it is a layer, and a `keras.Sequential` model would then stack
it among its layers. So a variable held by a loss would be read as a constant
and never updated. Here each such loss keeps its variables in a
`LossParameters` layer (``loss.parameters``) that a model owns:

- `kerasml.models.MetricModel` (and `kerasml.hdml.HDMLModel`, and therefore the
  specs) owns it automatically and trains it with its own optimizer at
  ``lr_multiplier`` times the metric learning rate; so a user's own Keras model
  trains proxies in one line::

      model = kerasml.models.MetricModel(my_model, embedding_dim=64,
                                         loss=kerasml.losses.ProxyAnchorLoss(num_classes=100))

- a subclassed `keras.Model` of your own owns it with
  ``self.loss_parameters = loss.parameters`` in its ``__init__``.

``.keras`` files keep the parameters with the loss (``model.loss`` or the
model's loss attribute), whatever the model.
"""

import keras
import numpy as np
from keras import ops

from kerasml._validation import check_int
from kerasml.losses._base import MetricLoss
from kerasml.losses.layouts import ANY
from kerasml.losses.pairwise import as_embeddings, l2_normalize, masked_mean


@keras.saving.register_keras_serializable(package="kerasml")
class LossParameters(keras.layers.Layer):
    """The trainable variables of a loss, as a layer a model can own.

    Created by the loss (``loss.parameters``); a model that owns it (an
    attribute of the model, as `kerasml.models.MetricModel` does) trains its
    variables in ``fit`` and saves them. Each variable is an attribute named
    after its key in ``shapes`` (``parameters.proxies``, ``parameters.beta``).
    The variables are float32 whatever the dtype policy.

    Args:
        shapes: dict ``{name: shape}`` of the variables.
        initializers: dict ``{name: initializer}`` (a `keras.initializers`
            identifier or instance) with the same keys.
        lr_multiplier: the factor by which `kerasml.models.MetricModel`
            multiplies its learning rate for these variables. Defaults to ``1.0``.
        **kwargs: `keras.layers.Layer` arguments (``name``...).

    Example:

    >>> import kerasml
    >>> params = kerasml.losses.LossParameters({"beta": ()}, {"beta": "ones"}, name="beta_holder")
    >>> float(params.beta.numpy()), params.beta.trainable
    (1.0, True)
    """

    def __init__(self, shapes, initializers, lr_multiplier=1.0, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.shapes = {name: tuple(int(n) for n in shape) for name, shape in shapes.items()}
        self.initializers = {name: keras.initializers.get(initializers[name]) for name in self.shapes}
        self.lr_multiplier = float(lr_multiplier)
        for name, shape in self.shapes.items():
            variable = self.add_weight(shape=shape, initializer=self.initializers[name], name=name, dtype="float32")
            setattr(self, name, variable)
        self.built = True

    def call(self, inputs):
        """The identity: the layer only holds variables."""
        return inputs

    def get_config(self):
        return {
            **super().get_config(),
            "shapes": {name: list(shape) for name, shape in self.shapes.items()},
            "initializers": {name: keras.initializers.serialize(i) for name, i in self.initializers.items()},
            "lr_multiplier": self.lr_multiplier,
        }


class ParametricLoss(MetricLoss):
    """Base class of the losses with trainable parameters (see the module's docstring).

    Subclasses implement ``parameter_shapes()`` (``{name: shape}``, or ``None``
    for no parameters), ``default_initializer(name)``, and list in ``sizes``
    the size arguments they need (of ``num_classes`` and ``embedding_dim``).
    Those can be given at construction or later with `configure`
    (`kerasml.models.MetricModel` sets ``embedding_dim``); the parameters exist
    once every needed size is known. Calling the loss before that raises
    ``ValueError``. With ``num_classes`` known, concrete labels outside
    ``[0, num_classes)`` raise ``ValueError``.

    Args:
        num_classes: number of classes ``C``; labels must lie in ``[0, C)``.
        embedding_dim: size ``D`` of the embeddings.
        lr_multiplier: `kerasml.models.MetricModel` trains the parameters at
            this multiple of its learning rate.
        initializer: initializer of the parameters (a `keras.initializers`
            identifier or instance); ``None`` for the loss's default.
        name, reduction, dtype: as `MetricLoss`.
    """

    #: the size arguments this loss uses.
    sizes = ("num_classes", "embedding_dim")
    batch_layout = ANY
    layout_summary = "any labelled batch, labels in [0, num_classes)"

    def __init__(
        self,
        num_classes=None,
        embedding_dim=None,
        lr_multiplier=1.0,
        initializer=None,
        name=None,
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        owner = type(self).__name__
        self.num_classes = check_int("num_classes", num_classes, owner, allow_none=True)
        self.embedding_dim = check_int("embedding_dim", embedding_dim, owner, allow_none=True)
        if isinstance(lr_multiplier, bool) or not float(lr_multiplier) > 0:
            raise ValueError(
                f"Invalid value for argument `lr_multiplier` of {owner}. Expected a positive float. "
                f"Received: lr_multiplier={lr_multiplier!r}"
            )
        self.lr_multiplier = float(lr_multiplier)
        self.initializer = None if initializer is None else keras.initializers.get(initializer)
        self._parameters = None
        self._create_parameters()

    # ------------------------------------------------------------ parameters
    def parameter_shapes(self):
        """``{name: shape}`` of the trainable variables; ``None`` while a size is missing."""
        raise NotImplementedError

    def default_initializer(self, name):
        """The initializer of variable ``name`` when ``initializer`` is ``None``."""
        raise NotImplementedError

    def missing_sizes(self):
        """The size arguments (``num_classes``, ``embedding_dim``) still unknown."""
        return [size for size in self.sizes if getattr(self, size) is None]

    def configure(self, num_classes=None, embedding_dim=None):
        """Set the sizes not given at construction and create the parameters.

        Sizes this loss does not use are ignored; a size that contradicts the
        one given at construction raises ``ValueError``.

        Returns:
            The loss itself.
        """
        owner = type(self).__name__
        for argument, value in (("num_classes", num_classes), ("embedding_dim", embedding_dim)):
            value = check_int(argument, value, f"{owner}.configure", allow_none=True)
            if value is None or argument not in self.sizes:
                continue
            current = getattr(self, argument)
            if current is None:
                setattr(self, argument, value)
            elif current != value:
                raise ValueError(
                    f"Invalid value for argument `{argument}` of {owner}.configure. The loss was built with "
                    f"{argument}={current}. Received: {argument}={value}. Build the loss with "
                    f"{argument}={value}, or make the model's size match the loss."
                )
        self._create_parameters()
        return self

    def _create_parameters(self):
        if self._parameters is not None or self.missing_sizes():
            return
        shapes = self.parameter_shapes()
        if not shapes:
            return
        initializers = {
            name: self.initializer if self.initializer is not None else self.default_initializer(name)
            for name in shapes
        }
        self._parameters = LossParameters(
            shapes, initializers, lr_multiplier=self.lr_multiplier, name=f"{self.name}_parameters"
        )

    @property
    def parameters(self):
        """The `LossParameters` layer holding this loss's trainable variables (``None`` if it has none).

        Raises:
            ValueError: while a size it needs (``num_classes``, ``embedding_dim``) is unknown.
        """
        missing = self.missing_sizes()
        if missing:
            given = ", ".join(f"{size}=..." for size in missing)
            raise ValueError(
                f"{type(self).__name__} has no parameters yet: it needs {' and '.join(f'`{m}`' for m in missing)}. "
                f"Pass {type(self).__name__}({given}), or call loss.configure({given}) "
                "(kerasml.models.MetricModel sets embedding_dim itself)."
            )
        return self._parameters

    def _variable(self, name):
        return getattr(self.parameters, name)

    def _set_variable(self, name, values):
        variable = self._variable(name)
        values = np.asarray(keras.ops.convert_to_numpy(values), dtype="float32")
        if values.shape != tuple(variable.shape):
            raise ValueError(
                f"Invalid value for `{name}` of {type(self).__name__}. Expected an array of shape "
                f"{tuple(variable.shape)}. Received: an array of shape {values.shape}"
            )
        variable.assign(values)

    # ---------------------------------------------------------------- checks
    @property
    def _checks_layout(self):
        return self.num_classes is not None

    def check_batch(self, labels):
        """Raise `ValueError` if a concrete label lies outside ``[0, num_classes)``."""
        super().check_batch(labels)
        if self.num_classes is None:
            return
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.size:
            raise ValueError(
                f"{type(self).__name__} has num_classes={self.num_classes}, so labels must lie in "
                f"[0, {self.num_classes}). Received label(s) {sorted(set(int(v) for v in bad))[:8]}. "
                "Map class ids to 0..num_classes-1, or build the loss with a larger num_classes."
            )

    def hdml_problem(self):
        return (
            f"{type(self).__name__} compares embeddings with trainable parameters, not with each other, "
            "so it has no anchor/positive/negative tuples to synthesise"
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "embedding_dim": self.embedding_dim,
            "lr_multiplier": self.lr_multiplier,
            "initializer": None if self.initializer is None else keras.initializers.serialize(self.initializer),
        }


class ProxyLoss(ParametricLoss):
    """Base class of the losses that learn one or more vectors per class (``loss.proxies``).

    Subclasses set ``proxies_per_class`` (``None``: one proxy per class, shape
    ``[C, D]``; an int ``K``: ``[C, K, D]``).
    """

    def proxies_shape(self):
        """The shape of ``loss.proxies``: ``(C, D)``, or ``(C, K, D)`` with K proxies per class."""
        k = self.proxies_per_class
        if k is None:
            return (self.num_classes, self.embedding_dim)
        return (self.num_classes, k, self.embedding_dim)

    @property
    def proxies_per_class(self):
        """``None`` for one proxy per class, else the number ``K`` of proxies of each class."""
        return None

    def parameter_shapes(self):
        return {"proxies": self.proxies_shape()}

    def default_initializer(self, name):
        return keras.initializers.RandomNormal(stddev=1.0)

    @property
    def proxies(self):
        """The proxies, a float32 `keras.Variable` ``[C, D]`` (``[C, K, D]`` with K per class).

        Assign an array to set them (``loss.proxies = array``), or use `set_proxies`.
        """
        return self._variable("proxies")

    @proxies.setter
    def proxies(self, values):
        self.set_proxies(values)

    def set_proxies(self, values):
        """Set the proxies from an array of their shape.

        Raises:
            ValueError: for an array of another shape.
        """
        self._set_variable("proxies", values)


# ----------------------------------------------------------------- shared maths


def class_mask(labels, num_classes):
    """Boolean ``[B, C]``: ``labels[i] == c``. A label outside ``[0, C)`` gives an all-false row."""
    classes = ops.arange(num_classes, dtype="int32")
    return ops.expand_dims(labels, 1) == ops.expand_dims(classes, 0)


def proxy_cosine(embeddings, proxies):
    """Cosines of embeddings ``[B, D]`` with proxies ``[C, D]``: ``[B, C]`` (proxies ``[C, K, D]``: ``[B, C, K]``)."""
    x = l2_normalize(as_embeddings(embeddings))
    proxies = as_embeddings(proxies)
    shape = ops.shape(proxies)
    flat = l2_normalize(ops.reshape(proxies, (-1, shape[-1])))
    cosine = ops.matmul(x, ops.transpose(flat))
    if len(shape) == 3:
        cosine = ops.reshape(cosine, (-1, shape[0], shape[1]))
    return cosine


def softmax_cross_entropy(logits, target):
    """Mean over rows of ``logsumexp_j logits_ij − logits_{i, target}``; rows without a target are left out."""
    valid = ops.any(target, axis=1)
    target_logit = ops.sum(ops.where(target, logits, 0.0), axis=1)
    return masked_mean(ops.logsumexp(logits, axis=1) - target_logit, valid)
