"""medkern.ops.modulate_weight: StyleGAN2's per-sample weight, modulated by styles and demodulated.

    w[n, o, i, k] = W[o, i, k] * s[n, i] * d[n, o],   d[n, o] = rsqrt(sum over (i, k) of (W * s)^2 + eps)

(d = 1 without demodulation; the definition and its gradient are medkern/reference/modulate_weight.py).
This is the weight of modulated_conv2d's grouped convolution, written once.
"""

from __future__ import annotations

import torch

from .. import backend
from .._args import check_float_tensor
from ..reference.modulate_weight import modulate_weight as reference_modulate_weight
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
    if styles.dtype != weight.dtype:
        raise TypeError(f"{op}: styles must have dtype {weight.dtype} (that of weight), got {styles.dtype}")
    if styles.device != weight.device:
        raise ValueError(f"{op}: styles must be on {weight.device} (the device of weight), got {styles.device}")
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
    return reference_modulate_weight(weight, styles, demodulate, eps)
