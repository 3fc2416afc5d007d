"""conv_act in Triton: op ``medkern::triton_conv_act``, a convolution with its epilogue fused.

    y = act(conv(x, weight) + bias + residual, alpha)

One kernel, an implicit GEMM: rows are the output positions (M = N * out_spatial), columns the
output channels of one group (C_out / groups), the reduction runs over the group's input
channels at every kernel tap (K = C_in / groups * prod(kernel)); each group is its own slice of
the program grid. Input patches are gathered straight from x (no im2col buffer), and bias,
residual and the activation (medkern/triton/activations.py) are applied to the accumulator
before the single store of y. Every tensor is addressed through its strides, so contiguous and
channels-last inputs (and any other strides) run without copies. 1d convolutions run as 2d
ones with H = 1; 2d and 3d are two specializations (constexpr DIM3).

Accumulation is float32 for float16, bfloat16 and float32 inputs (float32 with IEEE products,
no TF32, so it matches the reference) and float64 for float64 inputs.

Backward (``register_autograd`` below): dz = grad * act'(z), with the bias gradient summed in the
same pass, by the Triton bias_act backward op; then the input and weight gradients by
``aten.convolution_backward``, and residual's gradient is dz. Where y alone determines act'(z)
exactly as torch computes it (linear, relu, lrelu with alpha >= 0) the backward reads y; for the
other activations it recomputes z (the same kernel with act=linear), so the forward never
writes z: no activation memory beyond what the convolution keeps anyway (x, weight), at the
cost of a second convolution in backward for those activations.

Transposed convolutions are not here: medkern.ops.conv_transpose_act runs the library's on
every backend.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import Optional

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake

from .. import activations, backend
from .._args import check_float_tensor
from .activations import activation, exact, fits_float32, split

OP = "medkern::triton_conv_act"

# Tile configs (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) autotuned on a GPU, keyed on
# the GEMM sizes; the interpreter runs one small fixed config (autotuning there is very slow).
GPU_CONFIGS = [
    (128, 128, 32, 8, 3),
    (128, 64, 32, 4, 4),
    (64, 128, 32, 4, 4),
    (64, 64, 32, 4, 4),
    (128, 32, 32, 4, 4),
    (64, 32, 32, 4, 4),
    (64, 16, 16, 2, 4),  # few output channels per group (depthwise, stems)
    (32, 32, 16, 2, 3),
]
INTERPRETER_CONFIG = dict(BLOCK_M=32, BLOCK_N=16, BLOCK_K=16)
AOT_CONFIG = dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32)  # compiled ahead of time: small, so the check stays quick


@triton.jit
def conv_act_kernel(
    x_ptr, w_ptr, b_ptr, r_ptr, y_ptr,
    M, Cg, Og, D, H, W, OD, OH, OW, KD, KH, KW,
    stride_d, stride_h, stride_w, pad_d, pad_h, pad_w, dil_d, dil_h, dil_w,
    sx_n, sx_c, sx_d, sx_h, sx_w,
    sw_o, sw_c, sw_d, sw_h, sw_w,
    sr_n, sr_c, sr_d, sr_h, sr_w,
    sy_n, sy_c, sy_d, sy_h, sy_w,
    alpha_hi, alpha_lo,
    ACT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    DIM3: tl.constexpr,
    FP64: tl.constexpr,
    DOT_FP32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One [BLOCK_M output positions, BLOCK_N output channels] tile of one group.

    Sizes: M = N * OD * OH * OW; Cg, Og input and output channels per group; D, H, W the input's
    spatial sizes; KD, KH, KW the kernel's (D = OD = KD = 1 when not DIM3). s*_ are strides of
    x, weight, residual and y, in (n|o, c, d, h, w) order. DOT_FP32 multiplies bfloat16 tiles as
    float32 (same products, exact in float32): Triton's interpreter cannot tl.dot bfloat16.
    """
    pid = tl.program_id(0)
    num_n = tl.cdiv(Og, BLOCK_N)
    num_m = tl.cdiv(M, BLOCK_M)
    # output-channel tiles fastest: programs running together share their x rows (in L2)
    pid_n = pid % num_n
    rest = pid // num_n
    pid_m = rest % num_m
    group = rest // num_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    m = offs_m.to(tl.int64)  # 64-bit offsets throughout: large volumes exceed 2**31 elements
    ow = m % OW
    t = m // OW
    oh = t % OH
    t = t // OH
    if DIM3:
        od = t % OD
        n = t // OD
    else:
        od = tl.zeros_like(t)
        n = t
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < Og
    oc = group.to(tl.int64) * Og + offs_n

    x_rows = x_ptr + n * sx_n + group.to(tl.int64) * Cg * sx_c  # [BLOCK_M] pointers
    w_cols = w_ptr + oc * sw_o  # [BLOCK_N] pointers
    ih0 = oh * stride_h - pad_h
    iw0 = ow * stride_w - pad_w
    id0 = od * stride_d - pad_d

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64 if FP64 else tl.float32)
    ck = tl.arange(0, BLOCK_K)
    blocks_c = tl.cdiv(Cg, BLOCK_K)
    # one flat loop over (kernel tap, channel block), so it pipelines across taps too
    for it in range(0, KD * KH * KW * blocks_c):
        tap = it // blocks_c
        c = (it % blocks_c) * BLOCK_K + ck
        mask_c = c < Cg
        c64 = c.to(tl.int64)
        kw = tap % KW
        kh = (tap // KW) % KH
        ih = ih0 + kh * dil_h
        iw = iw0 + kw * dil_w
        inside = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_off = ih * sx_h + iw * sx_w
        w_off = kh.to(tl.int64) * sw_h + kw.to(tl.int64) * sw_w
        if DIM3:
            kd = tap // (KW * KH)
            i_d = id0 + kd * dil_d
            inside = inside & (i_d >= 0) & (i_d < D)
            x_off += i_d * sx_d
            w_off += kd.to(tl.int64) * sw_d
        a = tl.load((x_rows + x_off)[:, None] + c64[None, :] * sx_c, mask=inside[:, None] & mask_c[None, :], other=0.0)
        b = tl.load((w_cols + w_off)[None, :] + c64[:, None] * sw_c, mask=mask_c[:, None] & mask_n[None, :], other=0.0)
        if DOT_FP32:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision="ieee")

    # the epilogue, on the accumulator: + bias + residual, activation, one store
    mask = mask_m[:, None] & mask_n[None, :]
    z = acc
    if HAS_BIAS:
        z += tl.load(b_ptr + oc, mask=mask_n, other=0.0).to(z.dtype)[None, :]
    if HAS_RESIDUAL:
        r_rows = n * sr_n + oh * sr_h + ow * sr_w
        if DIM3:
            r_rows += od * sr_d
        z += tl.load(r_ptr + r_rows[:, None] + oc[None, :] * sr_c, mask=mask, other=0.0).to(z.dtype)
    one = tl.full(z.shape, 1, z.dtype)
    out = activation(z, exact(one, alpha_hi, alpha_lo), ACT, 0)
    y_rows = n * sy_n + oh * sy_h + ow * sy_w
    if DIM3:
        y_rows += od * sy_d
    tl.store(y_ptr + y_rows[:, None] + oc[None, :] * sy_c, out.to(y_ptr.dtype.element_ty), mask=mask)


