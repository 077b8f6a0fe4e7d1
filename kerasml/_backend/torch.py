"""PyTorch-specific helpers."""

import torch


def is_concrete(x):
    """True for real tensors outside ``torch.compile`` tracing.

    Keras infers output shapes on the ``"meta"`` device, whose tensors hold no
    values; those are not concrete.
    """
    if isinstance(x, torch.Tensor) and x.device.type == "meta":
        return False
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return not compiler.is_compiling()
    return True
