"""PyTorch fast path of a functional Keras model: the same layers and weights, without layout copies.

Keras' PyTorch backend runs a channels-last ``Conv2D`` / ``MaxPooling2D`` as ``permute(...).contiguous()``
to NCHW, then a copy to the channels-last memory format, the operation, and a permute back; a
``BatchNormalization`` as separate moment, subtract, multiply and add kernels. On a CPU these copies
and kernels cost as much as the convolutions themselves.

`run` executes the graph of a functional model (`kerasml._backend.graph`) with PyTorch functions
on the NHWC tensors Keras uses: an NHWC tensor that is contiguous *is* an NCHW tensor in the channels-last
memory format once permuted (a view, no copy), which is the layout PyTorch's CPU (oneDNN) and
CUDA (cuDNN) kernels prefer; their outputs, permuted back, are contiguous NHWC tensors again.
``Conv2D`` → ``F.conv2d``, ``BatchNormalization`` → the fused ``F.batch_norm``, ``ReLU`` →
``F.relu``, ``MaxPooling2D`` → ``F.max_pool2d``, ``ZeroPadding2D``, ``Concatenate`` and
``GlobalAveragePooling2D`` → their one-kernel forms. Every other layer is called as it is
(``layer(x, training=...)``), on the same NHWC tensors.

Nothing changes in the model: the layers, their variables (read through ``variable.value``, so
gradients reach the same parameters) and the ``.keras`` file are Keras' own; only which kernels
compute the same maths differs. The moving statistics of batch-norm follow Keras' rule
(``moving ← momentum · moving + (1 − momentum) · batch``, biased batch variance) through
``variable.assign``.
"""

import keras
import torch
import torch.nn.functional as F

from kerasml._backend import graph

_LOW_PRECISION = (torch.float16, torch.bfloat16)


# ------------------------------------------------------------------------------------- helpers ---


def _nchw(x):
    return x.permute(0, 3, 1, 2)


def _nhwc(x):
    return x.permute(0, 2, 3, 1)


def _dtype(name):
    return getattr(torch, keras.backend.standardize_dtype(name))


def _as_compute(x, layer):
    """``x`` in the layer's compute dtype (what Keras' autocast does on entry to ``call``)."""
    dtype = _dtype(layer.compute_dtype)
    return x.to(dtype) if x.is_floating_point() and x.dtype != dtype else x


def _weight(variable, dtype):
    value = variable.value
    return value if value.dtype == dtype else value.to(dtype)


