"""modulate_weight in Triton: ops ``medkern::triton_modulate_weight`` and ``medkern::triton_modulate_weight_backward``.

Same schemas and semantics as the C++ ops (csrc/medkern.cpp) and the same autograd
(medkern.ops.modulate_weight.register_autograd). All tensors are taken contiguous, weight seen
as O rows of R = I * K elements. The kernels mirror csrc/cuda/modulate_weight.cu, with the math
of csrc/common/modulate_weight.h:
  rows_kernel          a program per row (n, o): sum of u^2 (and of g * u), d; the forward
                       writes the row, the backward stores d and dot for the two below.
  grad_weight_kernel   BLOCK elements (o, r) of weight each: gW = sum over n of du * s.
  grad_styles_kernel   BLOCK pairs (n, i) each: gs = sum over o, then k, of du * W.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake

from ..ops.modulate_weight import check_args, register_autograd
from .activations import exact, fits_float32, split
from .pixel_norm import div_rn, sqrt_rn

BLOCK = 256
NUM_WARPS = 4


@triton.jit
def _du(g, u, d_ptr, dot_ptr, row, mask, DEMODULATE: tl.constexpr):
    """d * g - d^3 * u * dot with d and dot of ``row`` (g without demodulation)."""
    if DEMODULATE:
        d = tl.load(d_ptr + row, mask=mask, other=1)
        dot = tl.load(dot_ptr + row, mask=mask, other=0)
        return d * g - d * d * d * u * dot
    else:
        return g


@triton.jit
def rows_kernel(g_ptr, w_ptr, s_ptr, out_ptr, d_ptr, dot_ptr, outs, ins, kernel, eps_hi, eps_lo,
                BACKWARD: tl.constexpr, DEMODULATE: tl.constexpr, FP64: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    n = row // outs
    o = row % outs
    r = ins * kernel
    offsets = tl.arange(0, BLOCK)
    acc_dtype = tl.float64 if FP64 else tl.float32
    sum_sq = tl.zeros([BLOCK], dtype=acc_dtype)
    dot = tl.zeros([BLOCK], dtype=acc_dtype)
    for start in range(0, r, BLOCK):
        j = start + offsets
        mask = j < r
        u = (tl.load(w_ptr + o * r + j, mask=mask, other=0).to(acc_dtype)
             * tl.load(s_ptr + n * ins + j // kernel, mask=mask, other=0).to(acc_dtype))
        sum_sq += u * u
        if BACKWARD:
            dot += tl.load(g_ptr + row * r + j, mask=mask, other=0).to(acc_dtype) * u
    one = tl.full([BLOCK], 1, acc_dtype)
    if DEMODULATE:
        d = div_rn(one, sqrt_rn(one * tl.sum(sum_sq, 0) + exact(one, eps_hi, eps_lo), FP64), FP64)
    else:
        d = one
    if BACKWARD:
        first = offsets == 0  # d and dot are the same in every lane: one stores them
        tl.store(d_ptr + row + offsets * 0, d, mask=first)
        tl.store(dot_ptr + row + offsets * 0, one * tl.sum(dot, 0), mask=first)
    else:
        for start in range(0, r, BLOCK):
            j = start + offsets
            mask = j < r
            u = (tl.load(w_ptr + o * r + j, mask=mask, other=0).to(acc_dtype)
                 * tl.load(s_ptr + n * ins + j // kernel, mask=mask, other=0).to(acc_dtype))
            tl.store(out_ptr + row * r + j, (u * d).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def grad_weight_kernel(g_ptr, w_ptr, s_ptr, d_ptr, dot_ptr, gw_ptr, samples, outs, ins, kernel,
                       DEMODULATE: tl.constexpr, FP64: tl.constexpr, BLOCK: tl.constexpr):
    r = ins * kernel
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = e < outs * r
    o = e // r
    j = e % r
    acc_dtype = tl.float64 if FP64 else tl.float32
    w = tl.load(w_ptr + e, mask=mask, other=0).to(acc_dtype)
    acc = tl.zeros([BLOCK], dtype=acc_dtype)
    for n in range(0, samples):
        s = tl.load(s_ptr + n * ins + j // kernel, mask=mask, other=0).to(acc_dtype)
        g = tl.load(g_ptr + (n * outs + o) * r + j, mask=mask, other=0).to(acc_dtype)
        acc += _du(g, w * s, d_ptr, dot_ptr, n * outs + o, mask, DEMODULATE) * s
    tl.store(gw_ptr + e, acc.to(gw_ptr.dtype.element_ty), mask=mask)


@triton.jit
def grad_styles_kernel(g_ptr, w_ptr, s_ptr, d_ptr, dot_ptr, gs_ptr, samples, outs, ins, kernel,
                       DEMODULATE: tl.constexpr, FP64: tl.constexpr, BLOCK: tl.constexpr):
    r = ins * kernel
    e = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = e < samples * ins
    n = e // ins
    i = e % ins
    acc_dtype = tl.float64 if FP64 else tl.float32
    s = tl.load(s_ptr + e, mask=mask, other=0).to(acc_dtype)
    acc = tl.zeros([BLOCK], dtype=acc_dtype)
    for o in range(0, outs):
        total = tl.zeros([BLOCK], dtype=acc_dtype)
        for k in range(0, kernel):
            j = i * kernel + k
            w = tl.load(w_ptr + o * r + j, mask=mask, other=0).to(acc_dtype)
            g = tl.load(g_ptr + (n * outs + o) * r + j, mask=mask, other=0).to(acc_dtype)
            total += _du(g, w * s, d_ptr, dot_ptr, n * outs + o, mask, DEMODULATE) * w
        acc += total
    tl.store(gs_ptr + e, acc.to(gs_ptr.dtype.element_ty), mask=mask)


def _sizes(weight, styles):
    """(N, O, I, K) of a call."""
    kernel = 1
    for size in weight.shape[2:]:
        kernel *= size
    return styles.shape[0], weight.shape[0], weight.shape[1], kernel


def _on_device(t):
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def _check(op, weight, styles, demodulate, eps):
    eps = check_args(op, weight, styles, demodulate, eps)
    if weight.dtype == torch.float64 and not fits_float32(eps):
        raise ValueError(f"{op}: the triton backend takes eps within float32's range for float64 tensors, "
                         f"got eps={eps}; use the cpu or cuda backend")
    return eps


@torch.library.triton_op("medkern::triton_modulate_weight", mutates_args=())
def triton_modulate_weight(weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, eps: float) -> torch.Tensor:
    eps = _check("medkern::triton_modulate_weight", weight, styles, demodulate, eps)
    out = weight.new_empty((styles.shape[0], *weight.shape))
    if out.numel() == 0 or (out.device.type == "cpu" and is_fake(out)):
        return out  # the interpreter runs eagerly on real memory; fake tensors need the outputs only
    n, o, i, k = _sizes(weight, styles)
    with _on_device(weight):
        torch.library.wrap_triton(rows_kernel)[(n * o,)](
            weight, weight.contiguous(), styles.contiguous(), out, out, out, o, i, k, *split(eps),
            BACKWARD=False, DEMODULATE=demodulate, FP64=weight.dtype == torch.float64, BLOCK=BLOCK,
            num_warps=NUM_WARPS,
        )
    return out


@torch.library.triton_op("medkern::triton_modulate_weight_backward", mutates_args=())
def triton_modulate_weight_backward(grad: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                                    eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    op = "medkern::triton_modulate_weight_backward"
    eps = _check(op, weight, styles, demodulate, eps)
    shape = (styles.shape[0], *weight.shape)
    if grad.shape != shape or grad.dtype != weight.dtype or grad.device != weight.device:
        raise ValueError(f"{op}: grad must have shape (N, *weight.shape) = {shape}, weight's dtype and device, "
                         f"got {tuple(grad.shape)} {grad.dtype} {grad.device}")
    grad_weight, grad_styles = weight.new_empty(weight.shape), styles.new_empty(styles.shape)
    if grad.device.type == "cpu" and is_fake(grad_weight):
        return grad_weight, grad_styles
    if grad.numel() == 0:
        return grad_weight.zero_(), grad_styles.zero_()
    n, o, i, k = _sizes(weight, styles)
    fp64 = weight.dtype == torch.float64
    stats = torch.ones(2, n * o, dtype=torch.float64 if fp64 else torch.float32, device=weight.device)
    g, w, s = grad.contiguous(), weight.contiguous(), styles.contiguous()
    options = dict(DEMODULATE=demodulate, FP64=fp64, BLOCK=BLOCK, num_warps=NUM_WARPS)
    with _on_device(weight):
        if demodulate:
            torch.library.wrap_triton(rows_kernel)[(n * o,)](
                g, w, s, g, stats[0], stats[1], o, i, k, *split(eps), BACKWARD=True, **options)
        torch.library.wrap_triton(grad_weight_kernel)[(triton.cdiv(o * i * k, BLOCK),)](
            g, w, s, stats[0], stats[1], grad_weight, n, o, i, k, **options)
        torch.library.wrap_triton(grad_styles_kernel)[(triton.cdiv(n * i, BLOCK),)](
            g, w, s, stats[0], stats[1], grad_styles, n, o, i, k, **options)
    return grad_weight, grad_styles


register_autograd("medkern::triton_modulate_weight", "medkern::triton_modulate_weight_backward")


# The variants compiled ahead of time (medkern.triton.aot): every kernel in every dtype, with
# and without demodulation.
def aot_variants():
    pointer = {torch.float32: "*fp32", torch.float64: "*fp64", torch.float16: "*fp16", torch.bfloat16: "*bf16"}
    for dtype, ptr in pointer.items():
        fp64 = dtype == torch.float64
        stat = "*fp64" if fp64 else "*fp32"
        common = {"DEMODULATE": "constexpr", "FP64": "constexpr", "BLOCK": "constexpr"}
        for demodulate in (False, True):
            constexprs = {"DEMODULATE": demodulate, "FP64": fp64, "BLOCK": BLOCK}
            for backward in (False, True) if demodulate else (False,):
                signature = {"g_ptr": ptr, "w_ptr": ptr, "s_ptr": ptr, "out_ptr": ptr, "d_ptr": stat, "dot_ptr": stat,
                             "outs": "i64", "ins": "i64", "kernel": "i64", "eps_hi": "fp32", "eps_lo": "fp32",
                             "BACKWARD": "constexpr", **common}
                yield (f"modulate_weight_rows_kernel[{ptr[1:]},backward={backward},demodulate={demodulate}]",
                       rows_kernel, signature, {**constexprs, "BACKWARD": backward})
            for name, kernel, out in (("grad_weight", grad_weight_kernel, "gw_ptr"),
                                      ("grad_styles", grad_styles_kernel, "gs_ptr")):
                signature = {"g_ptr": ptr, "w_ptr": ptr, "s_ptr": ptr, "d_ptr": stat, "dot_ptr": stat, out: ptr,
                             "samples": "i64", "outs": "i64", "ins": "i64", "kernel": "i64", **common}
                yield f"modulate_weight_{name}_kernel[{ptr[1:]},demodulate={demodulate}]", kernel, signature, constexprs