conv_act_kernel_autotuned = triton.autotune(
    configs=[
        triton.Config(dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk), num_warps=warps, num_stages=stages)
        for bm, bn, bk, warps, stages in GPU_CONFIGS
    ],
    key=["M", "Og", "Cg", "KD", "KH", "KW"],
)(conv_act_kernel)




def _ints(op, name, value, rank, minimum) -> list[int]:
    values = list(value)
    if len(values) != rank or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values):
        raise ValueError(f"{op}: {name} must be {rank} ints >= {minimum} (one per spatial dim), got {value!r}")
    return values


def _check(x, weight, bias, stride, padding, dilation, groups, act, alpha, residual):
    """Checks the arguments; returns (spatial rank, output shape, stride, padding, dilation)."""
    op = OP
    check_float_tensor(op, "x", x)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{op}: weight must be a torch.Tensor, got {type(weight).__name__}")
    rank = weight.dim() - 2
    if rank not in (1, 2, 3) or x.dim() != rank + 2:
        raise ValueError(f"{op}: x and weight must both be 3-d, 4-d or 5-d (a batched 1d, 2d or 3d convolution), "
                         f"got shapes {tuple(x.shape)} and {tuple(weight.shape)}")
    for name, t in (("weight", weight), ("bias", bias), ("residual", residual)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor or None, got {type(t).__name__}")
        if t.dtype != x.dtype or t.device != x.device:
            raise TypeError(f"{op}: {name} must have x's dtype and device ({x.dtype}, {x.device}), "
                            f"got {t.dtype} on {t.device}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    c_in, c_out = x.shape[1], weight.shape[0]
    if c_in % groups or c_out % groups or weight.shape[1] * groups != c_in:
        raise ValueError(f"{op}: x's {c_in} channels and weight's {c_out} output channels must split into "
                         f"{groups} groups of weight.shape[1] = {weight.shape[1]} input channels each")
    stride = _ints(op, "stride", stride, rank, 1)
    padding = _ints(op, "padding", padding, rank, 0)
    dilation = _ints(op, "dilation", dilation, rank, 1)
    spatial = [(i + 2 * p - d * (k - 1) - 1) // s + 1
               for i, k, s, p, d in zip(x.shape[2:], weight.shape[2:], stride, padding, dilation)]
    if any(o < 1 for o in spatial):
        raise ValueError(f"{op}: the kernel {tuple(weight.shape[2:])} (dilation {dilation}) does not fit the padded "
                         f"input {tuple(x.shape[2:])} (padding {padding}): output size {spatial}")
    shape = (x.shape[0], c_out, *spatial)
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"{op}: bias must be 1-d with weight.shape[0] = {c_out} elements, "
                         f"got shape {tuple(bias.shape)}")
    if residual is not None and tuple(residual.shape) != shape:
        raise ValueError(f"{op}: residual must have the output's shape {shape}, got {tuple(residual.shape)}")
    activations.get(act, op)
    if x.dtype == torch.float64 and not fits_float32(alpha):
        # Triton passes float scalars as float32 (see medkern/triton/activations.py)
        raise ValueError(f"{op}: the triton backend takes alpha within float32's range for float64 tensors, "
                         f"got alpha={alpha}; use the cpu or cuda backend")
    return rank, shape, stride, padding, dilation


def _channels_last(t: torch.Tensor) -> bool:
    if t.dim() not in (3, 4, 5) or t.is_contiguous():
        return False
    if t.dim() == 3:
        return t.transpose(1, 2).is_contiguous()
    fmt = torch.channels_last if t.dim() == 4 else torch.channels_last_3d
    return t.is_contiguous(memory_format=fmt)


def _empty_output(x, weight, shape):
    """y: channels-last when x or weight is (as the library convolutions choose), else contiguous."""
    if not (_channels_last(x) or _channels_last(weight)):
        return x.new_empty(shape)
    if len(shape) == 3:
        return x.new_empty((shape[0], shape[2], shape[1])).transpose(1, 2)
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)


