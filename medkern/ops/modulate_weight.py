"""medkern.ops.modulate_weight: StyleGAN2's per-sample weight, modulated by styles and demodulated.

    w[n, o, i, k] = W[o, i, k] * s[n, i] * d[n, o],   d[n, o] = rsqrt(sum over (i, k) of (W * s)^2 + eps)

(d = 1 without demodulation; the definition and its gradient are medkern/reference/modulate_weight.py).
This is the weight of modulated_conv2d's grouped convolution, written once.

The backend (medkern.backend) picks the implementation: the C++ op ``medkern::modulate_weight``
(CPU and CUDA kernels), the Triton op ``medkern::triton_modulate_weight``, or the reference. The
gradient is the fused ``modulate_weight_backward(grad, weight, styles)`` (d recomputed, only
weight and styles saved), whose own derivative (second order: path-length penalties, R1 through a
modulated discriminator) runs through the reference (medkern/ops/_fused_autograd.py). Outputs are
contiguous.
"""

from __future__ import annotations

import torch

from .. import backend
from .._args import check_companion, check_float_tensor
from ..reference.modulate_weight import modulate_weight as reference_modulate_weight
from . import _fused_autograd
from .pixel_norm import check_eps

OP = "medkern.ops.modulate_weight"


def check_args(op: str, weight, styles, demodulate, eps) -> float:
    """Checks every argument (ValueError/TypeError naming ``op`` and the argument); returns eps."""
    check_float_tensor(op, "weight", weight)
    check_float_tensor(op, "styles", styles)
    if weight.dim() < 2:
        raise ValueError(f"{op}: weight must be (out_channels, in_channels, *kernel), got shape {tuple(weight.shape)}")
    if styles.dim() != 2 or styles.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{op}: styles must be (N, in_channels) with in_channels = weight.shape[1] = {weight.shape[1]}, "
            f"got shape {tuple(styles.shape)}"
        )
    check_companion(op, "styles", styles, weight, "weight")
    if not isinstance(demodulate, bool):
        raise TypeError(f"{op}: demodulate must be a bool, got {demodulate!r}")
    return check_eps(op, eps)


def modulate_weight(weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                    eps: float = 1e-8) -> torch.Tensor:
    """The per-sample weights (N, O, I, *k) for weight (O, I, *k) and styles (N, I).

    Args:
        weight: float32/float64/float16/bfloat16 convolution weight (any kernel rank).
        styles: per-sample input-channel scales, weight's dtype and device.
        demodulate: scale each (n, o) filter to unit norm (StyleGAN2's demodulation).
        eps: added to the squared norm (>= 0).

    float16 and bfloat16 are computed in float32 inside the kernels.
    """
    eps = check_args(OP, weight, styles, demodulate, eps)
    chosen = backend.select("modulate_weight", weight.device)
    backend.check_traceable(OP, chosen, weight.device)
    if chosen == "reference":
        return reference_modulate_weight(weight, styles, demodulate, eps)
    forward, _ = _fused_autograd.kernel_ops("modulate_weight", chosen)
    return forward(weight, styles, demodulate, eps)


def register_autograd(forward_name: str, backward_name: str) -> None:
    """Makes op ``forward_name`` differentiable in weight and styles through ``backward_name``, and
    that op through the reference (medkern/ops/_fused_autograd.py)."""
    _fused_autograd.register_autograd(forward_name, backward_name, reference_modulate_weight, num_tensors=2)


def fake_forward(weight, styles, demodulate, eps):
    return weight.new_empty((styles.shape[0], *weight.shape))  # contiguous, as the kernels allocate it


def fake_backward(grad, weight, styles, demodulate, eps):
    return weight.new_empty(weight.shape), styles.new_empty(styles.shape)


_fused_autograd.register_compiled_ops("modulate_weight", fake_forward, fake_backward, reference_modulate_weight,
                                      num_tensors=2)
