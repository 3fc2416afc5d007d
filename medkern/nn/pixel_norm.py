"""PixelNorm: StyleGAN's pixel-wise feature normalization, fused."""

from __future__ import annotations

import torch
from torch import nn

from ..ops.pixel_norm import check_eps, pixel_norm


class PixelNorm(nn.Module):
    """``x * rsqrt(mean(x^2 over dim) + eps)``; see :func:`medkern.ops.pixel_norm`. No parameters."""

    def __init__(self, dim: int = 1, eps: float = 1e-8):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"medkern.nn.PixelNorm: dim must be an int, got {type(dim).__name__}")
        self.dim = dim
        self.eps = check_eps("medkern.nn.PixelNorm", eps)  # fail now, not at forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_norm(x, self.dim, self.eps)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"
