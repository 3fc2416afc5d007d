"""UNet: an nnU-Net-style segmentation network for 2D images or 3D volumes.

Encoder: one stage per width, each two 3x3 conv -> norm -> act blocks, the first with stride 2
(except in the first stage). Decoder, from the deepest stage up: a 2x2 transposed convolution
(stride 2, with bias) to the skip's width, concatenation with the encoder's output at that
resolution, two conv -> norm -> act blocks. A 1x1 convolution maps features to class logits.

With ``deep_supervision``, training-mode forward returns one logits map per decoder stage,
highest resolution first (each from its own 1x1 head); eval mode returns only the full-resolution
logits, as nnU-Net does. Convolutions start He-initialized for the activation's slope.

``reference=True`` builds the same network from plain torch modules with identical parameter
names, so checkpoints load both ways and the two can be compared step by step.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from .._args import check_positive_int, check_positive_ints
from ._blocks import ConvSpec, init_he


class _UpStage(nn.Module):
    """Upsample the deeper features to the skip's width and resolution, concatenate, two blocks."""

    def __init__(self, spec: ConvSpec, deep_width: int, skip_width: int):
        super().__init__()
        self.up = spec.conv_transpose(deep_width, skip_width, 2, 2)
        self.convs = spec.double_conv(2 * skip_width, skip_width, 1)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.convs(torch.cat([self.up(deep), skip], dim=1))


class UNet(nn.Module):
    """images (N, in_channels, *spatial) -> logits (N, out_channels, *spatial), or in training with
    ``deep_supervision`` a list of them at spatial / 1, / 2, ..., / 2 ** (stages - 2).

    Each spatial size must be divisible by 2 ** (stages - 1), stages = len(widths).
    """

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int = 2,
                 widths: tuple[int, ...] = (32, 64, 128, 256, 320), norm: str = "instance", act: str = "lrelu",
                 alpha: Optional[float] = 0.01, deep_supervision: bool = False, reference: bool = False):
        super().__init__()
        owner = type(self).__name__
        op = f"medkern.models.{owner}"
        self.in_channels = check_positive_int(op, "in_channels", in_channels)
        check_positive_int(op, "out_channels", out_channels)
        widths = check_positive_ints(op, "widths", widths, min_length=2)
        spec = ConvSpec.checked(owner, spatial_dims, norm, act, alpha, reference)
        self.spatial_dims = spatial_dims
        self.deep_supervision = bool(deep_supervision)
        self.encoder = nn.ModuleList(spec.double_conv(c_in, c_out, 1 if i == 0 else 2)
                                     for i, (c_in, c_out) in enumerate(zip((in_channels,) + widths, widths)))
        self.decoder = nn.ModuleList(_UpStage(spec, widths[i + 1], widths[i]) for i in reversed(range(len(widths) - 1)))
        supervised = len(widths) - 1 if self.deep_supervision else 1  # heads[0]: full resolution
        self.heads = nn.ModuleList(spec.conv(widths[i], out_channels, 1) for i in range(supervised))
        init_he(self, spec.negative_slope)

    @property
    def divisor(self) -> int:
        """What every spatial size must be divisible by: one halving per stage after the first."""
        return 2 ** len(self.decoder)

    def _check_input(self, x: torch.Tensor) -> None:
        op = "medkern.models.UNet"
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"{op}: x must be (N, {self.in_channels}, {', '.join(['size'] * self.spatial_dims)}), "
                             f"got {tuple(x.shape)}")
        if any(size % self.divisor for size in x.shape[2:]):
            raise ValueError(f"{op}: every spatial size must be divisible by {self.divisor} (2 ** (stages - 1) for "
                             f"{len(self.encoder)} stages), got {tuple(x.shape[2:])}; pad or crop the input")

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, list[torch.Tensor]]:
        self._check_input(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()  # the deepest stage's output starts the decoder
        decoded = []  # lowest resolution first
        for stage in self.decoder:
            x = stage(x, skips.pop())
            decoded.append(x)
        if self.deep_supervision and self.training:
            return [head(features) for head, features in zip(self.heads, reversed(decoded))]
        return self.heads[0](decoded[-1])
