"""NormAct: a torch norm module (BatchNorm, InstanceNorm, GroupNorm) + activation, fused.

The norm module itself is kept as the submodule ``norm``, so parameters, buffers, their names
(``norm.weight``, ``norm.running_mean``, ...), initialization and ``state_dict`` are torch's;
only the forward changes. Running statistics and ``num_batches_tracked`` update as torch does.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Optional

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from .. import activations
from ..ops.norm_act import norm_act
from .activation_modules import act_from_module, module_from_act

NORMS = (_BatchNorm, _InstanceNorm, nn.GroupNorm)


def check_norm(norm: nn.Module, owner: str) -> None:
    if not isinstance(norm, NORMS) or isinstance(norm, nn.SyncBatchNorm):
        raise TypeError(f"{owner}: norm must be a torch BatchNorm1d/2d/3d, InstanceNorm1d/2d/3d or GroupNorm "
                        f"module (SyncBatchNorm is not fused), got {type(norm).__name__}")


def check_act(act: str, alpha: Optional[float], owner: str) -> tuple[str, Optional[float]]:
    spec = activations.get(act, owner)
    activations.resolve_alpha(spec, alpha, owner)  # fail now, not at the first forward
    return spec.name, alpha


def apply_norm_act(norm: nn.Module, x: torch.Tensor, act: str, alpha, memory_saving: bool) -> torch.Tensor:
    """What ``act(norm(x))`` computes, including the module's running-statistics bookkeeping."""
    if isinstance(norm, _BatchNorm):
        norm._check_input_dim(x)
        factor = 0.0 if norm.momentum is None else norm.momentum
        if norm.training and norm.track_running_stats and norm.num_batches_tracked is not None:
            norm.num_batches_tracked.add_(1)
            factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
        use_batch_stats = norm.training or (norm.running_mean is None and norm.running_var is None)
        keep_running = not norm.training or norm.track_running_stats
        return norm_act(x, "batch", norm.weight, norm.bias, norm.running_mean if keep_running else None,
                        norm.running_var if keep_running else None, use_batch_stats, factor, norm.eps, act, alpha,
                        memory_saving=memory_saving)
    if isinstance(norm, _InstanceNorm):
        unbatched = x.dim() == norm._get_no_batch_dim()
        norm._check_input_dim(x)
        xb = x.unsqueeze(0) if unbatched else x
        y = norm_act(xb, "instance", norm.weight, norm.bias, norm.running_mean, norm.running_var,
                     norm.training or not norm.track_running_stats,
                     norm.momentum if norm.momentum is not None else 0.0, norm.eps, act, alpha,
                     memory_saving=memory_saving)
        return y.squeeze(0) if unbatched else y
    return norm_act(x, "group", norm.weight, norm.bias, eps=norm.eps, act=act, alpha=alpha,
                    num_groups=norm.num_groups, memory_saving=memory_saving)


class NormAct(nn.Module):
    """``act(norm(x))`` in one fused op.

    Args:
        norm: a torch BatchNorm1d/2d/3d, InstanceNorm1d/2d/3d or GroupNorm module (kept as is).
        act, alpha: a medkern activation (``medkern.activations``) and its parameter.
        memory_saving: keep the output instead of the input for backward where exact
            (see ``medkern.ops.norm_act``); False for second-order gradients.
    """

    def __init__(self, norm: nn.Module, act: str = "relu", alpha: Optional[float] = None, memory_saving: bool = True):
        super().__init__()
        check_norm(norm, "medkern.nn.NormAct")
        self.norm = norm
        self.act, self.alpha = check_act(act, alpha, "medkern.nn.NormAct")
        self.memory_saving = memory_saving

    @classmethod
    def from_torch(cls, norm: nn.Module, act: Optional[nn.Module] = None, memory_saving: bool = True) -> "NormAct":
        """The fused twin of ``nn.Sequential(norm, act)``, sharing norm's parameters and buffers."""
        name, alpha = act_from_module(act, "medkern.nn.NormAct.from_torch")
        return cls(norm, name, alpha, memory_saving)

    def to_torch(self) -> nn.Sequential:
        """``nn.Sequential(norm=..., act=...)``: a copy in plain torch modules, same state_dict keys."""
        return nn.Sequential(OrderedDict(norm=copy.deepcopy(self.norm), act=module_from_act(self.act, self.alpha)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_norm_act(self.norm, x, self.act, self.alpha, self.memory_saving)

    def extra_repr(self) -> str:
        alpha = "" if self.alpha is None else f", alpha={self.alpha}"
        return f"act={self.act!r}{alpha}"
