"""GAN layer cases: upfirdn2d as StyleGAN uses it (2x upsampling and downsampling with the 4-tap
binomial filter), against the reference written as the definition reads."""

from __future__ import annotations

import torch

from ...ops.upfirdn2d import downsample2d, fir_filter, upsample2d
from ...reference.upfirdn2d import upfirdn2d as reference_upfirdn2d
from ..case import Case, speedup_target

SHAPE, QUICK_SHAPE = (16, 64, 64, 64), (2, 8, 16, 16)
TAPS = (1, 3, 3, 1)

# The acceptance criterion: up=2 with a 4-tap filter on 16x64x64x64.
ACCEPTANCE = (speedup_target("fwd_bwd", "eager", 2.0),)


def _setup(shape, quick_shape, factor_in: int):
    def setup(device: torch.device, dtype: torch.dtype, quick: bool) -> tuple[torch.Tensor, ...]:
        n, c, h, w = quick_shape if quick else shape
        x = torch.randn(n, c, h * factor_in, w * factor_in, device=device, dtype=dtype)
        return x.requires_grad_(), fir_filter(TAPS, device=device)

    return setup


def _upsample_reference(x, f):
    # upsample2d's geometry for a 4-tap filter and up = 2: padding (2, 1) per axis, gain 4
    return reference_upfirdn2d(x, f, (2, 2), (1, 1), (2, 1, 2, 1), False, 4.0)


def _downsample_reference(x, f):
    # downsample2d's geometry for a 4-tap filter and down = 2: padding (1, 1) per axis
    return reference_upfirdn2d(x, f, (1, 1), (2, 2), (1, 1, 1, 1), False, 1.0)


CASES = (
    Case(
        name="gan/upfirdn2d_up2",
        family="upfirdn2d",
        description="upsample2d, 4-tap [1,3,3,1] filter, 16x64x64x64 -> 128x128",
        setup=_setup(SHAPE, QUICK_SHAPE, 1),
        reference=_upsample_reference,
        fused=lambda x, f: upsample2d(x, f),
        bandwidth_bound=True,
        targets=ACCEPTANCE,
        tolerance=("upfirdn2d", "forward"),
    ),
    Case(
        name="gan/upfirdn2d_down2",
        family="upfirdn2d",
        description="downsample2d, 4-tap [1,3,3,1] filter, 16x64x128x128 -> 64x64",
        setup=_setup(SHAPE, QUICK_SHAPE, 2),
        reference=_downsample_reference,
        fused=lambda x, f: downsample2d(x, f),
        bandwidth_bound=True,
        tolerance=("upfirdn2d", "forward"),
    ),
)
