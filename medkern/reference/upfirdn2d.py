"""upfirdn2d in plain PyTorch: upsample by zero insertion, pad, FIR filter, downsample.

For x (N, C, H, W), along each axis (x: width, y: height) with factors up and down, padding
(p0, p1) and filter taps f[0..k):

    u[m]  = x[m / up] if m % up == 0 else 0          (m in [0, size * up))
    v[j]  = u[j - p0] (0 outside u; negative padding crops)
    w[o'] = sum_k f[k] * v[o' + k_flipped]           true convolution with f; correlation if flip_filter
    y[o]  = w[o * down]

so the output has (size * up + p0 + p1 - k) // down + 1 samples. A 1-D filter is separable (the
same taps along both axes); a 2-D filter (kh, kw) is applied as is. The output is multiplied by
``gain`` (per axis gain ** 0.5 for a separable filter). Written as the definition reads, in
torch ops autograd differentiates to any order; medkern.ops.upfirdn2d checks and resolves the
arguments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def up_alignment(taps: int, up: int) -> tuple[int, int]:
    """(lead, trail) padding that centers a filter of ``taps`` on a grid upsampled by ``up`` (StyleGAN's)."""
    return (taps + up - 1) // 2, (taps - up) // 2


def down_alignment(taps: int, down: int) -> tuple[int, int]:
    """(lead, trail) padding that centers a filter of ``taps`` on a grid downsampled by ``down``."""
    return (taps - down + 1) // 2, (taps - down) // 2


def _zero_insert(x: torch.Tensor, up_x: int, up_y: int) -> torch.Tensor:
    n, c, h, w = x.shape
    if up_x == 1 and up_y == 1:
        return x
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, up_x - 1, 0, 0, 0, up_y - 1])
    return x.reshape(n, c, h * up_y, w * up_x)


def _pad_or_crop(x: torch.Tensor, px0: int, px1: int, py0: int, py1: int) -> torch.Tensor:
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    h, w = x.shape[2], x.shape[3]
    return x[:, :, max(-py0, 0): h - max(-py1, 0), max(-px0, 0): w - max(-px1, 0)]


def _depthwise(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Correlation of every channel of x with the 2-D ``taps`` (no padding)."""
    channels = x.shape[1]
    if channels == 0:  # conv2d takes no zero groups
        return x.new_zeros(x.shape[0], 0, x.shape[2] - taps.shape[0] + 1, x.shape[3] - taps.shape[1] + 1)
    weight = taps[None, None].expand(channels, 1, *taps.shape)
    return F.conv2d(x, weight, groups=channels)


def correlation_taps(f: torch.Tensor, flip_filter: bool) -> torch.Tensor:
    """The taps the definition slides over its input in correlation order."""
    return f if flip_filter else f.flip(list(range(f.dim())))


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: tuple[int, int],
    down: tuple[int, int],
    padding: tuple[int, int, int, int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    """The reference; ``up``/``down`` are (x, y), ``padding`` (x0, x1, y0, y1), all checked."""
    (up_x, up_y), (down_x, down_y) = up, down
    taps = correlation_taps(f, flip_filter).to(x.dtype)
    taps = taps * (gain ** (taps.dim() / 2))
    x = _pad_or_crop(_zero_insert(x, up_x, up_y), *padding)
    if taps.dim() == 2:
        x = _depthwise(x, taps)
    else:
        x = _depthwise(x, taps[None, :])
        x = _depthwise(x, taps[:, None])
    return x[:, :, ::down_y, ::down_x]
