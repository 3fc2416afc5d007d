"""BiasAct: a learnable per-channel bias followed by an activation, gain and clamp, fused."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..ops.bias_act import bias_act, check_options


class BiasAct(nn.Module):
    """``clamp(act(x + bias) * gain, -clamp, clamp)``, the bias running along ``dim``.

    Args mirror :func:`medkern.ops.bias_act`; ``bias=False`` drops the learnable bias.
    The bias starts at zero, as a convolution's bias would be added after it.
    """

    def __init__(
        self,
        num_features: int,
        act: str = "linear",
        alpha: Optional[float] = None,
        gain: Optional[float] = None,
        clamp: Optional[float] = None,
        dim: int = 1,
        bias: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 0:
            raise ValueError(f"medkern.nn.BiasAct: num_features must be an int >= 0, got {num_features!r}")
        name, _, _, _ = check_options("medkern.nn.BiasAct", act, alpha, gain, clamp)  # fail now, not at forward
        self.num_features, self.act, self.alpha, self.gain, self.clamp, self.dim = (
            num_features, name, alpha, gain, clamp, dim)
        if bias:
            self.bias = nn.Parameter(torch.zeros(num_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_act(x, self.bias, self.dim, self.act, self.alpha, self.gain, self.clamp)

    def extra_repr(self) -> str:
        parts = [f"{self.num_features}", f"act={self.act!r}"]
        for name in ("alpha", "gain", "clamp"):
            if getattr(self, name) is not None:
                parts.append(f"{name}={getattr(self, name)}")
        if self.dim != 1:
            parts.append(f"dim={self.dim}")
        if self.bias is None:
            parts.append("bias=False")
        return ", ".join(parts)
