"""Convolution blocks: ConvAct (Conv1dAct/Conv2dAct/Conv3dAct), ConvNormAct, ConvTransposeNormAct.

Each keeps torch's own modules as submodules ``conv`` (and ``norm``), so parameters, buffers,
their names, initialization and ``state_dict`` are exactly torch's: a checkpoint of
``nn.Sequential(OrderedDict(conv=..., norm=..., act=...))`` loads into the block and back.
Only the forward changes:

- ConvAct: ``medkern.ops.conv_act`` (library convolution + fused bias/activation epilogue).
- ConvNormAct, training (or instance/group norm): the convolution, then the fused
  ``medkern.ops.norm_act``, which keeps one tensor for backward instead of torch's three.
- ConvNormAct with a BatchNorm in eval mode: the norm is folded into the convolution's weight
  and bias (one conv_act call), on every call: an elementwise pass over the weights, small next
  to the convolution, and never stale (weights updated through ``.data``, an EMA teacher, or
  tensors made under inference_mode would defeat a cache keyed on version counters).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..ops.conv_act import conv_act, conv_transpose_act
from .activation_modules import act_from_module, module_from_act
from .norm_act import apply_norm_act, check_act, check_norm

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _check_conv(conv: nn.Module, kinds: tuple, owner: str) -> None:
    if type(conv) not in kinds:
        raise TypeError(f"{owner}: conv must be one of {', '.join(k.__name__ for k in kinds)}, got {type(conv).__name__}")


def _padded(conv: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, object]:
    """(input, padding) for a zero-padding convolution computing what ``conv`` computes."""
    if conv.padding_mode == "zeros":
        return x, conv.padding
    return F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode), 0


def _run_conv_act(conv: nn.Module, x, weight, bias, act, alpha, residual=None):
    x, padding = _padded(conv, x)
    return conv_act(x, weight, bias, conv.stride, padding, conv.dilation, conv.groups, act, alpha, residual)


def _fold_scale(norm: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) per channel of an eval-mode BatchNorm: norm(z) = z * scale + shift."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    return scale, shift


class ConvAct(nn.Module):
    """``act(conv(x))`` with a fused epilogue; ``conv`` is a torch nn.Conv1d/2d/3d (kept as is)."""

    def __init__(self, conv: nn.Module, act: str = "relu", alpha: Optional[float] = None):
        super().__init__()
        _check_conv(conv, CONVS, "medkern.nn.ConvAct")
        self.conv = conv
        self.act, self.alpha = check_act(act, alpha, "medkern.nn.ConvAct")

    @classmethod
    def from_torch(cls, conv: nn.Module, act: Optional[nn.Module] = None) -> "ConvAct":
        """The fused twin of ``nn.Sequential(conv, act)``, sharing conv's parameters."""
        return cls(conv, *act_from_module(act, f"medkern.nn.{cls.__name__}.from_torch"))

    def to_torch(self) -> nn.Sequential:
        """A copy as ``nn.Sequential(conv=..., act=...)``, same state_dict keys."""
        return nn.Sequential(OrderedDict(conv=copy.deepcopy(self.conv), act=module_from_act(self.act, self.alpha)))

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """act(conv(x) + residual); residual (the conv output's shape) is optional."""
        return _run_conv_act(self.conv, x, self.conv.weight, self.conv.bias, self.act, self.alpha, residual)

    def extra_repr(self) -> str:
        return f"act={self.act!r}" + ("" if self.alpha is None else f", alpha={self.alpha}")


def _conv_act_class(conv_cls, doc_rank):
    class ConvNdAct(ConvAct):
        __doc__ = f"""``act(conv{doc_rank}d(x))``: nn.Conv{doc_rank}d's arguments, then ``act`` and ``alpha``."""

        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                     bias=True, padding_mode="zeros", device=None, dtype=None, act="relu", alpha=None):
            conv = conv_cls(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                            padding_mode, device=device, dtype=dtype)
            super().__init__(conv, act, alpha)

        @classmethod
        def from_torch(cls, conv, act=None):
            block = ConvAct.from_torch(conv, act)
            block.__class__ = cls
            return block

    ConvNdAct.__name__ = ConvNdAct.__qualname__ = f"Conv{doc_rank}dAct"
    return ConvNdAct


Conv1dAct = _conv_act_class(nn.Conv1d, 1)
Conv2dAct = _conv_act_class(nn.Conv2d, 2)
Conv3dAct = _conv_act_class(nn.Conv3d, 3)


