"""Backend fast paths (issue 13): the same numbers as plain Keras, the same `.keras` files.

On PyTorch, `kerasml._backend.call_functional` runs a functional backbone through
`kerasml._backend.torch_layers` (conv, fused batch-norm, pooling on channels-last memory); on
TensorFlow through `kerasml._backend.tensorflow_layers` (fused batch-norm); on JAX on a CPU through
`kerasml._backend.jax_layers` (convolution kernel gradients as one matrix product per kernel tap).
Every test compares with the plain Keras path
(``_backend.fast_paths(False)``) at 1e-5 relative error ``‖fast − plain‖ / ‖plain‖`` (2-norm over the
tensor: the two paths sum in different orders, so single entries near 0 differ by float32 rounding).

Training-mode batch-norm is the one place where plain Keras is itself further than that from the
exact value: its variance is ``E[x²] − E[x]²`` in float32 (off a float64 evaluation by up to ~1e-4
on the outputs and ~1e-3 on the input gradients when a channel's mean is large against its spread),
while PyTorch's fused kernel stays within ~1e-6. There `assert_same_maths` also compares both with
a float64 twin of the model (the same layers and weights in float64): the fast path must be within
1e-5 + e of plain Keras and of the exact value, e being plain Keras' own error against the exact
value.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from fast_paths_worker import embeddings as worker_embeddings
from fast_paths_worker import load as worker_load
from fast_paths_worker import save as worker_save

from kerasml import _backend
from kerasml.models import MetricModel, backbones

BACKEND = keras.backend.backend()
BACKENDS = ("tensorflow", "torch", "jax")
TOLERANCE = 1e-5
WORKER = Path(__file__).with_name("fast_paths_worker.py")
torch_only = pytest.mark.skipif(BACKEND != "torch", reason="the fast path is PyTorch's (elsewhere Keras' own)")
jax_only = pytest.mark.skipif(BACKEND != "jax", reason="the JAX fast path (kerasml._backend.jax_layers)")


@pytest.fixture(autouse=True)
def _fast_paths_on():
    """The fast paths are opt-in (KERASML_FAST_PATHS=1); these tests compare them with plain Keras."""
    with _backend.fast_paths(True):
        yield


def relative_error(value, reference):
    value = np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)
    reference = np.asarray(keras.ops.convert_to_numpy(reference), dtype=np.float64)
    assert value.shape == reference.shape
    return float(np.linalg.norm(value - reference) / max(np.linalg.norm(reference), 1e-30))


def assert_same_maths(fast, plain, exact=None, what=""):
    """``fast`` is within `TOLERANCE` of ``plain`` and, given ``exact`` (float64), of ``exact``.

    Both bounds grow by ``plain``'s own error against ``exact`` (0 without ``exact``).
    """
    slack = 0.0 if exact is None else relative_error(plain, exact)
    if exact is not None:
        assert relative_error(fast, exact) <= TOLERANCE + slack, what
    assert relative_error(fast, plain) <= TOLERANCE + slack, what


def float64_twin(build, model):
    """``build()`` under the float64 dtype policy, with ``model``'s weights: the exact reference."""
    keras.config.set_dtype_policy("float64")
    try:
        twin = build()
    finally:
        keras.config.set_dtype_policy("float32")
    assert len(twin.weights) == len(model.weights)
    for target, source in zip(twin.weights, model.weights):
        target.assign(np.asarray(keras.ops.convert_to_numpy(source), dtype="float64"))
    return twin


def images(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def npair_labels(pairs):
    return np.concatenate([np.arange(pairs), np.arange(pairs)]).astype("int32")


def state(model):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.weights]


def restore(model, values):
    for variable, value in zip(model.weights, values):
        variable.assign(value)


def loss_and_gradients(model, x, y):
    """``(J, dJ/dw for every trainable weight, embeddings)`` of a training-mode forward pass (PyTorch)."""
    import torch

    z = model(x, training=True)
    loss = model.compute_loss(x, y, z)
    gradients = torch.autograd.grad(loss, [v.value for v in model.trainable_weights])
    return loss, gradients, z


