"""JAX fast path of a functional Keras model on a CPU: convolution and max-pooling gradients without XLA's slow kernels.

XLA's CPU backend computes the gradient of a convolution with respect to its kernel as another
convolution (the activations convolved with the output gradient, the batch as the contracted
dimension); its Eigen kernel for that shape is many times slower than the forward convolution:
on the small CNN (64 px, batch 64, one thread), 0.6-1.0 s for the 32x32x32 -> 64 layer against
~35 ms forward, most of a training step. The same gradient is a sum of one matrix product per
kernel tap,

    dK[i, j] = Σ_{b, h, w} X_pad[b, h·s + i·d, w·s + j·d, :]ᵀ · dY[b, h, w, :]     ([C_in, C_out])

(``s`` the stride, ``d`` the dilation, ``X_pad`` the padded input), which XLA runs through its
matrix-multiplication kernel: 3-5x faster for these layers. `conv2d` is ``lax.conv_general_dilated``
with that gradient (``jax.custom_vjp``); its forward and its input gradient are XLA's own.

Max-pooling's gradient likewise: XLA scatters it (``select_and_scatter``, 20-30x PyTorch's kernel on
these activations); over non-overlapping windows (strides = window, the small CNN's 2x2 pools)
`max_pool2d` computes the same gradient with elementwise, fused operations.

`run` executes a functional model's graph (`kerasml._backend.graph`) with `conv2d` in place of every
channels-last, ungrouped, float32 ``Conv2D`` of at most 9 kernel taps (larger kernels: no gain measured),
`max_pool2d` in place of every such ``MaxPooling2D`` with non-overlapping windows, and calls every other
layer as it is. Only on CPU devices: on GPUs and TPUs the vendor libraries' gradients are fast and Keras'
path is kept. The variables and the ``.keras`` file are Keras' own; the kernel gradient differs from
XLA's only in the order of its float32 sums, max-pooling's not at all.
"""

import functools

import jax
import keras
from jax import lax

from kerasml._backend import graph

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
# Kernels with more taps keep XLA's gradient: one product per tap was no faster for GoogLeNet's 7x7/2 stem
# (1167 vs 1096 ms) and slower for a 5x5 on 28x28x16 (52 vs 24 ms); 3x3 kernels gain 2-4x, 1x1 kernels (one
# product) 4-37x (GoogLeNet's 28x28 256 -> 128: 1103 vs 30 ms).
_MAX_TAPS = 9


