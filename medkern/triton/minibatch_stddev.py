"""minibatch_stddev in Triton: ops ``medkern::triton_minibatch_stddev`` and
``medkern::triton_minibatch_stddev_backward``.

Same schemas, semantics and output layouts as the C++ ops (csrc/medkern.cpp) and the same
autograd (medkern.ops.minibatch_stddev.register_autograd). The kernels work on x (and grad) in
contiguous order, one program per BLOCK (group, channel, pixel) items, with the math of
csrc/common/minibatch_stddev.h: the forward writes each item's s, which torch sums per statistic
(a fixed-order reduction); the backward writes the G members' gradients of each item, from the
per-statistic sums of grad that torch computes.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake

from ..ops.minibatch_stddev import check_args, register_autograd
from ..reference.minibatch_stddev import EPS, memory_format
from .activations import exact, split
from .pixel_norm import div_rn, sqrt_rn

BLOCK = 256
NUM_WARPS = 4
_EPS_HI, _EPS_LO = split(EPS)


@triton.jit
def _moments(x_ptr, q, mask, items, group, eps, acc_dtype: tl.constexpr, FP64: tl.constexpr, BLOCK: tl.constexpr):
    """mean and s over the group's members, at q + g * items."""
    total = tl.zeros([BLOCK], dtype=acc_dtype)
    for g in range(0, group):
        total += tl.load(x_ptr + q + g * items, mask=mask, other=0).to(acc_dtype)
    count = tl.full([BLOCK], 1, acc_dtype) * group
    mean = div_rn(total, count, FP64)
    sum_sq = tl.zeros([BLOCK], dtype=acc_dtype)
    for g in range(0, group):
        d = tl.load(x_ptr + q + g * items, mask=mask, other=0).to(acc_dtype) - mean
        sum_sq += d * d
    return mean, sqrt_rn(div_rn(sum_sq, count, FP64) + eps, FP64)


