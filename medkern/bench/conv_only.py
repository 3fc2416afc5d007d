"""The convolution-only twin of a model: a step of it times the convolutions and little else.

Every normalization, activation and dropout module becomes ``nn.Identity`` and every max or
average pool a strided slice (a view; StridedSlice says what it still costs), so the twin runs
the same convolutions on tensors of the same shapes as the model, and of the rest only what
remains in ``forward`` itself (residual additions, concatenations, the classifier). A training step of the twin is a floor for
the model's step that fusion around the library convolution cannot go below, measured without a
profiler (``python -m medkern.bench.ceiling`` reports it as the direct ceiling).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .case import share_parameters

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
POOLS = (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)


def _is_activation(module: nn.Module) -> bool:
    return type(module).__module__ == "torch.nn.modules.activation" and not list(module.parameters())


class StridedSlice(nn.Module):
    """A pool's stand-in: every stride-th element of each spatial dim, checked (once per input
    shape) to have the pool's output shape. The slice is a view, but what follows pays for it as
    for a pool's output (the next convolution copies it; its backward writes the whole input
    gradient): the floor keeps a pool's unavoidable data movement."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        object.__setattr__(self, "pool", pool)  # for its output shape only: not a submodule
        self.checked: set = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = x.dim() - 2
        stride = self.pool.stride if self.pool.stride is not None else self.pool.kernel_size
        stride = (stride,) * dims if isinstance(stride, int) else tuple(stride)
        sliced = x[(slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride)]
        if tuple(x.shape) in self.checked:
            return sliced
        with torch.no_grad():
            expected = self.pool(x[:1, :1].detach()).shape[2:]
        if sliced.shape[2:] != expected:
            raise ValueError(f"conv_only: a strided slice of {tuple(x.shape)} does not have the shape of "
                             f"{self.pool}'s output {tuple(expected)}; this model needs another stand-in")
        self.checked.add(tuple(x.shape))
        return sliced


def _stand_in(module: nn.Module):
    if isinstance(module, NORMS) or _is_activation(module) or isinstance(module, nn.modules.dropout._DropoutNd):
        return nn.Identity()
    if isinstance(module, POOLS) and not getattr(module, "return_indices", False):
        return StridedSlice(module)
    return None


def conv_only_twin(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its norms, activations, dropouts and pools stood in for (see the
    module doc), sharing the parameters it keeps with ``model``."""
    twin = copy.deepcopy(model)
    for parent in list(twin.modules()):
        for name, child in list(parent.named_children()):
            replacement = _stand_in(child)
            if replacement is not None:
                setattr(parent, name, replacement)
    share_parameters(model, twin, names={name for name, _ in twin.named_parameters()})
    return twin
