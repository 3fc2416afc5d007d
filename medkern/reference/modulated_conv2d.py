"""modulated_conv2d in plain PyTorch (StyleGAN2), and the resampled convolution it is built on.

    y[n] = resampled_conv2d(x[n], w[n]),   w = modulate_weight(weight, styles, demodulate, eps)

run for all samples at once as one grouped convolution (groups = N) over x viewed as
(1, N * I, H, W). The resampling, with a FIR filter f (StyleGAN's alignment, so the image stays
centered):

    up > 1:   upsample by zero insertion and filter with f (gain up^2), padded by p plus the filter's
              alignment, then a valid convolution: output H * up + 2p - k + 1 (2H for k = 3, p = 1);
    down > 1: filter with f, padded the same way, then a valid convolution with stride down:
              output H / down for k = 3, p = 1, a 4-tap f and even H;
    neither:  a plain convolution with padding p.

The padding goes in before the filter, so the border sees the filter's spill as it would
without padding (StyleGAN2's conv2d_resample: the same sums as its transposed-convolution path).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .modulate_weight import modulate_weight
from .upfirdn2d import down_alignment, up_alignment
from .upfirdn2d import upfirdn2d as reference_upfirdn2d


def resample_padding(f: torch.Tensor, up: int, down: int, padding: tuple[int, int]) -> tuple[int, int, int, int]:
    """upfirdn2d padding (x0, x1, y0, y1): f centered on the up- (up > 1) or downsampled grid, plus
    the convolution's padding (ph, pw)."""
    align, factor = (up_alignment, up) if up > 1 else (down_alignment, down)
    (x0, x1), (y0, y1) = align(f.shape[-1], factor), align(f.shape[0], factor)  # (width, height) taps
    ph, pw = padding
    return x0 + pw, x1 + pw, y0 + ph, y1 + ph


def resampled_conv2d(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor, up: int, down: int,
                     padding: tuple[int, int], groups: int = 1, upfirdn2d: Callable = reference_upfirdn2d):
    """conv2d(x, weight) with the resampling of the module docstring; ``upfirdn2d`` is called as
    ``upfirdn2d(x, f, (up, up), (down, down), (x0, x1, y0, y1), flip_filter, gain)``."""
    if up == 1 and down == 1:
        return F.conv2d(x, weight, padding=padding, groups=groups)
    x = upfirdn2d(x, f, (up, up), (1, 1), resample_padding(f, up, down, padding), False, float(up * up))
    return F.conv2d(x, weight, stride=down, groups=groups)


def grouped_modulated_conv2d(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor, up: int, down: int,
                             padding: tuple[int, int], conv: Callable = resampled_conv2d) -> torch.Tensor:
    """Convolves each x[n] (N, I, H, W) with its own weight w[n] (N, O, I, kh, kw) as one grouped conv;
    ``conv`` is called as resampled_conv2d(x, weight, f, up, down, padding, groups)."""
    n, in_channels, h, width = x.shape
    out_channels = w.shape[1]
    if n == 0 or out_channels == 0:  # a grouped conv needs groups >= 1 and conv2d an output channel: one
        # plain conv with a zero weight of one sample's shape (>= 1 channel), tied to w so gradients are zeros
        shared = w.sum(0) if out_channels else w.sum((0, 1)).unsqueeze(0)
        return conv(x, shared, f, up, down, padding, 1)[:, :out_channels]
    y = conv(x.reshape(1, n * in_channels, h, width), w.reshape(-1, *w.shape[2:]), f, up, down, padding, n)
    return y.reshape(n, -1, *y.shape[2:])


def modulated_conv2d(x, weight, styles, demodulate: bool, up: int, down: int, padding: tuple[int, int],
                     f: torch.Tensor, eps: float) -> torch.Tensor:
    """The reference forward; arguments already checked (see medkern.ops.modulated_conv2d)."""
    w = modulate_weight(weight, styles, demodulate, eps)
    return grouped_modulated_conv2d(x, w, f, up, down, padding)
