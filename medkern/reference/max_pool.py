"""max pooling in plain PyTorch (torch's own max_pool), and the window positions ("argmax")
medkern's kernels keep for backward instead of torch's int64 indices.

Window position k of an output is (kd * KH + kh) * KW + kw over its window (kernel_size entries,
one per spatial dim); the input element it names is o * stride - padding + k_axis * dilation
along each axis (csrc/common/max_pool.h).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

POOLS = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def max_pool(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices: bool = False):
    """torch's max_pool{1,2,3}d; arguments already checked (see medkern.ops.max_pool)."""
    return POOLS[len(kernel_size)](x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def _axis_grid(length: int, axis: int, dims: int, like: torch.Tensor) -> torch.Tensor:
    """arange(length) shaped to broadcast along spatial axis ``axis`` of an (N, C, *spatial) tensor."""
    shape = [1, 1] + [1] * dims
    shape[2 + axis] = length
    return torch.arange(length, device=like.device).view(shape)


def window_positions(indices: torch.Tensor, input_spatial: Sequence[int], kernel_size, stride, padding, dilation):
    """torch's indices (flat within each input plane) as window positions (uint8)."""
    dims = len(kernel_size)
    k = torch.zeros_like(indices)
    for axis in range(dims):
        inner = math.prod(input_spatial[axis + 1:])
        coordinate = indices // inner % input_spatial[axis]
        origin = _axis_grid(indices.shape[2 + axis], axis, dims, indices) * stride[axis] - padding[axis]
        k = k * kernel_size[axis] + (coordinate - origin) // dilation[axis]
    return k.to(torch.uint8)


def plane_indices(argmax: torch.Tensor, input_spatial: Sequence[int], kernel_size, stride, padding, dilation):
    """Window positions back to torch's indices (int64, flat within each input plane)."""
    dims = len(kernel_size)
    rest = argmax.long()
    flat = torch.zeros_like(rest)
    for axis in reversed(range(dims)):
        k = rest % kernel_size[axis]
        rest = rest // kernel_size[axis]
        origin = _axis_grid(argmax.shape[2 + axis], axis, dims, argmax) * stride[axis] - padding[axis]
        flat = flat + (origin + k * dilation[axis]) * math.prod(input_spatial[axis + 1:])
    return flat


def max_pool_with_argmax(x, kernel_size, stride, padding, dilation, ceil_mode):
    """(y, argmax) as medkern::max_pool returns them."""
    y, indices = max_pool(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
    return y, window_positions(indices, x.shape[2:], kernel_size, stride, padding, dilation)


def _plane(t: torch.Tensor) -> int:
    """Elements per (sample, channel) plane of an (N, C, *spatial) tensor (N may be 0)."""
    return math.prod(t.shape[2:])


def max_pool_grad(grad, argmax, input_size, kernel_size, stride, padding, dilation):
    """dx: each output's gradient added to the input its argmax names (max_pool_backward's definition)."""
    n, c = input_size[:2]
    index = plane_indices(argmax, input_size[2:], kernel_size, stride, padding, dilation).reshape(n, c, _plane(argmax))
    dx = grad.new_zeros((n, c, math.prod(input_size[2:])))
    return dx.scatter_add(2, index, grad.reshape(n, c, _plane(argmax))).view(tuple(input_size))


def gather_at_argmax(values, argmax, input_size, kernel_size, stride, padding, dilation):
    """values (input-shaped) at each output's argmax: max_pool_grad's derivative w.r.t. grad."""
    n, c = input_size[:2]
    index = plane_indices(argmax, input_size[2:], kernel_size, stride, padding, dilation).reshape(n, c, _plane(argmax))
    return values.reshape(n, c, math.prod(input_size[2:])).gather(2, index).view(argmax.shape)
