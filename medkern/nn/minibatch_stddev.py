"""MinibatchStdDev: StyleGAN2's minibatch standard deviation layer, fused."""

from __future__ import annotations

import torch
from torch import nn

from ..ops.minibatch_stddev import check_options, minibatch_stddev


class MinibatchStdDev(nn.Module):
    """Appends ``num_channels`` channels of group standard deviations to x (N, C, H, W); see
    :func:`medkern.ops.minibatch_stddev`. No parameters."""

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        # fail now, not at forward
        self.group_size, self.num_channels = check_options("medkern.nn.MinibatchStdDev", group_size, num_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return minibatch_stddev(x, self.group_size, self.num_channels)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"
