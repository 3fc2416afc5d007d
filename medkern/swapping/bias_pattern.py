"""The bias + activation pattern of a traced forward: ``act(x + self.bias)`` or
``act(x + self.bias.view(1, -1, 1, 1))``, with the bias a 1-D parameter or buffer of the module.

``x + b`` broadcasts b against x's trailing dimensions, so which dimension of x the bias runs
along depends on x's rank, which a trace does not know. The fused call therefore decides at run
time: where x has at least the rank of the (viewed) bias, the same dtype and device, and the
bias's length along that dimension, it is exactly medkern.ops.bias_act along that dimension;
anything else (a smaller x, which the add would broadcast up, or a dtype promotion) runs the
original arithmetic.
"""

from __future__ import annotations

import operator
from typing import Optional

import torch
from torch import fx, nn

from .. import ops
from ..reference.activations import activation_as_given

ADDS = (operator.add, torch.add)
_VIEWS = ("view", "reshape")


def _tensor_attribute(module: nn.Module, target: str) -> Optional[torch.Tensor]:
    owner_path, _, name = target.rpartition(".")
    try:
        owner = module.get_submodule(owner_path)
    except AttributeError:
        return None
    tensor = owner._parameters.get(name, owner._buffers.get(name))
    return tensor if isinstance(tensor, torch.Tensor) else None


def _bias_source(node: fx.Node, module: nn.Module):
    """(the get_attr node of a 1-D parameter/buffer, the view shape or None, the view node or None)
    if ``node`` is that attribute, possibly viewed with constant ints with one entry not 1."""
    view_node, shape = None, None
    if node.op == "call_method" and node.target in _VIEWS and len(node.users) == 1 and not node.kwargs:
        sizes = node.args[1:] if len(node.args) > 2 or not isinstance(node.args[1], (tuple, list)) else node.args[1]
        if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
            return None
        if sum(s != 1 for s in sizes) != 1:
            return None
        view_node, shape, node = node, tuple(sizes), node.args[0]
    if node.op != "get_attr":
        return None
    tensor = _tensor_attribute(module, node.target)
    if tensor is None or tensor.dim() != 1:
        return None
    if shape is not None and [s for s in shape if s != 1][0] not in (-1, tensor.numel()):
        return None
    return node, shape, view_node


def match_bias_add(node: fx.Node, module: nn.Module):
    """(x node, bias get_attr node, view shape or None, nodes the fused call replaces) if ``node``
    is ``x + bias`` (either order) with nothing but the bias among its tensor attributes."""
    if node.op != "call_function" or node.target not in ADDS or node.kwargs or len(node.args) != 2:
        return None
    for x, other in (node.args, reversed(node.args)):
        if not isinstance(x, fx.Node):
            continue
        source = _bias_source(other, module) if isinstance(other, fx.Node) else None
        if source is not None and x is not source[0]:
            bias, shape, view = source
            return x, bias, shape, [n for n in (view, node) if n is not None]
    return None


class BiasActCall(nn.Module):
    """``act(x + b.view(shape))`` as one medkern.ops.bias_act call where that is exact (see above)."""

    def __init__(self, shape: Optional[tuple[int, ...]], act: str, alpha: Optional[float]):
        super().__init__()
        self.shape, self.act, self.alpha = shape, act, alpha
        # the dimension of the viewed bias that is not 1, counted from the end (-1 without a view)
        self.from_end = -1 if shape is None else [i for i, s in enumerate(shape) if s != 1][0] - len(shape)

    def forward(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        rank = 1 if self.shape is None else len(self.shape)
        dim = x.dim() + self.from_end
        if x.dim() >= rank and x.dtype == b.dtype and x.device == b.device and x.shape[dim] == b.numel():
            return ops.bias_act(x, b, dim=dim, act=self.act, alpha=self.alpha)
        viewed = b if self.shape is None else b.view(self.shape)
        return activation_as_given(x + viewed, self.act, self.alpha)