# ------------------------------------------------------------------------------- whole models ---


@pytest.mark.parametrize("training", [False, True])
def test_metric_model_embeddings_match_plain_keras(training):
    """On every backend: `call_functional` (fast where there is one) gives Keras' embeddings and statistics."""
    backbone = backbones.get("small_cnn", input_shape=(20, 18, 3), feature_dim=16)
    model = MetricModel(backbone, embedding_dim=8)
    x = images((6, 20, 18, 3))
    before = state(model)
    with _backend.fast_paths(False):
        plain = model(x, training=training)
    plain_state = state(model)
    restore(model, before)
    fast = model(x, training=training)
    assert relative_error(fast, plain) <= TOLERANCE
    for value, reference in zip(state(model), plain_state):
        assert relative_error(value, reference) <= TOLERANCE
    if training:  # batch statistics moved, by the same amount
        assert any(np.abs(a - b).max() > 0 for a, b in zip(plain_state, before))


@torch_only
def test_metric_model_loss_and_gradients_match_plain_keras():
    def build():
        backbone = backbones.get("small_cnn", input_shape=(16, 16, 3), feature_dim=16)
        return MetricModel(backbone, embedding_dim=8, loss="npair")

    model = build()
    twin = float64_twin(build, model)
    x, y = images((8, 16, 16, 3)), npair_labels(4)
    before = state(model)
    with _backend.fast_paths(False):
        plain = loss_and_gradients(model, x, y), state(model)
    restore(model, before)
    fast = loss_and_gradients(model, x, y), state(model)
    exact = loss_and_gradients(twin, x.astype("float64"), y), state(twin)
    assert_same_maths(fast[0][0], plain[0][0], exact[0][0], "loss")
    assert len(fast[0][1]) == len(model.trainable_weights)
    for variable, *gradients in zip(model.trainable_weights, fast[0][1], plain[0][1], exact[0][1]):
        assert_same_maths(*gradients, what=variable.path)
    for variable, *values in zip(model.weights, fast[1], plain[1], exact[1]):
        assert_same_maths(*values, what=variable.path)


@torch_only
@pytest.mark.parametrize("variant", ["bn", "caffe"])
def test_googlenet_inference_embeddings_and_gradients_match_plain_keras(variant):
    import torch

    model = backbones.get("googlenet", input_shape=(48, 40, 3), variant=variant)
    x = torch.tensor(images((2, 48, 40, 3)))
    direction = torch.tensor(images((2, 1024), seed=1))
    weights = [v.value for v in model.trainable_weights]
    results = {}
    for enabled in (False, True):
        with _backend.fast_paths(enabled):
            features = _backend.call_functional(model, x, training=False)
            results[enabled] = features, torch.autograd.grad((features * direction).sum(), weights)
    assert relative_error(results[True][0].detach(), results[False][0].detach()) <= TOLERANCE
    for fast, plain in zip(results[True][1], results[False][1]):
        assert relative_error(fast, plain) <= TOLERANCE


@torch_only
def test_googlenet_training_forward_stays_close_to_plain_keras():
    """Training mode through 57 batch-norms of a random network: float32 rounding grows to ~1e-4.

    (Both paths differ from a float64 evaluation of the same maths by that much; the per-layer
    test below holds every layer to 1e-5.)
    """
    model = backbones.get("googlenet", input_shape=(64, 64, 3))
    x = images((4, 64, 64, 3))
    before = state(model)
    with _backend.fast_paths(False):
        plain = _backend.call_functional(model, x, training=True)
    restore(model, before)
    fast = _backend.call_functional(model, x, training=True)
    assert relative_error(fast, plain) <= 1e-3


# ------------------------------------------------------------------------------- layer by layer ---


def _run_layer(layer, function, args, training, cotangent):
    """``(outputs, gradients w.r.t. inputs and trainable weights, weights after)`` of one layer call."""
    import torch

    leaves = [a.clone().requires_grad_(True) for a in (args if isinstance(args, list) else [args])]
    inputs = leaves if isinstance(args, list) else leaves[0]
    if function is None:
        outputs = layer(inputs, training=training) if "training" in layer.call.__code__.co_varnames else layer(inputs)
    else:
        outputs = function(inputs, training)
    assert outputs is not None, layer.name
    weights = [v.value for v in layer.trainable_weights]
    gradients = torch.autograd.grad(outputs, leaves + weights, cotangent.to(outputs.dtype), allow_unused=True)
    return outputs.detach(), gradients, state(layer)