def _as_3d(t: torch.Tensor, rank: int) -> tuple[list[int], list[int]]:
    """(sizes, strides) of a (N|O, C, *spatial) tensor as 5 dims (n, c, d, h, w): missing dims of size 1."""
    sizes, strides = list(t.shape), list(t.stride())
    missing = 3 - rank
    return sizes[:2] + [1] * missing + sizes[2:], strides[:2] + [0] * missing + strides[2:]


def _launch(x, weight, bias, residual, y, rank, stride, padding, dilation, groups, act, alpha):
    if y.device.type == "cpu" and is_fake(y):
        # The interpreter runs kernels eagerly on real memory; fake tensors (shape propagation)
        # only need the output allocated. medkern.ops refuses torch.compile in this mode.
        return
    pad3 = lambda values, fill: [fill] * (3 - rank) + list(values)  # noqa: E731
    (_, c_in, d, h, w), x_strides = _as_3d(x, rank)
    (_, _, kd, kh, kw), w_strides = _as_3d(weight, rank)
    (n, c_out, od, oh, ow), y_strides = _as_3d(y, rank)
    r_strides = _as_3d(residual, rank)[1] if residual is not None else [0] * 5
    m, cg, og = n * od * oh * ow, c_in // groups, c_out // groups
    dummy = y  # pointer arguments a variant does not read
    args = [
        x, weight, bias if bias is not None else dummy, residual if residual is not None else dummy, y,
        m, cg, og, d, h, w, od, oh, ow, kd, kh, kw,
        *pad3(stride, 1), *pad3(padding, 0), *pad3(dilation, 1),
        *x_strides, *w_strides, *r_strides, *y_strides,
        *split(alpha),
    ]
    flags = dict(ACT=activations.get(act).id, HAS_BIAS=bias is not None, HAS_RESIDUAL=residual is not None,
                 DIM3=rank == 3, FP64=x.dtype == torch.float64,
                 DOT_FP32=x.dtype == torch.bfloat16 and backend.triton_interpreted())
    on_device = torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
    with on_device:  # Triton launches on the current device
        if backend.triton_interpreted():
            cfg = INTERPRETER_CONFIG
            grid = (triton.cdiv(m, cfg["BLOCK_M"]) * triton.cdiv(og, cfg["BLOCK_N"]) * groups,)
            torch.library.wrap_triton(conv_act_kernel)[grid](*args, **flags, **cfg)
        else:
            def grid(meta):
                return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(og, meta["BLOCK_N"]) * groups,)

            torch.library.wrap_triton(conv_act_kernel_autotuned)[grid](*args, **flags)


