"""MaxPool1d/2d/3d on medkern.ops.max_pool.

Each subclasses its torch counterpart, so the constructor, the repr and the (empty) state are
torch's; only forward changes. ``return_indices=True`` gives torch's int64 indices too. medkern.swap
turns torch's max pools into these in place (``module.__class__``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..ops.max_pool import max_pool, max_pool_with_indices


class _MaxPoolForward:
    _spatial_dims: int

    def forward(self, input: torch.Tensor):
        dims = self._spatial_dims
        if not isinstance(input, torch.Tensor) or input.dim() not in (dims + 1, dims + 2):
            got = f"shape {tuple(input.shape)}" if isinstance(input, torch.Tensor) else type(input).__name__
            raise ValueError(f"medkern.nn.{type(self).__name__}: input must be (N, C, *spatial) or (C, *spatial) "
                             f"with {dims} spatial dims, got {got}")
        unbatched = input.dim() == dims + 1
        x = input.unsqueeze(0) if unbatched else input
        pool = max_pool_with_indices if self.return_indices else max_pool
        out = pool(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
        if not unbatched:
            return out
        return tuple(t.squeeze(0) for t in out) if self.return_indices else out.squeeze(0)


class MaxPool1d(_MaxPoolForward, nn.MaxPool1d):
    _spatial_dims = 1


class MaxPool2d(_MaxPoolForward, nn.MaxPool2d):
    _spatial_dims = 2


class MaxPool3d(_MaxPoolForward, nn.MaxPool3d):
    _spatial_dims = 3