def _layerwise(build, inputs, training):
    """Every fast layer function against the Keras layer on the same (plain path) inputs: values and VJPs.

    The float64 twin runs each layer's fast function on the same inputs in float64: the exact value.
    """
    import torch

    from kerasml._backend import torch_layers

    model = build()
    for variable in model.non_trainable_weights:  # non-trivial moving statistics
        variable.assign(np.abs(images(tuple(variable.shape), seed=5)) + 0.5)
    twin = float64_twin(build, model)
    input_id, steps, _ = torch_layers.plan(model)
    twin_steps = torch_layers.plan(twin)[1]
    values = {input_id: torch.tensor(inputs)}
    checked = set()
    for (layer, function, takes_training, ids, output), twin_step in zip(steps, twin_steps):
        args = [values[i] for i in ids] if isinstance(ids, list) else values[ids]
        if function is None:
            values[output] = layer(args, training=training).detach() if takes_training else layer(args).detach()
            continue
        before = state(layer)
        with torch.no_grad():
            shape = tuple(function(args, training).shape)
        restore(layer, before)
        cotangent = torch.tensor(np.random.default_rng(3).standard_normal(shape))
        with _backend.fast_paths(False):
            plain = _run_layer(layer, None, args, training, cotangent)
        restore(layer, before)
        fast = _run_layer(layer, function, args, training, cotangent)
        exact_args = [a.double() for a in args] if isinstance(args, list) else args.double()
        exact = _run_layer(twin_step[0], twin_step[1], exact_args, training, cotangent)
        assert_same_maths(fast[0], plain[0], exact[0], layer.name)
        for got, expected, reference in zip(fast[1], plain[1], exact[1]):
            assert (got is None) == (expected is None), layer.name
            if got is not None:
                assert_same_maths(got, expected, reference, layer.name)
        for got, expected, reference in zip(fast[2], plain[2], exact[2]):
            assert_same_maths(got, expected, reference, layer.name)
        values[output] = plain[0]
        checked.add(type(layer).__name__)
    return checked


@torch_only
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("variant", ["bn", "caffe"])
def test_googlenet_every_layer_matches_plain_keras(variant, training):
    checked = _layerwise(
        lambda: backbones.get("googlenet", input_shape=(64, 56, 3), variant=variant), images((3, 64, 56, 3)), training
    )
    expected = {"Conv2D", "ReLU", "MaxPooling2D", "ZeroPadding2D", "Concatenate", "GlobalAveragePooling2D"}
    assert expected | ({"BatchNormalization"} if variant == "bn" else set()) == checked


