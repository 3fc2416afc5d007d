"""medkern.ops.modulated_conv2d: StyleGAN2's style-modulated convolution, with up/downsampling.

The definition is medkern/reference/modulated_conv2d.py. Here the per-sample weight is made once,
modulated and demodulated in one fused pass (``medkern.ops.modulate_weight``, whose backward
recomputes it rather than saving a second copy), and all samples run as one grouped convolution;
the FIR resampling runs on ``medkern.ops.upfirdn2d``. Upsampling convolves on the input grid, as a
transposed convolution filtered afterwards (``fast_resampled_conv2d``), not on the up^2 times larger
zero-inserted grid as the definition reads. Every piece is differentiable to any order, so R1 and
gradient penalties work through it.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .._args import check_companion, check_float_tensor, check_positive_int
from ..reference.modulated_conv2d import grouped_modulated_conv2d, resample_padding, resampled_conv2d
from .modulate_weight import check_args as check_modulation
from .modulate_weight import modulate_weight
from .upfirdn2d import check_filter, fir_filter, upfirdn2d

OP = "medkern.ops.modulated_conv2d"
DEFAULT_TAPS = (1, 3, 3, 1)  # StyleGAN's binomial low-pass filter


def conv_padding(op: str, padding) -> tuple[int, int]:
    """An int or an (h, w) pair of ints >= 0, as (h, w) (conv2d's convention)."""
    pair = tuple(padding) if isinstance(padding, (tuple, list)) else (padding, padding)
    if len(pair) != 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in pair):
        raise ValueError(f"{op}: padding must be an int >= 0 or an (h, w) pair of them, got {padding!r}")
    return pair


def resampling(op: str, x: torch.Tensor, up, down, padding, resample_filter,
               x_name: str = "x") -> tuple[int, int, tuple, torch.Tensor]:
    """Checks the resampling arguments; returns (up, down, padding (h, w), filter on the device of x,
    called ``x_name`` in errors)."""
    up, down = check_positive_int(op, "up", up), check_positive_int(op, "down", down)
    padding = conv_padding(op, padding)
    if up > 1 and down > 1:
        raise ValueError(f"{op}: up and down cannot both be > 1, got up={up}, down={down}")
    if resample_filter is None:
        resample_filter = fir_filter(DEFAULT_TAPS, device=x.device) if up > 1 or down > 1 else None
    elif not isinstance(resample_filter, torch.Tensor):
        resample_filter = fir_filter(resample_filter, device=x.device)
    return up, down, padding, check_filter(op, resample_filter, x, "resample_filter", x_name)


def check_args(op, x, weight, styles, demodulate, up, down, padding, resample_filter, eps):
    """Checks every argument; returns (up, down, padding, filter, eps) resolved."""
    eps = check_modulation(op, weight, styles, demodulate, eps)
    check_float_tensor(op, "x", x)
    if weight.dim() != 4:
        raise ValueError(
            f"{op}: weight must be 4-d (out_channels, in_channels, kh, kw), got shape {tuple(weight.shape)}"
        )
    if x.dim() != 4 or x.shape[1] != weight.shape[1] or x.shape[0] != styles.shape[0]:
        raise ValueError(
            f"{op}: x must be (N, in_channels, H, W) with N = styles.shape[0] = {styles.shape[0]} and "
            f"in_channels = weight.shape[1] = {weight.shape[1]}, got shape {tuple(x.shape)}"
        )
    check_companion(op, "x", x, weight, "weight")
    return (*resampling(op, x, up, down, padding, resample_filter), eps)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    demodulate: bool = True,
    up: int = 1,
    down: int = 1,
    padding: Union[int, Sequence[int]] = 0,
    resample_filter: Optional[Union[torch.Tensor, Sequence[float]]] = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Convolves each sample x[n] with weight modulated by styles[n] (and demodulated).

    Args:
        x: (N, I, H, W), float32/float64/float16/bfloat16.
        weight: (O, I, kh, kw), x's dtype and device.
        styles: (N, I), per-sample scales of the input channels.
        demodulate: scale each sample's filters to unit norm (StyleGAN2).
        up, down: resampling factor (at most one of them > 1), with ``resample_filter``: taps
            (normalized to sum 1) or a filter tensor (used as given); default StyleGAN's [1, 3, 3, 1].
        padding: convolution padding, an int or (h, w).
        eps: added to the squared filter norm when demodulating.

    Returns (N, O, H', W'), see medkern/reference/modulated_conv2d.py for H' and W'.
    """
    up, down, padding, f, eps = check_args(OP, x, weight, styles, demodulate, up, down, padding,
                                           resample_filter, eps)
    w = modulate_weight(weight, styles, demodulate, eps)
    return grouped_modulated_conv2d(x, w, f, up, down, padding, fast_resampled_conv2d)


def conv2d_resample(x: torch.Tensor, weight: torch.Tensor, up: int = 1, down: int = 1,
                    padding: Union[int, Sequence[int]] = 0, resample_filter=None, groups: int = 1) -> torch.Tensor:
    """conv2d with modulated_conv2d's resampling, for an ordinary (shared) weight."""
    op = "medkern.ops.conv2d_resample"
    check_float_tensor(op, "x", x)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{op}: weight must be a torch.Tensor, got {type(weight).__name__}")
    groups = check_positive_int(op, "groups", groups)  # dtypes are conv2d's to reconcile (autocast)
    if weight.dim() != 4 or weight.shape[0] % groups or x.dim() != 4 or x.shape[1] != weight.shape[1] * groups:
        raise ValueError(f"{op}: weight must be (O, I / groups, kh, kw) with O divisible by groups = {groups} for x "
                         f"(N, I, H, W); got weight {tuple(weight.shape)}, x {tuple(x.shape)}")
    up, down, padding, f = resampling(op, x, up, down, padding, resample_filter)
    return fast_resampled_conv2d(x, weight, f, up, down, padding, groups)


def fast_resampled_conv2d(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor, up: int, down: int,
                          padding: tuple[int, int], groups: int = 1) -> torch.Tensor:
    """The reference's resampled convolution (medkern/reference/modulated_conv2d.py), with
    upsampling reordered so the convolution runs on the input grid: 1 / up^2 of its multiply-adds
    (the FIR filter then runs over the O output channels instead of the I input channels).

    Along an axis with K kernel taps, the reference correlates the weight k with the filtered,
    zero-inserted input; correlating first instead, sum_q k[q] u[r + q] = sum_i x[i] k[up*i - r] is
    conv_transpose(x, flip(k), stride=up) at r + K - 1. Filtering that afterwards gives the same
    sums when the filter's padding (a0, a1) becomes (a0 - (K - 1), a1 - (K - up)).
    """
    if up == 1:
        return resampled_conv2d(x, weight, f, up, down, padding, groups, upfirdn2d)
    out_channels, in_per_group, kh, kw = weight.shape
    # conv_transpose2d takes (in, out / groups, kh, kw): each group's block transposed
    transposed = (weight.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
                  .reshape(groups * in_per_group, out_channels // groups, kh, kw).flip(2, 3))
    t = F.conv_transpose2d(x, transposed, stride=up, groups=groups)
    x0, x1, y0, y1 = resample_padding(f, up, down, padding)
    return upfirdn2d(t, f, (1, 1), (1, 1), (x0 - (kw - 1), x1 - (kw - up), y0 - (kh - 1), y1 - (kh - up)), False,
                     float(up * up))
