"""max_pool in Triton: ops ``medkern::triton_max_pool`` and ``medkern::triton_max_pool_backward``.

Same schemas and semantics as the C++ ops (csrc/medkern.cpp) and the same autograd
(medkern.ops.max_pool.register_autograd). As the CUDA kernels: the forward takes a block of
output elements in memory order and sweeps each one's window in window order (torch's rule for
ties and NaN); the backward takes a block of input elements and gathers, in output order, the
gradients of the outputs whose argmax names them. Every tensor is seen as (N, C, D, H, W)
(csrc/common/max_pool.h); the window is unrolled at compile time.
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake

from ..ops.max_pool import (WINDOW_LIMIT, channels_last as _channels_last, check_args, check_backward_args,
                            empty_input_grad, empty_outputs, register_autograd)
from ..reference.max_pool import NO_ELEMENT as _NO_ELEMENT

BLOCK = 256
NUM_WARPS = 4
NO_ELEMENT = tl.constexpr(_NO_ELEMENT)


@triton.jit
def _unravel(e, C, S0, S1, S2, CHANNELS_LAST: tl.constexpr):
    """(n, c, i0, i1, i2) of element e (memory order) of a tensor of spatial size (S0, S1, S2)."""
    if CHANNELS_LAST:
        c = e % C
        rest = e // C
        i2 = rest % S2
        rest = rest // S2
        i1 = rest % S1
        rest = rest // S1
        i0 = rest % S0
        n = rest // S0
    else:
        i2 = e % S2
        rest = e // S2
        i1 = rest % S1
        rest = rest // S1
        i0 = rest % S0
        rest = rest // S0
        c = rest % C
        n = rest // C
    return n, c, i0, i1, i2


@triton.jit
def _offset(n, c, i0, i1, i2, C, S0, S1, S2, CHANNELS_LAST: tl.constexpr):
    spatial = (i0 * S1 + i1) * S2 + i2
    if CHANNELS_LAST:
        return (n * (S0 * S1 * S2) + spatial) * C + c
    else:
        return (n * C + c) * (S0 * S1 * S2) + spatial


@triton.jit
def max_pool_forward_kernel(
    x_ptr, y_ptr, argmax_ptr, total, C, I0, I1, I2, O0, O1, O2,
    ST0, ST1, ST2, P0, P1, P2, DL0, DL1, DL2,
    K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, CHANNELS_LAST: tl.constexpr, FP64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = e < total
    n, c, o0, o1, o2 = _unravel(e, C, O0, O1, O2, CHANNELS_LAST)
    acc = tl.float64 if FP64 else tl.float32
    best = tl.full([BLOCK], 0, acc)
    arg = tl.full([BLOCK], -1, tl.int32)
    for kd in tl.static_range(K0):
        d = o0 * ST0 - P0 + kd * DL0
        inside_d = (d >= 0) & (d < I0)
        for kh in tl.static_range(K1):
            h = o1 * ST1 - P1 + kh * DL1
            inside_dh = inside_d & (h >= 0) & (h < I1)
            for kw in tl.static_range(K2):
                w = o2 * ST2 - P2 + kw * DL2
                valid = mask & inside_dh & (w >= 0) & (w < I2)
                v = tl.load(x_ptr + _offset(n, c, d, h, w, C, I0, I1, I2, CHANNELS_LAST), mask=valid, other=0)
                v = v.to(acc)
                replace = valid & ((arg < 0) | (v > best) | (v != v))
                best = tl.where(replace, v, best)
                arg = tl.where(replace, (kd * K1 + kh) * K2 + kw, arg)
    empty = arg < 0  # a window without an input element (dilation): -inf, no position
    best = tl.where(empty, float("-inf"), best)
    arg = tl.where(empty, NO_ELEMENT, arg)
    tl.store(y_ptr + e, best.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(argmax_ptr + e, arg.to(tl.uint8), mask=mask)


@triton.jit
def _source(i, k, P, ST, DL, O, K: tl.constexpr):
    """The output along one axis whose window holds input i at window position K - 1 - k (so that
    k ascending walks the outputs in ascending order), and whether there is one."""
    r = i + P - (K - 1 - k) * DL
    o = r // ST
    return o, (r >= 0) & (r % ST == 0) & (o < O)


@triton.jit
def max_pool_backward_kernel(
    g_ptr, argmax_ptr, dx_ptr, total, C, I0, I1, I2, O0, O1, O2,
    ST0, ST1, ST2, P0, P1, P2, DL0, DL1, DL2,
    K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, CHANNELS_LAST: tl.constexpr, FP64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """For each window position (at most 255 unrolled), the output whose window holds the input
    element there; its gradient counts if its argmax is that position. Outputs in ascending order,
    as the CPU and CUDA kernels add them."""
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = e < total
    n, c, i0, i1, i2 = _unravel(e, C, I0, I1, I2, CHANNELS_LAST)
    acc = tl.float64 if FP64 else tl.float32
    total_grad = tl.zeros([BLOCK], acc)
    for jd in tl.static_range(K0):
        od, ok_d = _source(i0, jd, P0, ST0, DL0, O0, K0)
        for jh in tl.static_range(K1):
            oh, ok_h = _source(i1, jh, P1, ST1, DL1, O1, K1)
            for jw in tl.static_range(K2):
                ow, ok_w = _source(i2, jw, P2, ST2, DL2, O2, K2)
                valid = mask & ok_d & ok_h & ok_w
                at = _offset(n, c, od, oh, ow, C, O0, O1, O2, CHANNELS_LAST)
                a = tl.load(argmax_ptr + at, mask=valid, other=NO_ELEMENT).to(tl.int32)
                g = tl.load(g_ptr + at, mask=valid, other=0).to(acc)
                position = ((K0 - 1 - jd) * K1 + (K1 - 1 - jh)) * K2 + (K2 - 1 - jw)
                total_grad += tl.where(valid & (a == position), g, 0)
    tl.store(dx_ptr + e, total_grad.to(dx_ptr.dtype.element_ty), mask=mask)


def _three(values, fill):
    """A per-spatial-dim list as (D, H, W): leading axes added with ``fill``."""
    return [fill] * (3 - len(values)) + list(values)


def _geometry(input_spatial, output_spatial, kernel_size, stride, padding, dilation):
    """The runtime ints and the window constexprs of both kernels."""
    runtime = (*_three(input_spatial, 1), *_three(output_spatial, 1), *_three(stride, 1), *_three(padding, 0),
               *_three(dilation, 1))
    return runtime, _window(kernel_size)


def _window(kernel_size) -> dict:
    """The window's constexprs K0, K1, K2 (D, H, W)."""
    return dict(zip(("K0", "K1", "K2"), _three(kernel_size, 1)))


