"""medkern.ops.pixel_norm: StyleGAN's pixel norm in one pass, differentiable to any order.

    y = x * rsqrt(mean(x^2 over dim) + eps)

The backend (medkern.backend) picks the implementation: the C++ op ``medkern::pixel_norm``
(CPU and CUDA kernels), the Triton op ``medkern::triton_pixel_norm``, or the reference. Both
kernel ops share one autograd definition here: the gradient is the fused
``pixel_norm_backward(grad, x)``, whose own derivative (second order, for R1 penalties) runs
through the reference (medkern/reference/_double_backward.py), exact and differentiable again.
Only x is saved for backward.
"""

from __future__ import annotations

import math

import torch

from .. import backend
from ..reference.pixel_norm import pixel_norm as reference_pixel_norm
from . import _fused_autograd
from .bias_act import check_tensors

OP = "medkern.ops.pixel_norm"


def check_eps(op: str, eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"{op}: eps must be a real number, got {eps!r}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{op}: eps must be finite and >= 0, got {eps}")
    return float(eps)


def check_args(op: str, x, dim, eps) -> tuple[int, float]:
    """Checks every argument (ValueError/TypeError naming ``op`` and the argument); returns
    (dim in [0, ndim), eps)."""
    check_tensors(op, x, None, dim)  # x and dim are checked as bias_act checks them
    return dim % x.dim(), check_eps(op, eps)


def pixel_norm(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """``x * rsqrt(mean(x^2 over dim) + eps)``.

    Args:
        x: float32/float64/float16/bfloat16 tensor of any rank >= 1 and any layout.
        dim: the dimension normalized over (the channels).
        eps: added to the mean square (>= 0).

    Returns a tensor of x's shape, dtype and (for dense x) layout. float16 and bfloat16 inputs
    are computed in float32 inside the kernels.
    """
    dim, eps = check_args(OP, x, dim, eps)
    chosen = backend.select("pixel_norm", x.device)
    backend.check_traceable(OP, chosen, x.device)
    if chosen == "reference":
        return reference_pixel_norm(x, dim, eps)
    forward, _ = _fused_autograd.kernel_ops("pixel_norm", chosen)
    return forward(x, dim, eps)


def _reference(x, dim, eps):
    return reference_pixel_norm(x, dim % x.dim(), eps)  # direct op callers may pass a negative dim


def register_autograd(forward_name: str, backward_name: str) -> None:
    """Makes op ``forward_name`` differentiable through ``backward_name``, and that op through the
    reference (medkern/ops/_fused_autograd.py)."""
    _fused_autograd.register_autograd(forward_name, backward_name, _reference)


def fake_forward(x, dim, eps):
    return torch.empty_like(x)  # the kernels allocate y the same way: x's layout when dense


def fake_backward(grad, x, dim, eps):
    return torch.empty_like(x)


_fused_autograd.register_compiled_ops("pixel_norm", fake_forward, fake_backward, _reference)
