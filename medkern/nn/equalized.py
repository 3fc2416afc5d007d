"""Layers with StyleGAN's equalized learning rate: EqualizedLinear and EqualizedConv2d.

The parameters are stored at unit scale (``weight ~ N(0, 1) / lr_multiplier``) and scaled at run
time by ``lr_multiplier / sqrt(fan_in)`` (Karras et al., 2018), so every layer learns at the same
speed under Adam. Parameter names and shapes are those of nn.Linear and nn.Conv2d, so their
checkpoints load both ways; the layer they compute is not nn.Linear's (the weight is scaled by
``weight_gain`` at run time). The bias and activation run as one fused ``medkern.ops.bias_act``
(StyleGAN's convention: gain sqrt(2) after relu, lrelu and swish, see ``stylegan_gain``).
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .. import activations
from ..ops.bias_act import bias_act
from ..ops.modulated_conv2d import conv2d_resample, resampling

LRELU_ALPHA = 0.2  # StyleGAN's leaky ReLU slope


def stylegan_gain(act: str) -> float:
    """StyleGAN's output gain for an activation: sqrt(2) after relu, lrelu and swish (keeps the variance), else 1."""
    return math.sqrt(2) if activations.get(act).name in ("relu", "lrelu", "silu") else 1.0


def check_lr_multiplier(owner: str, value) -> float:
    """A finite number > 0: the weight is stored divided by it (0 would store infinities)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: lr_multiplier must be a real number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{owner}: lr_multiplier must be a finite number > 0, got {value!r}")
    return float(value)


class _BiasActMixin:
    """Adds the (scaled) bias and the activation of an equalized layer, along ``dim``, in one op."""

    def _setup_bias_act(self, owner: str, out_features: int, bias: bool, bias_init: float, bias_gain: float,
                        activation: str, alpha, gain, clamp) -> None:
        self.activation = activations.get(activation, owner).name
        self.alpha = alpha if alpha is not None else (LRELU_ALPHA if self.activation == "lrelu" else None)
        self.gain = stylegan_gain(self.activation) if gain is None else float(gain)
        self.clamp = clamp
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.bias_gain = bias_gain

    def _bias_act(self, y: torch.Tensor, dim: int) -> torch.Tensor:
        b = self.bias
        if b is not None and self.bias_gain != 1:
            b = b * self.bias_gain
        if b is None and self.activation == "linear" and self.gain == 1 and self.clamp is None:
            return y  # nothing to add: skip a pass over y
        return bias_act(y, b, dim, self.activation, self.alpha, self.gain, self.clamp)


class EqualizedLinear(_BiasActMixin, nn.Module):
    """``act(x @ (weight * weight_gain).T + bias * bias_gain) * gain``, nn.Linear's parameters.

    Args:
        in_features, out_features, bias: as nn.Linear.
        bias_init: the bias's initial value (StyleGAN's style affines start at 1).
        lr_multiplier: learning-rate multiplier of this layer (StyleGAN's mapping network: 0.01).
        activation, alpha, gain, clamp: as medkern.ops.bias_act; alpha defaults to 0.2 for lrelu
            and gain to ``stylegan_gain(activation)``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0,
                 lr_multiplier: float = 1.0, activation: str = "linear", alpha: Optional[float] = None,
                 gain: Optional[float] = None, clamp: Optional[float] = None):
        super().__init__()
        lr_multiplier = check_lr_multiplier("medkern.nn.EqualizedLinear", lr_multiplier)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self._setup_bias_act("medkern.nn.EqualizedLinear", out_features, bias, bias_init, lr_multiplier,
                             activation, alpha, gain, clamp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight * self.weight_gain)
        return self._bias_act(y, -1)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"activation={self.activation}, weight_gain={self.weight_gain:.4g}")


class EqualizedConv2d(_BiasActMixin, nn.Module):
    """``act(conv2d_resample(x, weight * weight_gain) + bias) * gain``, nn.Conv2d's parameters.

    Args:
        in_channels, out_channels, kernel_size, bias: as nn.Conv2d (square kernel).
        up, down, resample_filter: FIR resampling as medkern.ops.modulated_conv2d (at most one > 1).
        padding: default kernel_size // 2 (for odd kernels the size is kept, or scaled by up / down).
        activation, alpha, gain, clamp, lr_multiplier: as EqualizedLinear.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", alpha: Optional[float] = None, gain: Optional[float] = None,
                 clamp: Optional[float] = None, up: int = 1, down: int = 1,
                 resample_filter: Optional[Union[Sequence[float], torch.Tensor]] = None,
                 padding: Optional[int] = None, lr_multiplier: float = 1.0):
        super().__init__()
        owner = "medkern.nn.EqualizedConv2d"
        lr_multiplier = check_lr_multiplier(owner, lr_multiplier)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) / lr_multiplier)
        self.weight_gain = lr_multiplier / math.sqrt(in_channels * kernel_size * kernel_size)
        self._setup_bias_act(owner, out_channels, bias, 0.0, lr_multiplier, activation, alpha, gain, clamp)
        padding = kernel_size // 2 if padding is None else padding
        self.up, self.down, self.padding, f = resampling(owner, self.weight, up, down, padding, resample_filter, "weight")
        self.register_buffer("resample_filter", f if up > 1 or down > 1 else None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = conv2d_resample(x, self.weight * self.weight_gain, self.up, self.down, self.padding,
                            self.resample_filter)
        return self._bias_act(y, 1)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, up={self.up}, "
                f"down={self.down}, bias={self.bias is not None}, activation={self.activation}")
