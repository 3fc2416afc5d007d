"""bias_act in Triton: ops ``medkern::triton_bias_act`` and ``medkern::triton_bias_act_backward``.

Same schemas and semantics as the C++ ops (csrc/medkern.cpp) and the same autograd
(medkern.ops.bias_act.register_autograd). One kernel serves the forward (ORDER 0) and the
gradients of order 1 and 2; elements are walked in memory order as [outer, channels, inner],
as in csrc/common/layout.h. The bias gradient is a torch sum over the kernel's output.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Optional

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake

from .. import activations
from ..ops.bias_act import check_options, check_tensors, register_autograd
from .activations import activation, exact, fits_float32, split

BLOCK = 1024
NUM_WARPS = 4


@triton.jit
def bias_act_kernel(
    g_ptr,
    x_ptr,
    b_ptr,
    out_ptr,
    n,
    channels,
    inner,
    alpha_hi,
    alpha_lo,
    gain_hi,
    gain_lo,
    clamp_hi,
    clamp_lo,
    ACT: tl.constexpr,
    ORDER: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_CLAMP: tl.constexpr,
    FP64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """out = forward (ORDER 0) or g * gain * act^(ORDER)(x + b) where unclamped (ORDER 1, 2)."""
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask, other=0)
    z = x.to(tl.float64) if FP64 else x.to(tl.float32)
    if HAS_BIAS:
        z += tl.load(b_ptr + (offsets // inner) % channels, mask=mask, other=0).to(z.dtype)
    one = tl.full(z.shape, 1, z.dtype)
    alpha = exact(one, alpha_hi, alpha_lo)
    gain = exact(one, gain_hi, gain_lo)
    if ORDER == 0:
        r = activation(z, alpha, ACT, 0) * gain
        if HAS_CLAMP:
            c = exact(one, clamp_hi, clamp_lo)
            r = tl.where(r > c, c, tl.where(r < -c, -c, r))  # NaN passes, as with torch.clamp
    else:
        g = tl.load(g_ptr + offsets, mask=mask, other=0).to(z.dtype)
        r = g * activation(z, alpha, ACT, ORDER) * gain
        if HAS_CLAMP:
            c = exact(one, clamp_hi, clamp_lo)
            v = activation(z, alpha, ACT, 0) * gain
            r = tl.where((v <= c) & (v >= -c), r, tl.zeros_like(r))
    tl.store(out_ptr + offsets, r.to(out_ptr.dtype.element_ty), mask=mask)


def _with_layout_of(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` with exactly the strides of the dense ``like`` (a copy if it has others)."""
    return t if t.stride() == like.stride() else torch.empty_like(like).copy_(t)


def _channel_layout(t: torch.Tensor, dim: int) -> tuple[int, int, int]:
    """(outer, channels, inner) of the dense ``t`` in memory order; see csrc/common/layout.h."""
    numel, channels = t.numel(), t.shape[dim]
    if numel == 0:
        return 0, channels, 1
    if channels == 1:
        return 1, 1, numel
    inner = t.stride(dim)
    return numel // (channels * inner), channels, inner


def _launch(order, g, x, b, out, dim, act, alpha, gain, clamp):
    if out.device.type == "cpu" and is_fake(out):
        # The interpreter runs kernels eagerly on real memory; fake tensors (shape propagation)
        # only need the outputs allocated. medkern.ops refuses torch.compile in this mode.
        return
    _, channels, inner = _channel_layout(out, dim)
    n = out.numel()
    dummy = x  # pointer arguments a variant does not read
    b = b.contiguous() if b is not None else None  # the kernel indexes b[c]
    on_device = torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
    with on_device:  # Triton launches on the current device
        _launch_kernel(order, g if g is not None else dummy, x, b if b is not None else dummy, out, n,
                       channels, inner, act, alpha, gain, clamp, has_bias=b is not None)


def _launch_kernel(order, g, x, b, out, n, channels, inner, act, alpha, gain, clamp, has_bias):
    torch.library.wrap_triton(bias_act_kernel)[(triton.cdiv(n, BLOCK),)](
        g,
        x,
        b,
        out,
        n,
        channels,
        inner,
        *split(alpha),
        *split(gain),
        *split(clamp if clamp is not None else 0.0),
        ACT=activations.get(act).id,
        ORDER=order,
        HAS_BIAS=has_bias,
        HAS_CLAMP=clamp is not None,
        FP64=x.dtype == torch.float64,
        BLOCK=BLOCK,
        num_warps=NUM_WARPS,
    )