@triton.jit
def minibatch_stddev_kernel(
    g_ptr,
    x_ptr,
    a_ptr,
    out_ptr,
    items,
    channels,
    hw,
    group,
    groups,
    num_channels,
    eps_hi,
    eps_lo,
    BACKWARD: tl.constexpr,
    FP64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Forward: out[q] = s at item q (out: op-math dtype). BACKWARD: gx of the G members of item q,
    gx = grad + a[m, f] * (x - mean) / (G * s)."""
    q = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = q < items
    acc_dtype = tl.float64 if FP64 else tl.float32
    one = tl.full([BLOCK], 1, acc_dtype)
    mean, s = _moments(x_ptr, q, mask, items, group, exact(one, eps_hi, eps_lo), acc_dtype, FP64, BLOCK)
    if BACKWARD:
        per_sample = channels * hw
        m = q // per_sample
        k = (q // hw) % channels
        p = q % hw
        a = tl.load(a_ptr + m * num_channels + k // (channels // num_channels), mask=mask, other=0).to(acc_dtype)
        coef = div_rn(a, (one * group) * s, FP64)
        for g in range(0, group):
            n = g * groups + m
            grad = tl.load(g_ptr + (n * (channels + num_channels) + k) * hw + p, mask=mask, other=0).to(acc_dtype)
            v = tl.load(x_ptr + q + g * items, mask=mask, other=0).to(acc_dtype)
            tl.store(out_ptr + q + g * items, (grad + coef * (v - mean)).to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(out_ptr + q, s.to(out_ptr.dtype.element_ty), mask=mask)


def _launch(backward, grad, x, a, out, group, num_channels):
    n, c, h, w = x.shape
    groups = n // group
    items = groups * c * h * w
    on_device = torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        torch.library.wrap_triton(minibatch_stddev_kernel)[(triton.cdiv(items, BLOCK),)](
            grad if grad is not None else x,
            x,
            a if a is not None else out,
            out,
            items,
            c,
            h * w,
            group,
            groups,
            num_channels,
            _EPS_HI,
            _EPS_LO,
            BACKWARD=backward,
            FP64=x.dtype == torch.float64,
            BLOCK=BLOCK,
            num_warps=NUM_WARPS,
        )


def _acc_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


@torch.library.triton_op("medkern::triton_minibatch_stddev", mutates_args=())
def triton_minibatch_stddev(x: torch.Tensor, group_size: int, num_channels: int) -> torch.Tensor:
    check_args("medkern::triton_minibatch_stddev", x, group_size, num_channels)
    n, c, h, w = x.shape
    f = num_channels
    out = torch.empty((n, c + f, h, w), dtype=x.dtype, device=x.device, memory_format=memory_format(x))
    if out.numel() == 0 or (out.device.type == "cpu" and is_fake(out)):
        return out
    group = min(group_size, n)
    xc = x.contiguous()
    s = torch.empty((n // group, c, h, w), dtype=_acc_dtype(x.dtype), device=x.device)
    _launch(False, None, xc, None, s, group, f)
    stat = s.reshape(n // group, f, -1).sum(-1) / (c // f * h * w)  # [M, F]
    out[:, :c].copy_(x)
    out[:, c:].copy_(stat.to(x.dtype).repeat(group, 1)[:, :, None, None].expand(n, f, h, w))
    return out


@torch.library.triton_op("medkern::triton_minibatch_stddev_backward", mutates_args=())
def triton_minibatch_stddev_backward(grad: torch.Tensor, x: torch.Tensor, group_size: int,
                                     num_channels: int) -> torch.Tensor:
    op = "medkern::triton_minibatch_stddev_backward"
    check_args(op, x, group_size, num_channels)
    n, c, h, w = x.shape
    f = num_channels
    if grad.shape != (n, c + f, h, w) or grad.dtype != x.dtype or grad.device != x.device:
        raise ValueError(f"{op}: grad must have shape (N, C + num_channels, H, W) = {(n, c + f, h, w)}, x's dtype and "
                         f"device, got {tuple(grad.shape)} {grad.dtype} {grad.device}")
    gx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format(x))
    if gx.numel() == 0 or (gx.device.type == "cpu" and is_fake(gx)):
        return gx
    group = min(group_size, n)
    a = grad[:, c:].reshape(group, n // group, f, h * w).sum((0, 3), dtype=_acc_dtype(x.dtype)) / (c // f * h * w)
    flat = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _launch(True, grad.contiguous(), x.contiguous(), a.contiguous(), flat, group, f)
    return gx.copy_(flat)


def forward_op():
    return torch.ops.medkern.triton_minibatch_stddev.default


def backward_op():
    return torch.ops.medkern.triton_minibatch_stddev_backward.default


register_autograd("medkern::triton_minibatch_stddev", "medkern::triton_minibatch_stddev_backward")


# The variants compiled ahead of time (medkern.triton.aot): forward and backward in every dtype.
def aot_variants():
    pointer = {torch.float32: "*fp32", torch.float64: "*fp64", torch.float16: "*fp16", torch.bfloat16: "*bf16"}
    for dtype, ptr in pointer.items():
        acc = "*fp64" if dtype == torch.float64 else "*fp32"
        for backward in (False, True):
            signature = {
                "g_ptr": ptr, "x_ptr": ptr, "a_ptr": acc, "out_ptr": ptr if backward else acc,
                "items": "i64", "channels": "i64", "hw": "i64", "group": "i64", "groups": "i64",
                "num_channels": "i64", "eps_hi": "fp32", "eps_lo": "fp32",
                "BACKWARD": "constexpr", "FP64": "constexpr", "BLOCK": "constexpr",
            }
            constexprs = {"BACKWARD": backward, "FP64": dtype == torch.float64, "BLOCK": BLOCK}
            name = f"minibatch_stddev_kernel[{ptr[1:]},backward={backward}]"
            yield name, minibatch_stddev_kernel, signature, constexprs
