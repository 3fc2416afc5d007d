"""ModulatedConv2d: StyleGAN2's style-modulated convolution as a module."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..ops.modulated_conv2d import modulated_conv2d, resampling
from .equalized import EqualizedLinear


class ModulatedConv2d(nn.Module):
    """Convolution whose input channels are scaled per sample by a style from a latent w.

    ``forward(x, w)``: styles = affine(w) (an EqualizedLinear initialized to 1), then
    ``medkern.ops.modulated_conv2d(x, weight, styles, demodulate, up, down, padding)``.
    Without demodulation (StyleGAN2's toRGB) the styles are scaled by 1 / sqrt(fan_in) instead.
    No bias: the layers around it add noise, bias and activation.

    Args:
        in_channels, out_channels, kernel_size: as nn.Conv2d (square kernel).
        w_dim: size of the latent w.
        demodulate, up, down, resample_filter: as medkern.ops.modulated_conv2d.
        padding: default kernel_size // 2.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, demodulate: bool = True,
                 up: int = 1, down: int = 1, resample_filter: Optional[Union[Sequence[float], torch.Tensor]] = None,
                 padding: Optional[int] = None):
        super().__init__()
        owner = "medkern.nn.ModulatedConv2d"
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.demodulate = demodulate
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.style_gain = 1.0 if demodulate else 1 / math.sqrt(in_channels * kernel_size * kernel_size)
        padding = kernel_size // 2 if padding is None else padding
        self.up, self.down, self.padding, f = resampling(owner, self.weight, up, down, padding, resample_filter, "weight")
        self.register_buffer("resample_filter", f if up > 1 or down > 1 else None, persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)
        if self.style_gain != 1:
            styles = styles * self.style_gain
        return modulated_conv2d(x, self.weight, styles, self.demodulate, self.up, self.down, self.padding,
                                self.resample_filter)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"demodulate={self.demodulate}, up={self.up}, down={self.down}")