def _conv(x, kernel, strides, pads, dilation):
    return lax.conv_general_dilated(x, kernel, strides, pads, rhs_dilation=dilation, dimension_numbers=_DIMENSIONS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d(x, kernel, strides, pads, dilation):
    """``lax.conv_general_dilated`` (NHWC, HWIO) whose kernel gradient is a sum of matrix products.

    Args:
        x: inputs ``[B, H, W, C_in]``.
        kernel: ``[kh, kw, C_in, C_out]`` (no feature groups).
        strides: ``(sh, sw)``.
        pads: ``((top, bottom), (left, right))``, each ≥ 0.
        dilation: ``(dh, dw)``.

    Returns:
        ``[B, H_out, W_out, C_out]``.
    """
    return _conv(x, kernel, strides, pads, dilation)


def _conv2d_forward(x, kernel, strides, pads, dilation):
    return _conv(x, kernel, strides, pads, dilation), (x, kernel)


def _conv2d_backward(strides, pads, dilation, residuals, dy):
    x, kernel = residuals
    _, input_gradient = jax.vjp(lambda inputs: _conv(inputs, kernel, strides, pads, dilation), x)
    (dx,) = input_gradient(dy)
    return dx, kernel_gradient(x, dy, kernel.shape, strides, pads, dilation)


conv2d.defvjp(_conv2d_forward, _conv2d_backward)


def kernel_gradient(x, dy, kernel_shape, strides, pads, dilation):
    """``∂L/∂kernel`` of `conv2d` from its inputs ``x`` and output gradient ``dy``, one product per tap."""
    kh, kw = kernel_shape[0], kernel_shape[1]
    x = jax.numpy.pad(x, ((0, 0), *pads, (0, 0)))
    batch, out_h, out_w = dy.shape[0], dy.shape[1], dy.shape[2]
    taps = []
    for i in range(kh):
        for j in range(kw):
            top, left = i * dilation[0], j * dilation[1]
            window = lax.slice(
                x,
                (0, top, left, 0),
                (batch, top + (out_h - 1) * strides[0] + 1, left + (out_w - 1) * strides[1] + 1, x.shape[3]),
                (1, strides[0], strides[1], 1),
            )
            taps.append(lax.dot_general(window, dy, (((0, 1, 2), (0, 1, 2)), ((), ()))))
    return jax.numpy.stack(taps).reshape(kernel_shape).astype(dy.dtype)


def _pads(size, kernel_size, strides, dilation, padding):
    window = [(k - 1) * d + 1 for k, d in zip(kernel_size, dilation)]
    return tuple(tuple(p) for p in lax.padtype_to_pads(size, window, strides, padding.upper()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool2d(x, pool_size, pads):
    """Max-pooling over non-overlapping windows (strides = ``pool_size``), NHWC, with a scatter-free gradient.

    XLA's CPU gradient of ``lax.reduce_window`` max (``select_and_scatter``) costs 20-30x PyTorch's on
    the small CNN's activations. With windows that do not overlap, the gradient is the output gradient
    put where each window's maximum is (its first occurrence in row-major window order, as
    ``select_and_scatter`` does), which is elementwise work XLA fuses.

    Args:
        x: inputs ``[B, H, W, C]``.
        pool_size: ``(ph, pw)``, also the strides.
        pads: ``((top, bottom), (left, right))`` of ``-inf`` padding (``"same"``), each < the window;
            ``H + top + bottom`` and ``W + left + right`` are multiples of the window.

    Returns:
        ``[B, H_out, W_out, C]``.
    """
    return _windows(x, pool_size, pads).max(axis=(2, 4))


def _windows(x, pool_size, pads):
    """``x`` padded with ``-inf`` and reshaped to ``[B, H_out, ph, W_out, pw, C]``."""
    if any(p for pair in pads for p in pair):
        x = jax.numpy.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jax.numpy.inf)
    batch, height, width, channels = x.shape
    (ph, pw) = pool_size
    return x.reshape(batch, height // ph, ph, width // pw, pw, channels)


def _max_pool2d_forward(x, pool_size, pads):
    y = max_pool2d(x, pool_size, pads)
    return y, (x, y)


def _max_pool2d_backward(pool_size, pads, residuals, dy):
    x, y = residuals
    windows = _windows(x, pool_size, pads)
    taken = None
    parts = []
    for i in range(pool_size[0]):
        for j in range(pool_size[1]):
            is_max = windows[:, :, i, :, j, :] == y
            first = is_max if taken is None else is_max & ~taken
            taken = is_max if taken is None else taken | is_max
            parts.append(jax.numpy.where(first, dy, jax.numpy.zeros_like(dy)))
    batch, out_h, out_w, channels = dy.shape
    dx = jax.numpy.stack(parts, axis=-1).reshape(batch, out_h, out_w, channels, pool_size[0], pool_size[1])
    dx = dx.transpose(0, 1, 4, 2, 5, 3).reshape(batch, out_h * pool_size[0], out_w * pool_size[1], channels)
    (top_pad, _), (left_pad, _) = pads
    return (dx[:, top_pad : top_pad + x.shape[1], left_pad : left_pad + x.shape[2], :],)


max_pool2d.defvjp(_max_pool2d_forward, _max_pool2d_backward)


def _max_pool2d_layer(layer, config):
    pool_size = tuple(config["pool_size"])
    strides = tuple(config["strides"] or pool_size)
    if (
        config.get("data_format") != "channels_last"
        or config.get("padding") not in ("same", "valid")
        or strides != pool_size
        or keras.backend.standardize_dtype(layer.compute_dtype) != "float32"
    ):
        return None
    padding = config["padding"]

    def call(inputs, training):
        if inputs.ndim != 4 or inputs.dtype != jax.numpy.float32:
            return None
        x = inputs
        if padding == "valid":  # the rows and columns past the last whole window are not pooled
            x = x[:, : x.shape[1] // pool_size[0] * pool_size[0], : x.shape[2] // pool_size[1] * pool_size[1], :]
            pads = ((0, 0), (0, 0))
        else:
            pads = _pads(x.shape[1:3], pool_size, strides, (1, 1), padding)
        if any(p >= k for pair, k in zip(pads, pool_size) for p in pair) or 0 in x.shape[1:3]:
            return None
        return max_pool2d(x, pool_size, pads)

    return call


def _conv2d_layer(layer, config):
    if (
        config.get("data_format") != "channels_last"
        or config.get("padding") not in ("same", "valid")
        or int(config.get("groups", 1)) != 1
        or config["kernel_size"][0] * config["kernel_size"][1] > _MAX_TAPS
        or config.get("lora_rank")
        or getattr(layer, "quantization_mode", None)
        or keras.backend.standardize_dtype(layer.compute_dtype) != "float32"
    ):
        return None
    strides, dilation = tuple(config["strides"]), tuple(config["dilation_rate"])
    kernel_size, padding = tuple(config["kernel_size"]), config["padding"]
    activation = None if config.get("activation") in (None, "linear") else layer.activation

    def call(inputs, training):
        if inputs.ndim != 4 or inputs.dtype != jax.numpy.float32:
            return None
        kernel = layer.kernel.value
        if kernel.dtype != jax.numpy.float32 or kernel.shape[2] != inputs.shape[3]:
            return None
        pads = _pads(inputs.shape[1:3], kernel_size, strides, dilation, padding)
        y = conv2d(inputs, kernel, strides, pads, dilation)
        if layer.use_bias:
            y = y + layer.bias.value
        return y if activation is None else activation(y)

    return call


_FAST = {keras.layers.Conv2D: _conv2d_layer, keras.layers.MaxPooling2D: _max_pool2d_layer}


def fast_function(layer):
    """``f(inputs, training) -> outputs | None`` computing ``layer`` with `conv2d` / `max_pool2d`, or ``None``.

    Only the exact Keras classes (not subclasses, which may change ``call``), channels-last, float32:
    ``Conv2D`` ungrouped, with at most 9 kernel taps (3x3, 1x3, 1x1...), without LoRA or quantization;
    ``MaxPooling2D`` with strides equal to its window (non-overlapping windows).
    """
    builder = _FAST.get(type(layer))
    return None if builder is None else builder(layer, layer.get_config())


def plan(model):
    """The cached execution plan of ``model`` with `fast_function` (`kerasml._backend.graph.plan`)."""
    return graph.plan(model, fast_function)


def run(model, inputs, training=False):
    """``model(inputs, training=training)`` with `conv2d` for its convolutions, or ``None`` when not applicable.

    Applies on CPU devices to JAX arrays and tracers (inside ``jax.jit``; Keras' symbolic tensors keep
    Keras' path) of rank 4, through a functional model with one input and one output.
    """
    if not isinstance(inputs, jax.Array) or inputs.ndim != 4 or jax.default_backend() != "cpu":
        return None
    return graph.run(plan(model), inputs, training)
