"""Building blocks the reference models share, each as a medkern module or its plain-torch twin.

A medkern block keeps torch's own conv and norm modules as submodules ``conv`` and ``norm``, so it
has the same parameter and buffer names as ``nn.Sequential(OrderedDict(conv=, norm=, act=))``:
building either from the same code, in the same order, gives the same state_dict keys, and after
the same ``torch.manual_seed`` the same weights.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

from torch import nn

from .. import activations
from .._args import check_choice
from ..nn.activation_modules import module_from_act
from ..nn.bias_act import BiasAct
from ..nn.conv_act import CONV_TRANSPOSES, CONVS, ConvAct, ConvNormAct, ConvTransposeNormAct
from ..nn.norm_act import check_act

SPATIAL_DIMS = (2, 3)
NORMS = ("batch", "instance", "group")
MAX_GROUPS = 8  # GroupNorm: gcd(8, channels) groups (8 for multiples of 8, as the usual widths are)


def conv_block(conv: nn.Module, norm: Optional[nn.Module], act: str, alpha: Optional[float], reference: bool,
               memory_saving: bool = True) -> nn.Module:
    """conv -> [norm] -> act as one medkern block, or (``reference``) as ``nn.Sequential(conv=, [norm=,] act=)``."""
    transposed = isinstance(conv, CONV_TRANSPOSES)
    if reference:
        layers = [("conv", conv)] + ([("norm", norm)] if norm is not None else [])
        return nn.Sequential(OrderedDict(layers + [("act", module_from_act(act, alpha))]))
    if norm is not None:
        block_cls = ConvTransposeNormAct if transposed else ConvNormAct
        return block_cls(conv, norm, act, alpha, memory_saving)
    if transposed:  # no fused transposed-conv module: the activation alone runs fused (the conv adds any bias)
        return nn.Sequential(OrderedDict(conv=conv, act=BiasAct(conv.out_channels, act, alpha, bias=False)))
    return ConvAct(conv, act, alpha)


def init_he(model: nn.Module, negative_slope: float) -> None:
    """He initialization (normal, fan-in) of every convolution and transposed convolution for a
    leaky ReLU of ``negative_slope`` (0: ReLU), biases zero; norms and linear layers keep torch's."""
    for module in model.modules():
        if isinstance(module, CONVS + CONV_TRANSPOSES):
            nn.init.kaiming_normal_(module.weight, a=negative_slope)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


@dataclass(frozen=True)
class ConvSpec:
    """How a model builds its convolution blocks: rank, norm, activation, medkern or plain torch."""

    spatial_dims: int
    norm: str
    act: str
    alpha: Optional[float]
    reference: bool

    @classmethod
    def checked(cls, owner: str, spatial_dims, norm, act, alpha, reference: bool) -> "ConvSpec":
        """The spec, each argument checked with a ValueError naming ``medkern.models.<owner>``."""
        op = f"medkern.models.{owner}"
        check_choice(op, "spatial_dims", spatial_dims, SPATIAL_DIMS)
        check_choice(op, "norm", norm, NORMS)
        act, alpha = check_act(act, alpha, op)
        return cls(spatial_dims, norm, act, alpha, bool(reference))

    @property
    def negative_slope(self) -> float:
        """The slope He initialization assumes: lrelu's alpha; 0 (ReLU's gain) for other activations."""
        return activations.resolve_alpha(activations.get(self.act), self.alpha) if self.act == "lrelu" else 0.0

    def conv(self, c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = True) -> nn.Module:
        """A plain nn.Conv2d/3d with "same" padding for odd kernels."""
        return CONVS[self.spatial_dims - 1](c_in, c_out, kernel, stride, kernel // 2, bias=bias)

    def conv_transpose(self, c_in: int, c_out: int, kernel: int, stride: int) -> nn.Module:
        return CONV_TRANSPOSES[self.spatial_dims - 1](c_in, c_out, kernel, stride)

    def make_norm(self, channels: int) -> nn.Module:
        if self.norm == "batch":
            return (nn.BatchNorm2d, nn.BatchNorm3d)[self.spatial_dims - 2](channels)
        if self.norm == "instance":
            return (nn.InstanceNorm2d, nn.InstanceNorm3d)[self.spatial_dims - 2](channels, affine=True)
        return nn.GroupNorm(math.gcd(MAX_GROUPS, channels), channels)

    def conv_norm_act(self, c_in: int, c_out: int, stride: int = 1) -> nn.Module:
        """3x3 conv (no bias: the norm's shift replaces it) -> norm -> act."""
        return conv_block(self.conv(c_in, c_out, 3, stride, bias=False), self.make_norm(c_out), self.act,
                          self.alpha, self.reference)

    def double_conv(self, c_in: int, c_out: int, stride: int) -> nn.Sequential:
        """Two conv_norm_act blocks, the first with ``stride``: one encoder (or decoder) stage."""
        return nn.Sequential(self.conv_norm_act(c_in, c_out, stride), self.conv_norm_act(c_out, c_out))