def _same_padding(size, kernel, stride, dilation):
    """``(before, after)`` of TensorFlow's ``"same"`` padding along one side of length ``size``."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _padding(x_nchw, kernel, strides, dilation, padding, fill):
    """``(x, symmetric padding)`` for ``F.conv2d`` / ``F.max_pool2d``; asymmetric "same" pads ``x`` itself."""
    if padding == "valid":
        return x_nchw, (0, 0)
    pads = [_same_padding(x_nchw.shape[2 + i], kernel[i], strides[i], dilation[i]) for i in range(2)]
    if all(before == after and before <= kernel[i] // 2 for i, (before, after) in enumerate(pads)):
        return x_nchw, (pads[0][0], pads[1][0])
    (top, bottom), (left, right) = pads
    return F.pad(x_nchw, (left, right, top, bottom), value=fill), (0, 0)


# ------------------------------------------------------------------------------------- layers ---


def _conv2d(layer, config):
    if (
        config.get("data_format") != "channels_last"
        or config.get("padding") not in ("same", "valid")
        or config.get("lora_rank")
        or getattr(layer, "quantization_mode", None)
    ):
        return None
    strides, dilation, groups = tuple(config["strides"]), tuple(config["dilation_rate"]), int(config["groups"])
    kernel_size, padding = tuple(config["kernel_size"]), config["padding"]
    activation = None if config.get("activation") in (None, "linear") else layer.activation

    def conv2d(inputs, training):
        x = _as_compute(inputs, layer)
        kernel = _weight(layer.kernel, x.dtype).permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
        x, pad = _padding(_nchw(x), kernel_size, strides, dilation, padding, 0.0)
        y = _nhwc(F.conv2d(x, kernel, None, strides, pad, dilation, groups))
        if layer.use_bias:
            # Added apart, as Keras does: oneDNN's fused bias gradient is not reproducible from one
            # process state to the next (a resumed run would drift from an uninterrupted one by 1 ulp).
            y = y + _weight(layer.bias, y.dtype)
        return y if activation is None else activation(y)

    return conv2d


def _batch_norm(layer, config):
    axis = config.get("axis")
    if config.get("synchronized") or config.get("renorm") or axis not in (-1, 3):
        return None
    momentum, epsilon = float(config["momentum"]), float(config["epsilon"])
    center, scale = bool(config["center"]), bool(config["scale"])

    def batch_norm(inputs, training):
        if inputs.ndim not in (2, 4):
            return None
        x = inputs.float() if inputs.dtype in _LOW_PRECISION else inputs  # Keras: statistics in float32 at least
        x = _nchw(x) if x.ndim == 4 else x
        gamma = _weight(layer.gamma, x.dtype) if scale else None
        beta = _weight(layer.beta, x.dtype) if center else None
        channels = x.shape[1]
        count = x.numel() // max(channels, 1)
        if training and layer.trainable:
            if count < 2:
                return None
            # momentum=1 makes the running buffers the batch mean and the unbiased variance.
            mean = torch.zeros(channels, dtype=x.dtype, device=x.device)
            unbiased = torch.ones(channels, dtype=x.dtype, device=x.device)
            y = F.batch_norm(x, mean, unbiased, gamma, beta, True, 1.0, epsilon)
            variance = unbiased * ((count - 1) / count)
            moving_mean = _weight(layer.moving_mean, x.dtype)
            moving_variance = _weight(layer.moving_variance, x.dtype)
            layer.moving_mean.assign(moving_mean * momentum + mean * (1.0 - momentum))
            layer.moving_variance.assign(moving_variance * momentum + variance * (1.0 - momentum))
        else:
            moving_mean = _weight(layer.moving_mean, x.dtype)
            moving_variance = _weight(layer.moving_variance, x.dtype)
            y = F.batch_norm(x, moving_mean, moving_variance, gamma, beta, False, 0.0, epsilon)
        y = _nhwc(y) if y.ndim == 4 else y
        return y.to(_dtype(layer.compute_dtype))

    return batch_norm


def _relu(layer, config):
    if config.get("max_value") is not None or config.get("negative_slope") or config.get("threshold"):
        return None
    return lambda inputs, training: F.relu(_as_compute(inputs, layer))


def _max_pool2d(layer, config):
    if config.get("data_format") != "channels_last" or config.get("padding") not in ("same", "valid"):
        return None
    pool_size = tuple(config["pool_size"])
    strides = tuple(config["strides"] or pool_size)
    padding = config["padding"]

    def max_pool2d(inputs, training):
        x, pad = _padding(_nchw(_as_compute(inputs, layer)), pool_size, strides, (1, 1), padding, float("-inf"))
        return _nhwc(F.max_pool2d(x, pool_size, strides, pad))

    return max_pool2d


def _zero_padding2d(layer, config):
    if config.get("data_format") != "channels_last":
        return None
    (top, bottom), (left, right) = config["padding"]
    return lambda inputs, training: F.pad(_as_compute(inputs, layer), (0, 0, left, right, top, bottom))


def _concatenate(layer, config):
    axis = int(config["axis"])
    return lambda inputs, training: torch.cat([_as_compute(x, layer) for x in inputs], dim=axis)


def _global_average_pooling2d(layer, config):
    if config.get("data_format") != "channels_last":
        return None
    keepdims = bool(config.get("keepdims", False))
    return lambda inputs, training: torch.mean(_as_compute(inputs, layer), dim=(1, 2), keepdim=keepdims)


_FAST = {
    keras.layers.Conv2D: _conv2d,
    keras.layers.BatchNormalization: _batch_norm,
    keras.layers.ReLU: _relu,
    keras.layers.MaxPooling2D: _max_pool2d,
    keras.layers.ZeroPadding2D: _zero_padding2d,
    keras.layers.Concatenate: _concatenate,
    keras.layers.GlobalAveragePooling2D: _global_average_pooling2d,
}


def fast_function(layer):
    """``f(inputs, training) -> outputs | None`` computing ``layer`` on NHWC tensors, or ``None``.

    Only the exact Keras classes (not subclasses, which may change ``call``) with settings the
    PyTorch function reproduces have one; ``f`` returns ``None`` for an input it does not handle,
    and the layer is then called as usual.
    """
    builder = _FAST.get(type(layer))
    return None if builder is None else builder(layer, layer.get_config())


# ------------------------------------------------------------------------------------- graph ---


def plan(model):
    """The cached execution plan of ``model`` with these PyTorch functions (`kerasml._backend.graph.plan`)."""
    return graph.plan(model, fast_function)


def run(model, inputs, training=False):
    """``model(inputs, training=training)`` computed with PyTorch kernels, or ``None`` when not applicable.

    Applies to a functional model with one input and one output whose tensors are real (not
    ``meta``: Keras' shape inference keeps its usual path), 4-D images in channels-last order.
    Not under ``torch.compile``, whose tracing cannot build the plan (it reads the layers' configs).
    """
    if not isinstance(inputs, torch.Tensor) or inputs.device.type == "meta" or inputs.ndim != 4:
        return None
    if torch.compiler.is_compiling():  # torch.compile (train.compile) traces Keras' own layers and fuses them itself
        return None
    return graph.run(plan(model), inputs, training)