def _launch(kernel, tensors, total, channels, runtime, constexprs, device):
    if is_fake(tensors[-1]) and device.type == "cpu":
        return  # the interpreter runs eagerly on real memory; fake tensors need the outputs only
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        torch.library.wrap_triton(kernel)[(triton.cdiv(total, BLOCK),)](
            *tensors, total, channels, *runtime, **constexprs, BLOCK=BLOCK, num_warps=NUM_WARPS)


@torch.library.triton_op("medkern::triton_max_pool", mutates_args=())
def triton_max_pool(x: torch.Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
                    dilation: list[int], ceil_mode: bool) -> tuple[torch.Tensor, torch.Tensor]:
    op = "medkern::triton_max_pool"
    kernel_size, stride, padding, dilation = check_args(x, kernel_size, stride, padding, dilation, ceil_mode, op)
    if math.prod(kernel_size) > WINDOW_LIMIT:
        raise ValueError(f"{op}: the window must have at most {WINDOW_LIMIT} positions (its argmax is kept in a "
                         f"byte), got kernel_size {list(kernel_size)}; use torch's max_pool")
    x = x if x.is_contiguous() or _channels_last(x) else x.contiguous()
    y, argmax = empty_outputs(x, kernel_size, stride, padding, dilation, ceil_mode)
    if y.numel() > 0:
        runtime, constexprs = _geometry(x.shape[2:], y.shape[2:], kernel_size, stride, padding, dilation)
        _launch(max_pool_forward_kernel, (x, y, argmax), y.numel(), x.shape[1], runtime,
                dict(constexprs, CHANNELS_LAST=_channels_last(x), FP64=x.dtype == torch.float64), x.device)
    return y, argmax


@torch.library.triton_op("medkern::triton_max_pool_backward", mutates_args=())
def triton_max_pool_backward(grad: torch.Tensor, argmax: torch.Tensor, input_size: list[int], kernel_size: list[int],
                             stride: list[int], padding: list[int], dilation: list[int]) -> torch.Tensor:
    op = "medkern::triton_max_pool_backward"
    kernel_size, stride, padding, dilation = check_backward_args(grad, argmax, input_size, kernel_size, stride,
                                                                 padding, dilation, op)
    grad = grad if grad.stride() == argmax.stride() else torch.empty_like(argmax, dtype=grad.dtype).copy_(grad)
    dx = empty_input_grad(grad, argmax, input_size, kernel_size, stride, padding, dilation)
    if dx.numel() > 0:
        runtime, constexprs = _geometry(input_size[2:], argmax.shape[2:], kernel_size, stride, padding, dilation)
        constexprs.update(CHANNELS_LAST=_channels_last(argmax), FP64=grad.dtype == torch.float64)
        _launch(max_pool_backward_kernel, (grad, argmax, dx), dx.numel(), input_size[1], runtime, constexprs,
                grad.device)
    return dx


def forward_op():
    return torch.ops.medkern.triton_max_pool.default


register_autograd("medkern::triton_max_pool", "medkern::triton_max_pool_backward")


# The variants compiled ahead of time (medkern.triton.aot): ResNet's 3x3 stride-2 pool in every
# dtype and both layouts, and a 3-d 2x2x2 pool (float32), forward and backward.
def aot_variants():
    pointer = {torch.float32: "*fp32", torch.float64: "*fp64", torch.float16: "*fp16", torch.bfloat16: "*bf16"}
    ints = ("total", "C", "I0", "I1", "I2", "O0", "O1", "O2", "ST0", "ST1", "ST2", "P0", "P1", "P2", "DL0", "DL1",
            "DL2")
    pools = [((3, 3), (2, 2), dtype, layout) for dtype in pointer for layout in (False, True)]
    pools.append(((2, 2, 2), (2, 2, 2), torch.float32, False))
    for kernel_size, stride, dtype, channels_last in pools:
        ptr = pointer[dtype]
        base = dict(_window(kernel_size), CHANNELS_LAST=channels_last, FP64=dtype == torch.float64, BLOCK=BLOCK)
        tag = f"{'x'.join(map(str, kernel_size))},{ptr[1:]},channels_last={channels_last}"
        forward_sig = {"x_ptr": ptr, "y_ptr": ptr, "argmax_ptr": "*u8", **{k: "i64" for k in ints},
                       **{k: "constexpr" for k in base}}
        yield f"max_pool_forward_kernel[{tag}]", max_pool_forward_kernel, forward_sig, base
        backward_sig = {"g_ptr": ptr, "argmax_ptr": "*u8", "dx_ptr": ptr, **{k: "i64" for k in ints},
                        **{k: "constexpr" for k in base}}
        yield f"max_pool_backward_kernel[{tag}]", max_pool_backward_kernel, backward_sig, base
