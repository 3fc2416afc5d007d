"""MaxPool1d/2d/3d on medkern.ops.max_pool, and max_pool1d/2d/3d with torch.nn.functional's signatures.

Each module subclasses its torch counterpart, so the constructor, the repr and the (empty) state
are torch's; only forward changes. Like torch's, they take batched (N, C, *spatial) and unbatched
(C, *spatial) inputs, and ``return_indices=True`` gives torch's int64 indices too. medkern.swap
turns torch's max pools into these in place (``module.__class__``) and ``F.max_pool*d`` calls
of a traced forward into the functions.
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops.max_pool import max_pool, max_pool_with_indices


def _pool(spatial_dims: int, who: str, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    if not isinstance(input, torch.Tensor) or input.dim() not in (spatial_dims + 1, spatial_dims + 2):
        got = f"shape {tuple(input.shape)}" if isinstance(input, torch.Tensor) else type(input).__name__
        raise ValueError(f"{who}: input must be (N, C, *spatial) or (C, *spatial) with {spatial_dims} spatial dims, "
                         f"got {got}")
    unbatched = input.dim() == spatial_dims + 1
    x = input.unsqueeze(0) if unbatched else input
    pool = max_pool_with_indices if return_indices else max_pool
    out = pool(x, kernel_size, stride, padding, dilation, ceil_mode)
    if not unbatched:
        return out
    return tuple(t.squeeze(0) for t in out) if return_indices else out.squeeze(0)


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool1d on medkern.ops.max_pool."""
    return _pool(1, "medkern.nn.max_pool1d", input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool2d on medkern.ops.max_pool."""
    return _pool(2, "medkern.nn.max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """torch.nn.functional.max_pool3d on medkern.ops.max_pool."""
    return _pool(3, "medkern.nn.max_pool3d", input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


class _MaxPoolForward:
    _spatial_dims: int

    def forward(self, input: torch.Tensor):
        return _pool(self._spatial_dims, f"medkern.nn.{type(self).__name__}", input, self.kernel_size, self.stride,
                     self.padding, self.dilation, self.ceil_mode, self.return_indices)


class MaxPool1d(_MaxPoolForward, nn.MaxPool1d):
    _spatial_dims = 1


class MaxPool2d(_MaxPoolForward, nn.MaxPool2d):
    _spatial_dims = 2


class MaxPool3d(_MaxPoolForward, nn.MaxPool3d):
    _spatial_dims = 3


# torch's functions (and the torch.max_poolNd builtins they call) -> medkern's, for medkern.swap
FUNCTIONAL_TWINS = {
    torch.nn.functional.max_pool1d: max_pool1d, torch.nn.functional.max_pool2d: max_pool2d,
    torch.nn.functional.max_pool3d: max_pool3d,
    torch.max_pool1d: max_pool1d, torch.max_pool2d: max_pool2d, torch.max_pool3d: max_pool3d,
}
