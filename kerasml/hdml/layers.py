"""HDML's layers: running block means, the hardness-aware augmentation, the generator."""

import keras
from keras import ops

from kerasml.hdml.ops import hardness_factor, pull_negatives, pull_npair_negatives, pull_pair_negatives
from kerasml.layers.batch_norm import add_batch_norm_weights, batch_norm

LAYOUTS = ("npair", "triplet", "any")


@keras.saving.register_keras_serializable(package="kerasml")
class BlockMean(keras.layers.Layer):
    """The mean of a scalar over the last complete block of ``block_size`` steps.

    HDML's ``J_avg`` and ``J̄_gen``: piecewise constant (not an EMA), equal to
    ``initial`` until the first block completes. Non-finite values (NaN, ±inf)
    are skipped: they neither enter the mean nor count toward the block, as in
    the HDML authors' collector (``wzzheng/HDML`` lib/nn_Ops.py:192-198, which
    skips NaN), so a block is ``block_size`` finite values and ``value`` keeps
    its last mean until one completes. State is three non-trainable variables
    (``value``, ``total``, ``count``), so it is saved with the model, restored
    on resume and updated inside compiled train steps on every backend.

    Args:
        block_size: steps per block. Defaults to ``64``.
        initial: value before the first block completes. Defaults to ``1e6``.
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(self, block_size=64, initial=1e6, **kwargs):
        super().__init__(**kwargs)
        if int(block_size) < 1:
            raise ValueError(f"Invalid value for argument `block_size`. Expected >= 1. Received: {block_size}")
        self.block_size = int(block_size)
        self.initial = float(initial)
        self.value = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.initial), trainable=False, name="value"
        )
        self.total = self.add_weight(shape=(), initializer="zeros", trainable=False, name="total")
        self.count = self.add_weight(shape=(), initializer="zeros", trainable=False, name="count")
        self.built = True

    def update(self, x):
        """Add one step's value (its gradient is ignored; a non-finite one is skipped); close the block when full."""
        x = ops.stop_gradient(ops.cast(x, "float32"))
        finite = ops.isfinite(x)
        total = self.total.value + ops.where(finite, x, 0.0)
        count = self.count.value + ops.cast(finite, "float32")
        full = count >= self.block_size
        self.value.assign(ops.where(full, total / ops.maximum(count, 1.0), self.value.value))
        self.total.assign(ops.where(full, 0.0, total))
        self.count.assign(ops.where(full, 0.0, count))

    def call(self, inputs=None):
        return ops.convert_to_tensor(self.value)

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size, "initial": self.initial}