def _check(op, x, b, dim, act, alpha, gain, clamp):
    check_tensors(op, x, b, dim)
    activations.get(act, op)
    check_options(op, "linear", None, gain, clamp)
    if x.dtype == torch.float64 and not all(fits_float32(v) for v in (alpha, gain, clamp or 0.0)):
        # Triton passes float scalars as float32 (see medkern/triton/activations.py)
        raise ValueError(f"{op}: the triton backend takes alpha, gain and clamp within float32's range for "
                         f"float64 tensors, got alpha={alpha}, gain={gain}, clamp={clamp}; use the cpu or cuda backend")


@torch.library.triton_op("medkern::triton_bias_act", mutates_args=())
def triton_bias_act(
    x: torch.Tensor,
    b: Optional[torch.Tensor],
    dim: int,
    act: str,
    alpha: float,
    gain: float,
    clamp: Optional[float],
) -> torch.Tensor:
    _check("medkern::triton_bias_act", x, b, dim, act, alpha, gain, clamp)
    dim %= x.dim()
    y = torch.empty_like(x)
    if y.numel() > 0:
        _launch(0, None, _with_layout_of(x, y), b, y, dim, act, alpha, gain, clamp)
    return y


@torch.library.triton_op("medkern::triton_bias_act_backward", mutates_args=())
def triton_bias_act_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    b: Optional[torch.Tensor],
    dim: int,
    act: str,
    alpha: float,
    gain: float,
    clamp: Optional[float],
    order: int,
    bias_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    op = "medkern::triton_bias_act_backward"
    _check(op, x, b, dim, act, alpha, gain, clamp)
    if order not in (1, 2):
        raise ValueError(f"{op}: order must be 1 or 2 (higher orders run in PyTorch ops), got {order}")
    if grad.shape != x.shape or grad.dtype != x.dtype or grad.device != x.device:
        raise ValueError(f"{op}: grad must match x in shape, dtype and device, got {grad.shape} {grad.dtype} {grad.device}")
    dim %= x.dim()
    gx = torch.empty_like(x)
    if gx.numel() > 0:
        _launch(order, _with_layout_of(grad, gx), _with_layout_of(x, gx), b, gx, dim, act, alpha, gain, clamp)
    if not bias_grad:
        return gx, x.new_zeros((0,))
    outer, channels, inner = _channel_layout(gx, dim)
    in_memory_order = gx.as_strided((outer, channels, inner), (channels * inner, inner, 1))
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    return gx, in_memory_order.sum((0, 2), dtype=acc).to(x.dtype)


def forward_op():
    return torch.ops.medkern.triton_bias_act.default


def backward_op():
    return torch.ops.medkern.triton_bias_act_backward.default


register_autograd("medkern::triton_bias_act", "medkern::triton_bias_act_backward")


# The variants compiled ahead of time (medkern.triton.aot): every activation and order with each
# combination of bias and clamp in float32, and with both in the other dtypes.
def aot_variants():
    pointer = {torch.float32: "*fp32", torch.float64: "*fp64", torch.float16: "*fp16", torch.bfloat16: "*bf16"}
    flags = {torch.float32: [(True, True), (True, False), (False, True), (False, False)]}
    scalars = {f"{name}_{part}": "fp32" for name in ("alpha", "gain", "clamp") for part in ("hi", "lo")}
    for dtype, ptr in pointer.items():
        combos = itertools.product(flags.get(dtype, [(True, True)]), activations.NAMES, (0, 1, 2))
        for (has_bias, has_clamp), act, order in combos:
            signature = {
                "g_ptr": ptr, "x_ptr": ptr, "b_ptr": ptr, "out_ptr": ptr,
                "n": "i64", "channels": "i64", "inner": "i64", **scalars,
                "ACT": "constexpr", "ORDER": "constexpr", "HAS_BIAS": "constexpr",
                "HAS_CLAMP": "constexpr", "FP64": "constexpr", "BLOCK": "constexpr",
            }
            constexprs = {
                "ACT": activations.get(act).id, "ORDER": order, "HAS_BIAS": has_bias,
                "HAS_CLAMP": has_clamp, "FP64": dtype == torch.float64, "BLOCK": BLOCK,
            }
            name = f"bias_act_kernel[{act},order={order},{ptr[1:]},bias={has_bias},clamp={has_clamp}]"
            yield name, bias_act_kernel, signature, constexprs