@torch_only
@pytest.mark.parametrize("training", [False, True])
def test_layer_settings_the_fast_path_reproduces(training):
    """Odd sizes ("same" padding asymmetric), strides, dilation, groups, bias + activation, BN options."""

    def build():
        x = keras.Input((23, 27, 4))
        h = keras.layers.Conv2D(6, 3, strides=2, padding="same", use_bias=True, activation="tanh")(x)
        h = keras.layers.BatchNormalization(center=False, momentum=0.5, epsilon=1e-5)(h)
        h = keras.layers.MaxPooling2D(3, strides=2, padding="same")(h)
        h = keras.layers.Conv2D(6, 2, padding="same", dilation_rate=2, groups=2)(h)
        h = keras.layers.BatchNormalization(scale=False)(h)
        h = keras.layers.MaxPooling2D(2, padding="same")(h)
        h = keras.layers.Conv2D(4, (1, 3), padding="valid")(h)
        frozen = keras.layers.BatchNormalization()
        frozen.trainable = False
        h = frozen(h)
        h = keras.layers.ReLU()(h)
        h = keras.layers.GlobalAveragePooling2D(keepdims=True)(h)
        return keras.Model(x, h)

    checked = _layerwise(build, images((5, 23, 27, 4)), training)
    assert checked == {"Conv2D", "BatchNormalization", "MaxPooling2D", "ReLU", "GlobalAveragePooling2D"}


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's fused batch-norm")
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize(
    "options", [{}, {"center": False, "momentum": 0.5}, {"scale": False, "epsilon": 2e-5}, {"trainable": False}]
)
def test_tensorflow_fused_batch_norm_matches_keras(options, training):
    import tensorflow as tf

    from kerasml._backend import tensorflow_layers

    options = dict(options)
    trainable = options.pop("trainable", True)
    layer = keras.layers.BatchNormalization(**options)
    layer.build((None, 5, 6, 8))
    layer.trainable = trainable
    rng = np.random.default_rng(4)
    for variable in layer.weights:
        variable.assign(rng.uniform(0.5, 2.0, tuple(variable.shape)).astype("float32"))
    # Channels with large means against their spread: where E[x²] − E[x]² loses digits.
    x = (rng.standard_normal((4, 5, 6, 8)) * rng.uniform(0.05, 3, 8) + rng.uniform(0, 4, 8)).astype("float32")
    cotangent = tf.constant(rng.standard_normal(x.shape))
    before = state(layer)
    function = tensorflow_layers.fast_function(layer)
    results = {}
    for path in ("plain", "fast", "exact"):
        restore(layer, before)
        inputs = tf.constant(x, tf.float64 if path == "exact" else tf.float32)
        exact = {name: tf.cast(getattr(layer, name).value, tf.float64) for name in ("moving_mean", "moving_variance")}
        for name in ("gamma", "beta"):
            exact[name] = tf.cast(getattr(layer, name).value, tf.float64) if getattr(layer, name) is not None else None
        watched = [v.value for v in layer.trainable_weights]
        if path == "exact":
            watched = [exact[name] for name in ("gamma", "beta") if getattr(layer, name) is not None and trainable]
        with tf.GradientTape() as tape:
            tape.watch([inputs, *watched])
            if path == "plain":
                y = layer(inputs, training=training)
            elif path == "fast":
                y = function(inputs, training)
            else:  # float64, written out
                gamma = 1.0 if exact["gamma"] is None else exact["gamma"]
                beta = 0.0 if exact["beta"] is None else exact["beta"]
                if training and trainable:
                    mean, variance = tf.nn.moments(inputs, axes=[0, 1, 2])
                    momentum = layer.momentum
                    layer.moving_mean.assign(exact["moving_mean"] * momentum + mean * (1 - momentum))
                    layer.moving_variance.assign(exact["moving_variance"] * momentum + variance * (1 - momentum))
                else:
                    mean, variance = exact["moving_mean"], exact["moving_variance"]
                y = (inputs - mean) * tf.math.rsqrt(variance + layer.epsilon) * gamma + beta
            loss = tf.reduce_sum(tf.cast(y, tf.float64) * cotangent)
        results[path] = y, tape.gradient(loss, [inputs, *watched]), state(layer)
    assert function is not None
    assert_same_maths(results["fast"][0], results["plain"][0], results["exact"][0], "outputs")
    assert len(results["fast"][1]) == len(results["plain"][1]) == len(results["exact"][1])
    for got, expected, reference in zip(*(results[p][1] for p in ("fast", "plain", "exact"))):
        assert_same_maths(got, expected, reference, "gradients")
    for got, expected, reference in zip(*(results[p][2] for p in ("fast", "plain", "exact"))):
        assert_same_maths(got, expected, reference, "statistics")


