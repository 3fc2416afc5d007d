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
NO_ELEMENT = 255  # the window position of an output whose window holds no input element


def max_pool(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices: bool = False):
    """torch's max_pool{1,2,3}d; arguments already checked (see medkern.ops.max_pool)."""
    return POOLS[len(kernel_size)](x, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def _axis_grid(length: int, axis: int, dims: int, like: torch.Tensor) -> torch.Tensor:
    """arange(length) shaped to broadcast along spatial axis ``axis`` of an (N, C, *spatial) tensor."""
    shape = [1, 1] + [1] * dims
    shape[2 + axis] = length
    return torch.arange(length, device=like.device).view(shape)


def window_positions(indices: torch.Tensor, input_spatial: Sequence[int], kernel_size, stride, padding, dilation):
    """torch's indices (flat within each input plane) as window positions (uint8); NO_ELEMENT where
    the window holds no input element (torch's index there names no element of the window)."""
    dims = len(kernel_size)
    k = torch.zeros_like(indices)
    inside = indices < math.prod(input_spatial)  # torch may point an empty window past the plane
    for axis in range(dims):
        inner = math.prod(input_spatial[axis + 1:])
        coordinate = indices // inner % input_spatial[axis]
        origin = _axis_grid(indices.shape[2 + axis], axis, dims, indices) * stride[axis] - padding[axis]
        steps = (coordinate - origin).div(dilation[axis], rounding_mode="floor")
        inside &= (coordinate - origin == steps * dilation[axis]) & (steps >= 0) & (steps < kernel_size[axis])
        k = k * kernel_size[axis] + steps
    return torch.where(inside, k, NO_ELEMENT).to(torch.uint8)


def plane_indices(argmax: torch.Tensor, input_spatial: Sequence[int], kernel_size, stride, padding, dilation):
    """Window positions back to torch's indices (int64, flat within each input plane). For an empty
    window (NO_ELEMENT) torch's own choice: its first tap at or past 0 along each axis."""
    dims = len(kernel_size)
    empty = argmax == NO_ELEMENT
    rest = argmax.long()
    flat = torch.zeros_like(rest)
    for axis in reversed(range(dims)):
        k = rest % kernel_size[axis]
        rest = rest // kernel_size[axis]
        origin = _axis_grid(argmax.shape[2 + axis], axis, dims, argmax) * stride[axis] - padding[axis]
        first_tap = origin + (-origin).clamp(min=0).add(dilation[axis] - 1).div(dilation[axis], rounding_mode="floor") \
            * dilation[axis]
        coordinate = torch.where(empty, first_tap, origin + k * dilation[axis])
        flat = flat + coordinate * math.prod(input_spatial[axis + 1:])
    return flat


def max_pool_with_argmax(x, kernel_size, stride, padding, dilation, ceil_mode):
    """(y, argmax) as medkern::max_pool returns them."""
    y, indices = max_pool(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
    return y, window_positions(indices, x.shape[2:], kernel_size, stride, padding, dilation)


def gather_at_argmax(values, argmax, input_size, kernel_size, stride, padding, dilation):
    """values (input-shaped) at each output's argmax (0 for an empty window): the derivative of
    max_pool's input gradient w.r.t. the output gradient."""
    n, c = input_size[:2]
    plane = math.prod(input_size[2:])
    index = plane_indices(argmax, input_size[2:], kernel_size, stride, padding, dilation)
    inside = argmax != NO_ELEMENT  # an empty window's output has no input: its gradient is 0
    index = torch.where(inside, index, 0).reshape(n, c, math.prod(argmax.shape[2:]))
    gathered = values.reshape(n, c, plane).gather(2, index).view(argmax.shape)
    return torch.where(inside, gathered, torch.zeros_like(gathered))