class _ConvNormActBase(nn.Module):
    _convs: tuple = ()

    def __init__(self, conv: nn.Module, norm: nn.Module, act: str = "relu", alpha: Optional[float] = None,
                 memory_saving: bool = True):
        super().__init__()
        owner = f"medkern.nn.{type(self).__name__}"
        _check_conv(conv, self._convs, owner)
        check_norm(norm, owner)
        channels = norm.num_channels if isinstance(norm, nn.GroupNorm) else norm.num_features
        if channels != conv.out_channels:
            raise ValueError(f"{owner}: norm has {channels} channels, conv has {conv.out_channels} outputs")
        self.conv, self.norm = conv, norm
        self.act, self.alpha = check_act(act, alpha, owner)
        self.memory_saving = memory_saving

    @classmethod
    def from_torch(cls, conv: nn.Module, norm: nn.Module, act: Optional[nn.Module] = None, memory_saving: bool = True):
        """The fused twin of ``nn.Sequential(conv, norm, act)``, sharing their parameters and buffers."""
        return cls(conv, norm, *act_from_module(act, f"medkern.nn.{cls.__name__}.from_torch"), memory_saving)

    def to_torch(self) -> nn.Sequential:
        """A copy as ``nn.Sequential(conv=..., norm=..., act=...)``, same state_dict keys."""
        return nn.Sequential(OrderedDict(conv=copy.deepcopy(self.conv), norm=copy.deepcopy(self.norm),
                                         act=module_from_act(self.act, self.alpha)))

    def _folds(self) -> bool:
        norm = self.norm
        return isinstance(norm, _BatchNorm) and not norm.training and norm.running_mean is not None

    def _folded(self):
        """(weight, bias) of the convolution with the eval-mode BatchNorm folded in, in the conv's
        dtype (a BatchNorm kept in float32 next to a half convolution folds in float32 first)."""
        conv = self.conv
        scale, shift = _fold_scale(self.norm)
        bias = shift if conv.bias is None else conv.bias * scale + shift
        weight = self._scale_weight(conv.weight, scale)
        return weight.to(conv.weight.dtype), bias.to(conv.weight.dtype)

    def extra_repr(self) -> str:
        return f"act={self.act!r}" + ("" if self.alpha is None else f", alpha={self.alpha}")


class ConvNormAct(_ConvNormActBase):
    """``act(norm(conv(x)))``: the nnU-Net / MONAI / ResNet block, 1d, 2d or 3d.

    Args:
        conv: torch nn.Conv1d/2d/3d; norm: BatchNorm/InstanceNorm/GroupNorm over its outputs
        (both kept as they are); act, alpha: a medkern activation; memory_saving: as NormAct's.
    """

    _convs = CONVS

    @staticmethod
    def _scale_weight(weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._folds():
            weight, bias = self._folded()
            return _run_conv_act(self.conv, x, weight, bias, self.act, self.alpha)
        return apply_norm_act(self.norm, self.conv(x), self.act, self.alpha, self.memory_saving)


class ConvTransposeNormAct(_ConvNormActBase):
    """``act(norm(conv_transpose(x)))``: U-Net decoders and the DCGAN generator's block."""

    _convs = CONV_TRANSPOSES

    def _scale_weight(self, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        # weight is (in, out / groups, *k): output channel g * (out / groups) + j is [g's rows, j]
        groups, out_per_group = self.conv.groups, weight.shape[1]
        grouped = weight.reshape(groups, -1, out_per_group, *weight.shape[2:])
        per_out = scale.reshape(groups, 1, out_per_group, *([1] * (weight.dim() - 2)))
        return (grouped * per_out).reshape(weight.shape)

    def forward(self, x: torch.Tensor, output_size: Optional[list[int]] = None) -> torch.Tensor:
        conv = self.conv
        if conv.padding_mode != "zeros":
            raise ValueError("medkern.nn.ConvTransposeNormAct: only padding_mode='zeros' is supported, as torch's")
        if not self._folds():
            return apply_norm_act(self.norm, conv(x, output_size), self.act, self.alpha, self.memory_saving)
        rank = conv.weight.dim() - 2
        output_padding = conv._output_padding(x, output_size, conv.stride, conv.padding, conv.kernel_size, rank,
                                              conv.dilation)
        weight, bias = self._folded()
        return conv_transpose_act(x, weight, bias, conv.stride, conv.padding, output_padding, conv.groups,
                                  conv.dilation, self.act, self.alpha)
