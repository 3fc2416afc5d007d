"""conv_act and conv_transpose_act in plain PyTorch: torch's convolution, bias, residual, activation."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .activations import activation
from .bias_act import broadcast_along

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _epilogue(z, weight, bias, residual, act, alpha):
    if bias is not None:  # channels are dim 1, or dim 0 of an unbatched z
        z = z + broadcast_along(bias, z.dim(), z.dim() - weight.dim() + 1)
    if residual is not None:
        z = z + residual
    return activation(z, act, alpha)


def conv_act(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, act="relu", alpha=0.0,
             residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """act(conv(x, weight) + bias + residual), the convolution of weight's rank."""
    z = CONV[weight.dim() - 2](x, weight, None, stride, padding, dilation, groups)
    return _epilogue(z, weight, bias, residual, act, alpha)


def conv_transpose_act(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                       act="relu", alpha=0.0, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """act(conv_transpose(x, weight) + bias + residual)."""
    z = CONV_TRANSPOSE[weight.dim() - 2](x, weight, None, stride, padding, output_padding, groups, dilation)
    return _epilogue(z, weight, bias, residual, act, alpha)


__all__ = ["conv_act", "conv_transpose_act"]