@torch_only
def test_fast_path_falls_back_where_it_does_not_apply():
    import torch

    from kerasml._backend import torch_layers

    # A layer used twice has no single input: the whole model runs as Keras runs it.
    shared = keras.layers.Conv2D(3, 1)
    x = keras.Input((4, 4, 3))
    twice = keras.Model(x, shared(shared(x)))
    assert torch_layers.plan(twice) is None
    # Layers without a fast function (leaky ReLU, Dense) are called as they are.
    h = keras.layers.Conv2D(3, 1)(x)
    h = keras.layers.ReLU(negative_slope=0.1)(h)
    h = keras.layers.Dense(2)(h)
    mixed = keras.Model(x, h)
    graph = torch_layers.plan(mixed)
    assert [step[1] is None for step in graph[1]] == [False, True, True]
    data = images((2, 4, 4, 3))
    assert relative_error(_backend.call_functional(mixed, data), mixed(data)) <= TOLERANCE
    # Symbolic inputs and the meta device (Keras' shape inference) keep Keras' path.
    assert torch_layers.run(mixed, torch.empty((2, 4, 4, 3), device="meta")) is None
    assert tuple(mixed(keras.Input((4, 4, 3))).shape) == (None, 4, 4, 2)
    # Batch-norm over a single value per channel: Keras' path (its variance is 0; PyTorch refuses).
    y = keras.Input((1, 1, 3))
    single = keras.Model(y, keras.layers.BatchNormalization()(y))
    one = images((1, 1, 1, 3))
    with _backend.fast_paths(False):
        plain = single(one, training=True)
    assert relative_error(_backend.call_functional(single, one, training=True), plain) <= TOLERANCE


@torch_only
def test_torch_compile_traces_keras_own_layers():
    """Under ``torch.compile`` (``train.compile = "torch.compile"``) the fast path steps aside: its plan reads
    the layers' configs, which dynamo cannot trace. (Dynamo's "eager" backend: tracing without compiling.)"""
    import torch

    model = backbones.get("small_cnn", input_shape=(8, 8, 3), feature_dim=4)
    x = torch.tensor(images((2, 8, 8, 3)))
    compiled = torch.compile(lambda t: _backend.call_functional(model, t), backend="eager")
    assert relative_error(compiled(x), model(x)) <= TOLERANCE


@torch_only
def test_mixed_precision_policy_runs_in_its_compute_dtype():
    import torch

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = backbones.get("small_cnn", input_shape=(12, 12, 3), feature_dim=8)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    x = images((4, 12, 12, 3))
    before = state(model)
    with _backend.fast_paths(False):
        plain = _backend.call_functional(model, x, training=True)
    restore(model, before)
    fast = _backend.call_functional(model, torch.tensor(x), training=True)
    assert fast.dtype == plain.dtype == torch.bfloat16
    assert relative_error(fast.float(), plain.float()) <= 2e-2  # bfloat16 has 8 bits of mantissa


def test_fast_paths_switch():
    assert _backend.fast_paths_enabled()
    with _backend.fast_paths(False):
        assert not _backend.fast_paths_enabled()
    assert _backend.fast_paths_enabled()


def test_training_uses_the_fast_path_and_learns_the_same():
    """Two SGD steps through the fast path reach plain Keras' weights (every backend; float64 twin on PyTorch)."""
    batches = [(images((8, 16, 16, 3), seed=s), npair_labels(4)) for s in range(2)]

    def build():
        backbone = backbones.get("small_cnn", input_shape=(16, 16, 3), feature_dim=8, filters=(4,))
        return MetricModel(backbone, embedding_dim=4)

    keras.utils.set_random_seed(0)
    initial = state(build())
    models = {}
    for path in ("plain", "fast", "exact"):
        if path == "exact" and BACKEND != "torch":
            break
        model = build() if path != "exact" else float64_twin(build, models["plain"][0])
        restore(model, initial)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        with _backend.fast_paths(path != "plain"):
            losses = [model.train_on_batch(x, y, return_dict=True)["loss"] for x, y in batches]
        models[path] = model, np.array(losses, dtype="float64"), state(model)
    exact = models.get("exact", (None, None, [None] * len(initial)))
    assert_same_maths(models["fast"][1], models["plain"][1], exact[1], "losses")
    for variable, *values in zip(models["plain"][0].weights, models["fast"][2], models["plain"][2], exact[2]):
        assert_same_maths(*values, what=variable.path)


# ------------------------------------------------------------------------------- JAX ---


