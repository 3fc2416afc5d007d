"""ImageClassifier: the classic convolutional classifier of 2D images or 3D volumes.

Stages of two 3x3 conv -> norm -> act blocks, the first block of every stage but the first with
stride 2; then global average pooling, dropout and a linear layer to the class logits.
Convolutions start He-initialized for the activation's slope.

``reference=True`` builds the same network from plain torch modules with identical parameter
names, so checkpoints load both ways and the two can be compared step by step.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .._args import check_positive_int, check_positive_ints, check_probability
from ._blocks import ConvSpec, init_he


class ImageClassifier(nn.Module):
    """images (N, in_channels, *spatial) -> logits (N, num_classes)."""

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 2,
                 widths: tuple[int, ...] = (32, 64, 128, 256), norm: str = "batch", act: str = "relu",
                 alpha: Optional[float] = None, dropout: float = 0.0, reference: bool = False):
        super().__init__()
        owner = type(self).__name__
        op = f"medkern.models.{owner}"
        self.in_channels = check_positive_int(op, "in_channels", in_channels)
        check_positive_int(op, "num_classes", num_classes)
        widths = check_positive_ints(op, "widths", widths)
        dropout = check_probability(op, "dropout", dropout)
        spec = ConvSpec.checked(owner, spatial_dims, norm, act, alpha, reference)
        self.spatial_dims = spatial_dims
        self.stages = nn.Sequential(*[spec.double_conv(c_in, c_out, 1 if i == 0 else 2)
                                      for i, (c_in, c_out) in enumerate(zip((in_channels,) + widths, widths))])
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(widths[-1], num_classes)
        init_he(self, spec.negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"medkern.models.ImageClassifier: x must be (N, {self.in_channels}, "
                             f"{', '.join(['size'] * self.spatial_dims)}), got {tuple(x.shape)}")
        features = self.stages(x).mean(dim=tuple(range(2, x.dim())))  # global average pooling
        return self.head(self.dropout(features))
