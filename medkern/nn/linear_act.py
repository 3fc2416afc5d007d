"""LinearAct: ``act(linear(x))`` with the bias and the activation as one bias_act pass.

The torch nn.Linear is kept as the submodule ``linear``, so its parameters, their names,
initialization and ``state_dict`` are torch's; only the forward changes.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.bias_act import bias_act
from .activation_modules import act_from_module, module_from_act
from .norm_act import check_act


class LinearAct(nn.Module):
    """``act(x @ weight.T + bias)``; ``linear`` is a torch nn.Linear (kept as is)."""

    def __init__(self, linear: nn.Linear, act: str = "relu", alpha: Optional[float] = None):
        super().__init__()
        if type(linear) is not nn.Linear:
            raise TypeError(f"medkern.nn.LinearAct: linear must be an nn.Linear, got {type(linear).__name__}")
        self.linear = linear
        self.act, self.alpha = check_act(act, alpha, "medkern.nn.LinearAct")

    @classmethod
    def from_torch(cls, linear: nn.Linear, act: Optional[nn.Module] = None) -> "LinearAct":
        """The fused twin of ``nn.Sequential(linear, act)``, sharing linear's parameters."""
        return cls(linear, *act_from_module(act, "medkern.nn.LinearAct.from_torch"))

    def to_torch(self) -> nn.Sequential:
        """A copy as ``nn.Sequential(linear=..., act=...)``, same state_dict keys."""
        return nn.Sequential(OrderedDict(linear=copy.deepcopy(self.linear), act=module_from_act(self.act, self.alpha)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_act(F.linear(x, self.linear.weight), self.linear.bias, -1, self.act, self.alpha)

    def extra_repr(self) -> str:
        return f"act={self.act!r}" + ("" if self.alpha is None else f", alpha={self.alpha}")