def numpy_conv2d(x, kernel, strides, pads, dilation):
    """The convolution from its definition (float64): ``y[b, h, w] = Σ_ij X_pad[b, h·s + i·d, w·s + j·d] · K[i, j]``."""
    x = np.pad(x.astype("float64"), ((0, 0), *pads, (0, 0)))
    kh, kw = kernel.shape[:2]
    out_h = (x.shape[1] - (kh - 1) * dilation[0] - 1) // strides[0] + 1
    out_w = (x.shape[2] - (kw - 1) * dilation[1] - 1) // strides[1] + 1
    y = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dilation[0], i * dilation[0] + (out_h - 1) * strides[0] + 1, strides[0])
            cols = slice(j * dilation[1], j * dilation[1] + (out_w - 1) * strides[1] + 1, strides[1])
            y += x[:, rows, cols, :] @ kernel[i, j].astype("float64")
    return y


def numpy_conv2d_kernel_gradient(x, dy, kernel_shape, strides, pads, dilation):
    """``∂(Σ y·dy)/∂K[i, j] = Σ_{b,h,w} X_pad[b, h·s + i·d, w·s + j·d]ᵀ · dY[b, h, w]`` (float64)."""
    x = np.pad(x.astype("float64"), ((0, 0), *pads, (0, 0)))
    out_h, out_w = dy.shape[1:3]
    gradient = np.zeros(kernel_shape)
    for i in range(kernel_shape[0]):
        for j in range(kernel_shape[1]):
            rows = slice(i * dilation[0], i * dilation[0] + (out_h - 1) * strides[0] + 1, strides[0])
            cols = slice(j * dilation[1], j * dilation[1] + (out_w - 1) * strides[1] + 1, strides[1])
            window = x[:, rows, cols, :].reshape(-1, x.shape[3])
            gradient[i, j] = window.T @ dy.reshape(-1, dy.shape[3]).astype("float64")
    return gradient


