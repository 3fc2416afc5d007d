"""pixel_norm in Triton: ops ``medkern::triton_pixel_norm`` and ``medkern::triton_pixel_norm_backward``.

Same schemas and semantics as the C++ ops (csrc/medkern.cpp) and the same autograd
(medkern.ops.pixel_norm.register_autograd). One kernel serves the forward and the backward: a
program takes BLOCK positions (indices of every dim but dim) of x seen in memory order as
[outer, channels, inner] (csrc/common/layout.h), sums over the channels in channel order, then
writes; the math is csrc/common/pixel_norm.h's.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake

from ..ops.pixel_norm import check_args, register_autograd
from .activations import exact, fits_float32, split
from .bias_act import _channel_layout, _with_layout_of

BLOCK = 256
NUM_WARPS = 4


@triton.jit
def div_rn(a, b, FP64: tl.constexpr):
    """a / b correctly rounded (float32's default division is approximate)."""
    if FP64:
        return a / b
    else:
        return tl.div_rn(a, b)


@triton.jit
def sqrt_rn(a, FP64: tl.constexpr):
    """sqrt(a) correctly rounded."""
    if FP64:
        return tl.sqrt(a)
    else:
        return tl.sqrt_rn(a)


@triton.jit
def pixel_norm_kernel(
    g_ptr,
    x_ptr,
    out_ptr,
    positions,
    channels,
    inner,
    eps_hi,
    eps_lo,
    BACKWARD: tl.constexpr,
    FP64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """out = x * r (forward) or r * g - x * r^3 * sum(g * x) / C (BACKWARD), r = rsqrt(mean(x^2) + eps)."""
    p = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = p < positions
    base = (p // inner) * channels * inner + p % inner
    acc_dtype = tl.float64 if FP64 else tl.float32
    sum_sq = tl.zeros([BLOCK], dtype=acc_dtype)
    dot = tl.zeros([BLOCK], dtype=acc_dtype)
    for c in range(0, channels):
        offsets = base + c * inner
        v = tl.load(x_ptr + offsets, mask=mask, other=0).to(acc_dtype)
        sum_sq += v * v
        if BACKWARD:
            dot += tl.load(g_ptr + offsets, mask=mask, other=0).to(acc_dtype) * v
    one = tl.full([BLOCK], 1, acc_dtype)
    count = one * channels
    eps = exact(one, eps_hi, eps_lo)
    r = div_rn(one, sqrt_rn(div_rn(sum_sq, count, FP64) + eps, FP64), FP64)
    mean_dot = div_rn(dot, count, FP64)
    for c in range(0, channels):
        offsets = base + c * inner
        v = tl.load(x_ptr + offsets, mask=mask, other=0).to(acc_dtype)
        if BACKWARD:
            g = tl.load(g_ptr + offsets, mask=mask, other=0).to(acc_dtype)
            out = r * g - v * (r * r * r) * mean_dot
        else:
            out = v * r
        tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)


def _launch(backward, g, x, out, dim, eps):
    if out.device.type == "cpu" and is_fake(out):
        return  # the interpreter runs eagerly on real memory; fake tensors need the outputs only
    outer, channels, inner = _channel_layout(out, dim)
    positions = outer * inner
    on_device = torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        torch.library.wrap_triton(pixel_norm_kernel)[(triton.cdiv(positions, BLOCK),)](
            g if g is not None else x,
            x,
            out,
            positions,
            channels,
            inner,
            *split(eps),
            BACKWARD=backward,
            FP64=x.dtype == torch.float64,
            BLOCK=BLOCK,
            num_warps=NUM_WARPS,
        )


def _check(op, x, dim, eps):
    dim, eps = check_args(op, x, dim, eps)
    if x.dtype == torch.float64 and not fits_float32(eps):
        raise ValueError(f"{op}: the triton backend takes eps within float32's range for float64 tensors, "
                         f"got eps={eps}; use the cpu or cuda backend")
    return dim, eps


@torch.library.triton_op("medkern::triton_pixel_norm", mutates_args=())
def triton_pixel_norm(x: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    dim, eps = _check("medkern::triton_pixel_norm", x, dim, eps)
    y = torch.empty_like(x)
    if y.numel() > 0:
        _launch(False, None, _with_layout_of(x, y), y, dim, eps)
    return y


@torch.library.triton_op("medkern::triton_pixel_norm_backward", mutates_args=())
def triton_pixel_norm_backward(grad: torch.Tensor, x: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    op = "medkern::triton_pixel_norm_backward"
    dim, eps = _check(op, x, dim, eps)
    if grad.shape != x.shape or grad.dtype != x.dtype or grad.device != x.device:
        raise ValueError(f"{op}: grad must match x in shape, dtype and device, got {grad.shape} {grad.dtype} {grad.device}")
    gx = torch.empty_like(x)
    if gx.numel() > 0:
        _launch(True, _with_layout_of(grad, gx), _with_layout_of(x, gx), gx, dim, eps)
    return gx


def forward_op():
    return torch.ops.medkern.triton_pixel_norm.default


def backward_op():
    return torch.ops.medkern.triton_pixel_norm_backward.default


register_autograd("medkern::triton_pixel_norm", "medkern::triton_pixel_norm_backward")


# The variants compiled ahead of time (medkern.triton.aot): forward and backward in every dtype.
def aot_variants():
    pointer = {torch.float32: "*fp32", torch.float64: "*fp64", torch.float16: "*fp16", torch.bfloat16: "*bf16"}
    for dtype, ptr in pointer.items():
        for backward in (False, True):
            signature = {
                "g_ptr": ptr, "x_ptr": ptr, "out_ptr": ptr, "positions": "i64", "channels": "i64", "inner": "i64",
                "eps_hi": "fp32", "eps_lo": "fp32", "BACKWARD": "constexpr", "FP64": "constexpr", "BLOCK": "constexpr",
            }
            constexprs = {"BACKWARD": backward, "FP64": dtype == torch.float64, "BLOCK": BLOCK}
            yield f"pixel_norm_kernel[{ptr[1:]},backward={backward}]", pixel_norm_kernel, signature, constexprs
