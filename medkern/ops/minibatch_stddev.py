"""medkern.ops.minibatch_stddev: StyleGAN2's minibatch standard deviation layer, differentiable to any order.

x (N, C, H, W) -> (N, C + num_channels, H, W): x, then per group of G = min(group_size, N)
samples (sample n in group n % (N // G), as StyleGAN2's reshape(G, -1, F, C // F, H, W)) the
standard deviation over the group, averaged over C // F channels and the pixels, as F channels.

The backend (medkern.backend) picks the implementation: the C++ op ``medkern::minibatch_stddev``
(CPU and CUDA kernels), the Triton op ``medkern::triton_minibatch_stddev``, or the reference.
The gradient is the fused ``minibatch_stddev_backward(grad, x)``, whose own derivative (second
order, for R1 penalties) runs through the reference (medkern/reference/_double_backward.py).
Outputs are channels_last if x is (and not also contiguous), else contiguous.
"""

from __future__ import annotations

import torch

from .. import backend
from .._args import check_float_tensor
from ..reference.minibatch_stddev import memory_format
from ..reference.minibatch_stddev import minibatch_stddev as reference_minibatch_stddev
from . import _fused_autograd

OP = "medkern.ops.minibatch_stddev"


def _positive_int(op: str, value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{op}: {name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{op}: {name} must be >= 1, got {value}")
    return value


def check_options(op: str, group_size, num_channels) -> tuple[int, int]:
    """Checks the non-tensor arguments (for the op, the Triton op and medkern.nn.MinibatchStdDev)."""
    return _positive_int(op, group_size, "group_size"), _positive_int(op, num_channels, "num_channels")


def check_args(op: str, x, group_size, num_channels) -> tuple[int, int]:
    """Checks every argument (ValueError/TypeError naming ``op`` and the argument)."""
    group_size, num_channels = check_options(op, group_size, num_channels)
    check_float_tensor(op, "x", x)
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be 4-d (N, C, H, W), got shape {tuple(x.shape)}")
    n, c = x.shape[:2]
    if c == 0 or c % num_channels:
        raise ValueError(f"{op}: x.shape[1] (C = {c}) must be a positive multiple of num_channels = {num_channels}")
    group = min(group_size, n)
    if n and n % group:
        raise ValueError(f"{op}: x.shape[0] (N = {n}) must be divisible by the group size "
                         f"min(group_size, N) = {group}")
    return group_size, num_channels


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, num_channels: int = 1) -> torch.Tensor:
    """x (N, C, H, W) with F = ``num_channels`` group-statistics channels appended.

    Args:
        x: float32/float64/float16/bfloat16 tensor (N, C, H, W), any layout.
        group_size: samples per group, G = min(group_size, N); N must be divisible by G.
        num_channels: F, the statistics channels; C must be divisible by F.

    float16 and bfloat16 inputs are computed in float32 inside the kernels.
    """
    group_size, num_channels = check_args(OP, x, group_size, num_channels)
    chosen = backend.select("minibatch_stddev", x.device)
    backend.check_traceable(OP, chosen, x.device)
    if chosen == "reference":
        return reference_minibatch_stddev(x, group_size, num_channels)
    forward, _ = _fused_autograd.kernel_ops("minibatch_stddev", chosen)
    return forward(x, group_size, num_channels)


def register_autograd(forward_name: str, backward_name: str) -> None:
    """Makes op ``forward_name`` differentiable through ``backward_name``, and that op through the
    reference (medkern/ops/_fused_autograd.py)."""
    _fused_autograd.register_autograd(forward_name, backward_name, reference_minibatch_stddev)


def fake_forward(x, group_size, num_channels):
    n, c, h, w = x.shape
    return torch.empty((n, c + num_channels, h, w), dtype=x.dtype, device=x.device, memory_format=memory_format(x))


def fake_backward(grad, x, group_size, num_channels):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format(x))


_fused_autograd.register_compiled_ops("minibatch_stddev", fake_forward, fake_backward,
                                      reference_minibatch_stddev)