@torch.library.triton_op(OP, mutates_args=())
def triton_conv_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    act: str,
    alpha: float,
    residual: Optional[torch.Tensor],
) -> torch.Tensor:
    """act(conv(x, weight) + bias + residual): batched x, explicit symmetric padding per spatial dim.

    The output is channels-last where x or weight is, else contiguous (its shape follows from
    the arguments alone: the fake kernel is this function on fake tensors).
    """
    rank, shape, stride, padding, dilation = _check(x, weight, bias, stride, padding, dilation, groups, act, alpha,
                                                    residual)
    y = _empty_output(x, weight, shape)
    if y.numel() > 0:
        # 1d runs as 2d with H = 1 (views: no copies)
        if rank == 1:
            x, weight, y2 = x.unsqueeze(2), weight.unsqueeze(2), y.unsqueeze(2)
            residual = residual.unsqueeze(2) if residual is not None else None
            stride, padding, dilation = [1] + stride, [0] + padding, [1] + dilation
        else:
            y2 = y
        _launch(x, weight, bias, residual, y2, max(rank, 2), stride, padding, dilation, groups, act, alpha)
    return y


def forward_op():
    return torch.ops.medkern.triton_conv_act.default


# --- autograd ------------------------------------------------------------------------------------


def reads_output(act: str, alpha: float) -> bool:
    """Whether act'(z) is a function of y = act(z) that the bias_act backward computes exactly
    when given y in place of z (so backward keeps y instead of recomputing z)."""
    return act in ("linear", "relu") or (act == "lrelu" and alpha >= 0)


def _setup_context(ctx, inputs, output):
    x, weight, bias, stride, padding, dilation, groups, act, alpha, residual = inputs
    ctx.params = (stride, padding, dilation, groups, act, alpha)
    ctx.has_bias = bias is not None
    ctx.reads_output = reads_output(act, alpha)
    if ctx.reads_output:
        ctx.save_for_backward(x, weight, output)
    else:
        ctx.save_for_backward(x, weight, bias, residual)


def _backward(ctx, grad):
    from .bias_act import backward_op as bias_act_backward_op

    stride, padding, dilation, groups, act, alpha = ctx.params
    if ctx.reads_output:
        x, weight, at = ctx.saved_tensors
    else:
        x, weight, bias, residual = ctx.saved_tensors
        at = forward_op()(x, weight, bias, stride, padding, dilation, groups, "linear", 0.0, residual)  # z
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    need_b = need_b and ctx.has_bias
    need_r = ctx.needs_input_grad[9]
    # dz = grad * act'(z), and the bias gradient (dz summed over all dims but 1), in one pass
    dz, db = bias_act_backward_op()(grad, at, None, 1, act, alpha, 1.0, None, 1, need_b)
    gx = gw = None
    if need_x or need_w:
        rank = weight.dim() - 2
        gx, gw, _ = torch.ops.aten.convolution_backward(
            dz, x, weight, None, stride, padding, dilation, False, [0] * rank, groups, [need_x, need_w, False])
    return gx, gw, (db if need_b else None), None, None, None, None, None, None, (dz if need_r else None)


torch.library.register_autograd(OP, _backward, setup_context=_setup_context)


# --- ahead-of-time compilation (medkern.triton.aot) ------------------------------------------------


_POINTER = {torch.float32: "*fp32", torch.float64: "*fp64", torch.float16: "*fp16", torch.bfloat16: "*bf16"}
_CONSTEXPRS = ("ACT", "HAS_BIAS", "HAS_RESIDUAL", "DIM3", "FP64", "DOT_FP32", "BLOCK_M", "BLOCK_N", "BLOCK_K")
AOT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def aot_variants():
    """Every activation x dtype x (2d, 3d), with bias and residual, in the representative config
    AOT_CONFIG; and float32 2d relu with neither (the flags' other branches)."""
    combos = [(act, dtype, dim3, True, True) for act, dtype, dim3 in
              itertools.product(activations.NAMES, AOT_DTYPES, (False, True))]
    combos.append(("relu", torch.float32, False, False, False))
    for act, dtype, dim3, has_bias, has_residual in combos:
        ptr = _POINTER[dtype]
        signature = {}
        for name in conv_act_kernel.arg_names:
            if name in _CONSTEXPRS:
                signature[name] = "constexpr"
            elif name.endswith("_ptr"):
                signature[name] = ptr
            elif name.startswith("alpha"):
                signature[name] = "fp32"
            elif name.startswith("s") and name[1:2] in "xwry" and name[2:3] == "_":  # tensor strides
                signature[name] = "i64"
            else:
                signature[name] = "i32"
        constexprs = dict(ACT=activations.get(act).id, HAS_BIAS=has_bias, HAS_RESIDUAL=has_residual, DIM3=dim3,
                          FP64=dtype == torch.float64, DOT_FP32=False, **AOT_CONFIG)
        name = (f"conv_act_kernel[{act},{ptr[1:]},{'3d' if dim3 else '2d'},bias={has_bias},"
                f"residual={has_residual}]")
        yield name, conv_act_kernel, signature, constexprs


__all__ = ["triton_conv_act", "forward_op", "aot_variants"]
