"""bias_act cases: StyleGAN's lrelu + gain + clamp (the acceptance case), its channels_last
twin, gelu, and a 2-d silu with the bias along the last dim."""

from __future__ import annotations

import math
from typing import Optional

import torch

from ... import activations
from ...ops.bias_act import bias_act as fused_bias_act
from ...reference.bias_act import bias_act as reference_bias_act
from ..case import Case, Target, clone_target, speedup_target

IMAGE_SHAPE, QUICK_IMAGE_SHAPE = (16, 64, 128, 128), (2, 8, 32, 32)
MATRIX_SHAPE, QUICK_MATRIX_SHAPE = (4096, 1024), (64, 128)

# The acceptance criteria for the StyleGAN layer.
ACCEPTANCE = (
    speedup_target("fwd_bwd", "eager", 2.5),
    speedup_target("fwd_bwd", "compile", 1.0),
    clone_target(1.3),
)


def bias_act_case(
    name: str,
    description: str,
    shape: tuple[int, ...],
    quick_shape: tuple[int, ...],
    act: str,
    alpha: Optional[float] = None,
    gain: Optional[float] = None,
    clamp: Optional[float] = None,
    dim: int = 1,
    memory_format: torch.memory_format = torch.contiguous_format,
    targets: tuple[Target, ...] = (),
) -> Case:
    # The reference takes resolved arguments; the op resolves its own (and rejects an alpha
    # for activations that take none), so each gets its form of the same parameters.
    resolved_alpha = activations.resolve_alpha(activations.get(act), alpha)
    resolved_gain = 1.0 if gain is None else gain

    def setup(device: torch.device, dtype: torch.dtype, quick: bool) -> tuple[torch.Tensor, ...]:
        x_shape = quick_shape if quick else shape
        x = torch.randn(x_shape, device=device, dtype=dtype).to(memory_format=memory_format)
        b = torch.randn(x_shape[dim], device=device, dtype=dtype)
        return x.requires_grad_(), b.requires_grad_()

    def reference(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return reference_bias_act(x, b, dim, act, resolved_alpha, resolved_gain, clamp)

    def fused(x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return fused_bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)

    return Case(
        name=f"bias_act/{name}",
        family="bias_act",
        description=description,
        setup=setup,
        reference=reference,
        fused=fused,
        bandwidth_bound=True,
        targets=targets,
    )


CASES = (
    bias_act_case(
        "lrelu_gain_clamp",
        "StyleGAN layer: lrelu(alpha=0.2) * sqrt(2), clamp 256, NCHW",
        IMAGE_SHAPE, QUICK_IMAGE_SHAPE,
        act="lrelu", alpha=0.2, gain=math.sqrt(2), clamp=256.0,
        targets=ACCEPTANCE,
    ),
    bias_act_case(
        "lrelu_channels_last",
        "the same in channels_last",
        IMAGE_SHAPE, QUICK_IMAGE_SHAPE,
        act="lrelu", alpha=0.2, gain=math.sqrt(2), clamp=256.0,
        memory_format=torch.channels_last,
    ),
    bias_act_case("gelu", "gelu (erf), NCHW", IMAGE_SHAPE, QUICK_IMAGE_SHAPE, act="gelu"),
    bias_act_case("silu_2d", "silu, bias along dim 1 of a matrix", MATRIX_SHAPE, QUICK_MATRIX_SHAPE, act="silu"),
)