@keras.saving.register_keras_serializable(package="kerasml")
class HardnessAwareAugmentation(keras.layers.Layer):
    """HDML eq. (1): synthesise harder negatives by pulling them toward their anchors.

    ``ẑ⁻ = z + (d⁺ + λ₀ (d⁻ − d⁺)) (z⁻ − z) / d⁻`` when ``d⁻ > d⁺``, else ``z⁻``,
    with Euclidean ``d`` and ``λ₀ = exp(−α / J_avg)`` (see `kerasml.hdml`).
    ``J_avg`` is non-trainable state: the block mean (`BlockMean`) of the
    metric loss that the caller feeds to `update_j_avg`, 1e6 until the first
    block completes, so nothing is pulled at first.

    Layouts of the input ``z``:

    - ``"npair"``: ``[a_1..a_N; p_1..p_N]`` → returns ``(anchors [N, D],
      pulled [N, N, D])``, row ``i`` holding every ``p_j`` pulled toward ``a_i``
      (``j = i``: ``p_i`` unchanged).
    - ``"triplet"``: ``[anchors; positives; negatives]`` → returns
      ``(anchors, positives, pulled_negatives)``, each ``[n, D]``.
    - ``"any"``: any labelled batch ``[B, D]`` (call with ``labels``) → returns
      ``(embeddings [B, D], pulled [B, B, D])``, row ``i`` holding every ``z_j``,
      pulled toward ``z_i`` when ``y_j ≠ y_i`` (`kerasml.hdml.ops.pull_pair_negatives`).

    Args:
        alpha: the pulling factor ``α``. Defaults to ``90.0``.
        layout: ``"npair"``, ``"triplet"`` or ``"any"``. Defaults to ``"npair"``.
        block_size: steps per ``J_avg`` block. Defaults to ``64``.
        initial_j_avg: ``J_avg`` before the first block. Defaults to ``1e6``.
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(self, alpha=90.0, layout="npair", block_size=64, initial_j_avg=1e6, **kwargs):
        super().__init__(**kwargs)
        if layout not in LAYOUTS:
            raise ValueError(f"Invalid value for argument `layout`. Expected one of {LAYOUTS}. Received: {layout!r}")
        self.alpha = float(alpha)
        self.layout = layout
        self.j_avg = BlockMean(block_size, initial_j_avg, name="j_avg")

    def update_j_avg(self, j_m):
        """Feed one step's metric loss into the ``J_avg`` block mean."""
        self.j_avg.update(j_m)

    def hardness(self):
        """The current ``λ₀ = exp(−α / J_avg)``."""
        return hardness_factor(self.alpha, self.j_avg.value)

    def call(self, embeddings, labels=None):
        j_avg = self.j_avg.value
        if self.layout == "any":
            if labels is None:
                raise ValueError(
                    "HardnessAwareAugmentation(layout='any') pulls each anchor's negatives, which the labels "
                    "tell apart. Received: labels=None. Call it as `augmentation(embeddings, labels)`."
                )
            return embeddings, pull_pair_negatives(embeddings, labels, j_avg, self.alpha)
        if self.layout == "npair":
            n = ops.shape(embeddings)[0] // 2
            anchors, positives = embeddings[:n], embeddings[n : 2 * n]
            return anchors, pull_npair_negatives(anchors, positives, j_avg, self.alpha)
        n = ops.shape(embeddings)[0] // 3
        anchors, positives, negatives = embeddings[:n], embeddings[n : 2 * n], embeddings[2 * n : 3 * n]
        return anchors, positives, pull_negatives(anchors, positives, negatives, j_avg, self.alpha)

    def get_config(self):
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "layout": self.layout,
            "block_size": self.j_avg.block_size,
            "initial_j_avg": self.j_avg.initial,
        }


@keras.saving.register_keras_serializable(package="kerasml")
class HDMLGenerator(keras.layers.Layer):
    """HDML's generator ``i``: embedding ``z`` → feature space ``y``.

    ``Dense(units) → ReLU → batch-norm → Dense(feature_dim)`` (linear output),
    the authors' order. ``call(z, training, stop_weight_gradients=False,
    update_statistics=True)``: with ``stop_weight_gradients=True`` gradients
    flow to ``z`` but not to the generator's weights, which is how `HDMLModel`
    lets ``J_syn`` train the backbone through the generator without training
    the generator.

    Args:
        feature_dim: size of ``y`` (the backbone's feature size).
        units: hidden width. Defaults to ``512``.
        momentum: batch-norm momentum. Defaults to ``0.99``.
        epsilon: batch-norm epsilon. Defaults to ``1e-3``.
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(self, feature_dim, units=512, momentum=0.99, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        self.feature_dim = int(feature_dim)
        self.units = int(units)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        dim = input_shape[-1]
        self.hidden_kernel = self.add_weight(
            shape=(dim, self.units), initializer="glorot_uniform", name="hidden_kernel"
        )
        self.hidden_bias = self.add_weight(shape=(self.units,), initializer="zeros", name="hidden_bias")
        add_batch_norm_weights(self, self.units)
        self.output_kernel = self.add_weight(
            shape=(self.units, self.feature_dim), initializer="glorot_uniform", name="output_kernel"
        )
        self.output_bias = self.add_weight(shape=(self.feature_dim,), initializer="zeros", name="output_bias")

    def call(self, inputs, training=None, stop_weight_gradients=False, update_statistics=True):
        weights = [self.hidden_kernel, self.hidden_bias, self.gamma, self.beta, self.output_kernel, self.output_bias]
        if stop_weight_gradients:
            weights = [ops.stop_gradient(w) for w in weights]
        hidden_kernel, hidden_bias, gamma, beta, output_kernel, output_bias = weights
        h = ops.relu(ops.matmul(ops.cast(inputs, self.compute_dtype), hidden_kernel) + hidden_bias)
        h = batch_norm(h, self, bool(training), update_statistics, self.momentum, self.epsilon, gamma=gamma, beta=beta)
        return ops.matmul(h, output_kernel) + output_bias

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.feature_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "feature_dim": self.feature_dim,
            "units": self.units,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
        }