@jax_only
@pytest.mark.parametrize(
    "kernel_shape, strides, pads, dilation",
    [
        ((3, 3, 4, 5), (1, 1), ((1, 1), (1, 1)), (1, 1)),
        ((3, 2, 3, 6), (2, 2), ((0, 1), (1, 0)), (1, 1)),
        ((2, 3, 2, 3), (1, 2), ((1, 1), (2, 2)), (2, 2)),
        ((1, 1, 5, 4), (1, 1), ((0, 0), (0, 0)), (1, 1)),
    ],
)
def test_jax_conv2d_values_and_gradients(kernel_shape, strides, pads, dilation):
    """`jax_layers.conv2d`: NumPy's convolution and kernel gradient; XLA's own gradients at 1e-5."""
    import jax

    from kerasml._backend import jax_layers

    x = images((3, 9, 11, kernel_shape[2]))
    kernel = images(kernel_shape, seed=1)
    y = jax_layers.conv2d(x, kernel, strides, pads, dilation)
    assert relative_error(y, numpy_conv2d(x, kernel, strides, pads, dilation)) <= TOLERANCE
    dy = images(tuple(y.shape), seed=2)

    def plain(inputs, weights):
        return jax.lax.conv_general_dilated(
            inputs, weights, strides, pads, rhs_dilation=dilation, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    fast_dx, fast_dk = jax.vjp(lambda a, b: jax_layers.conv2d(a, b, strides, pads, dilation), x, kernel)[1](dy)
    plain_dx, plain_dk = jax.vjp(plain, x, kernel)[1](dy)
    exact_dk = numpy_conv2d_kernel_gradient(x, np.asarray(dy), kernel_shape, strides, pads, dilation)
    assert_same_maths(fast_dk, plain_dk, exact_dk, "kernel gradient")
    assert relative_error(fast_dx, plain_dx) <= TOLERANCE
    assert (
        relative_error(
            jax.jit(jax_layers.kernel_gradient, static_argnums=(2, 3, 4, 5))(
                x, dy, kernel_shape, strides, pads, dilation
            ),
            exact_dk,
        )
        <= TOLERANCE
    )


def numpy_max_pool2d(x, pool_size, pads):
    """Max over non-overlapping windows of ``x`` padded with ``-inf``, and its gradient (float64).

    The gradient of a window goes to its first maximum in row-major window order (XLA's
    ``select_and_scatter``): ``dx = Σ_windows dy · 1[position = first argmax]``.
    """
    x = np.pad(x.astype("float64"), ((0, 0), *pads, (0, 0)), constant_values=-np.inf)
    (ph, pw), (b, h, w, c) = pool_size, x.shape
    windows = x.reshape(b, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 5, 2, 4).reshape(b, h // ph, w // pw, c, -1)
    first = windows.argmax(-1)  # NumPy's argmax: the first maximum

    def gradient(dy):
        one_hot = (np.arange(ph * pw) == first[..., None]) * dy.astype("float64")[..., None]
        dx = one_hot.reshape(b, h // ph, w // pw, c, ph, pw).transpose(0, 1, 4, 2, 5, 3).reshape(b, h, w, c)
        return dx[:, pads[0][0] : h - pads[0][1], pads[1][0] : w - pads[1][1], :]

    return windows.max(-1), gradient


@jax_only
@pytest.mark.parametrize(
    "shape, pool_size, pads", [((3, 8, 6, 4), (2, 2), ((0, 0), (0, 0))), ((2, 7, 9, 3), (2, 3), ((0, 1), (0, 0)))]
)
def test_jax_max_pool2d_values_and_gradients(shape, pool_size, pads):
    """`jax_layers.max_pool2d` against NumPy and XLA's ``reduce_window`` gradient, ties (ReLU's zeros) included."""
    import jax

    from kerasml._backend import jax_layers

    x = np.maximum(images(shape), 0.0)  # about half the entries 0: windows with tied maxima
    expected, expected_gradient = numpy_max_pool2d(x, pool_size, pads)
    y, vjp = jax.vjp(lambda inputs: jax_layers.max_pool2d(inputs, pool_size, pads), x)
    dy = images(tuple(y.shape), seed=1)
    assert np.array_equal(np.asarray(y), expected)
    assert np.array_equal(np.asarray(vjp(dy)[0]), expected_gradient(dy))

    def plain(inputs):
        window = (1, *pool_size, 1)
        return jax.lax.reduce_window(inputs, -np.inf, jax.lax.max, window, window, ((0, 0), *pads, (0, 0)))

    assert np.array_equal(np.asarray(jax.vjp(plain, x)[1](dy)[0]), np.asarray(vjp(dy)[0]))


@jax_only
def test_jax_fast_path_applies_where_it_reproduces_keras():
    from kerasml._backend import jax_layers

    x = keras.Input((11, 12, 4))
    h = keras.layers.Conv2D(4, 5, padding="same")(x)  # 25 taps: XLA's own gradient
    h = keras.layers.Conv2D(4, 3, padding="same", use_bias=True, activation="relu")(h)
    h = keras.layers.MaxPooling2D(2, padding="same")(h)
    h = keras.layers.Conv2D(4, 3, groups=2)(h)
    h = keras.layers.MaxPooling2D(3, strides=2)(h)  # overlapping windows: Keras' path
    h = keras.layers.BatchNormalization()(h)
    model = keras.Model(x, h)
    assert [step[1] is not None for step in jax_layers.plan(model)[1]] == [False, True, True, False, False, False]
    data = images((2, 11, 12, 4))
    assert relative_error(_backend.call_functional(model, data), model(data)) <= TOLERANCE
    assert jax_layers.run(model, keras.Input((11, 12, 4))) is None  # Keras' symbolic tensors keep Keras' path
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        low = backbones.get("small_cnn", input_shape=(8, 8, 3), feature_dim=4, filters=())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert jax_layers.plan(low) is None  # bfloat16 convolutions: Keras' path


@jax_only
def test_jax_metric_model_loss_gradients_match_plain_keras():
    """``jax.grad`` of the N-pair loss through `stateless_call` (what Keras' jitted step differentiates)."""
    import jax

    backbone = backbones.get("small_cnn", input_shape=(10, 10, 3), feature_dim=8, filters=(4,))
    model = MetricModel(backbone, embedding_dim=4, loss="npair")
    x, y = images((8, 10, 10, 3)), npair_labels(4)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss(weights):
        z, updated = model.stateless_call(weights, non_trainable, x, training=True)
        return model.base_loss(y, z), (z, updated)

    results = {}
    for enabled in (False, True):
        with _backend.fast_paths(enabled):
            results[enabled] = jax.jit(jax.value_and_grad(loss, has_aux=True))(trainable)
    (fast_loss, (fast_z, fast_state)), fast_gradients = results[True]
    (plain_loss, (plain_z, plain_state)), plain_gradients = results[False]
    assert relative_error(fast_loss, plain_loss) <= TOLERANCE
    assert relative_error(fast_z, plain_z) <= TOLERANCE
    for got, expected in zip(fast_state, plain_state):
        assert relative_error(got, expected) <= TOLERANCE
    assert len(fast_gradients) == len(model.trainable_variables)
    for variable, got, expected in zip(model.trainable_variables, fast_gradients, plain_gradients):
        assert relative_error(got, expected) <= TOLERANCE, variable.path


# ------------------------------------------------------------------------------- .keras files ---


def _run_worker(backend, command, folder):
    env = {**os.environ, "KERAS_BACKEND": backend}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(WORKER), command, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.cross_backend
def test_keras_files_cross_backends_with_the_same_embeddings(tmp_path):
    """Saved on PyTorch (trained through the fast path) and here; loaded everywhere: the same embeddings."""
    saved = {}
    for saver in dict.fromkeys(("torch", BACKEND)):
        saved[saver] = worker_save(tmp_path) if saver == BACKEND else _run_worker(saver, "save", tmp_path)
    loaded = {BACKEND: worker_load(tmp_path)}
    for backend in BACKENDS:
        if backend != BACKEND:
            loaded[backend] = _run_worker(backend, "load", tmp_path)
    for saver, reference in saved.items():
        expected = np.array(reference["plain"])
        assert np.abs(expected).max() > 0
        assert relative_error(np.array(reference["fast"]), expected) <= TOLERANCE
        for backend, results in loaded.items():
            for path in ("fast", "plain"):
                error = relative_error(np.array(results[saver][path]), expected)
                assert error <= TOLERANCE, f"saved on {saver}, loaded on {backend} ({path}): {error:.2e}"


def test_worker_embeddings_helper_runs_here(tmp_path):
    result = worker_embeddings(MetricModel(backbones.get("small_cnn", input_shape=(16, 16, 3)), embedding_dim=4))
    assert np.array(result["fast"]).shape == (6, 4)
    assert relative_error(np.array(result["fast"]), np.array(result["plain"])) <= TOLERANCE


# ------------------------------------------------------------------------------- compiled inference ---


def test_compiled_predict_matches_the_model_in_chunks():
    """`_backend.predict` (tf.function / jax.jit / no_grad): every chunk, the padded last one included."""
    model = MetricModel(backbones.get("small_cnn", input_shape=(12, 12, 3), feature_dim=8), embedding_dim=4)
    x = images((11, 12, 12, 3))
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    for batch_size in (4, 11, 32):
        assert relative_error(_backend.predict(model, x, batch_size=batch_size), expected) <= TOLERANCE
    assert relative_error(model.embed(x, batch_size=4), expected) <= TOLERANCE
    assert relative_error(model.embed(keras.ops.convert_to_tensor(x)), expected) <= TOLERANCE
    assert _backend.predict(model, x[:0], batch_size=4).shape == (0, 4)
    with pytest.raises(ValueError, match="batch_size"):
        _backend.predict(model, x, batch_size=0)


def test_compiled_predict_sees_the_weights_after_training():
    model = MetricModel(backbones.get("small_cnn", input_shape=(12, 12, 3), feature_dim=8), embedding_dim=4)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    x = images((8, 12, 12, 3))
    first = model.embed(x)
    model.train_on_batch(x, npair_labels(4))
    second = model.embed(x)
    assert np.abs(second - first).max() > 1e-4
    assert relative_error(second, keras.ops.convert_to_numpy(model(x, training=False))) <= TOLERANCE
