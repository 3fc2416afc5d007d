"""upfirdn2d in Triton: op ``medkern::triton_upfirdn2d``.

Same schema and semantics as the C++ op (csrc/medkern.cpp) and the same autograd (the op is its
own gradient: medkern.ops.upfirdn2d.register_autograd). The math is that of
csrc/common/upfirdn2d.h: each output is the polyphase sum over the taps k0, k0 + up, ... that
land on input samples (``_tap_run``), rows of taps outer, columns inner, as ``tap_sum`` sums.
A program computes BLOCK outputs in the output's memory order (NCHW, or channels_last with the
channels fastest), reading x through its strides with zeros outside it.
"""

from __future__ import annotations

import contextlib
import inspect

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake

from ..ops.upfirdn2d import check_args, out_memory_format, out_shape, register_autograd
from ..reference.upfirdn2d import correlation_taps

BLOCK = 256
NUM_WARPS = 4


@triton.jit
def _tap_run(o, down, pad0, up, taps):
    """(k0, i0, count) of output sample(s) o along one axis: tap_run of csrc/common/upfirdn2d.h."""
    j = o * down - pad0
    k0 = ((-j) % up + up) % up  # in [0, up) whichever sign convention % has
    count = tl.where(k0 < taps, (taps - k0 + up - 1) // up, 0)
    return k0, (j + k0) // up, count  # j + k0 is a multiple of up: exact


@triton.jit
def upfirdn2d_kernel(
    x_ptr, taps_ptr, out_ptr,
    total, channels, in_h, in_w, out_h, out_w,
    up_x, up_y, down_x, down_y, pad_x0, pad_y0, taps_h, taps_w,
    sx_n, sx_c, sx_h, sx_w, so_n, so_c, so_h, so_w,
    CHANNELS_LAST: tl.constexpr, FP64: tl.constexpr, BLOCK: tl.constexpr,
):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < total
    if CHANNELS_LAST:
        c = i % channels
        rest = i // channels
        ox = rest % out_w
        rest = rest // out_w
        oy = rest % out_h
        n = rest // out_h
    else:
        ox = i % out_w
        rest = i // out_w
        oy = rest % out_h
        rest = rest // out_h
        c = rest % channels
        n = rest // channels
    ky0, iy0, count_y = _tap_run(oy, down_y, pad_y0, up_y, taps_h)
    kx0, ix0, count_x = _tap_run(ox, down_x, pad_x0, up_x, taps_w)
    plane = x_ptr + n * sx_n + c * sx_c
    acc = tl.zeros((BLOCK,), tl.float64 if FP64 else tl.float32)
    for a in range(0, tl.cdiv(taps_h, up_y)):  # the most taps any output row has
        iy = iy0 + a
        row_ok = mask & (a < count_y)
        for b in range(0, tl.cdiv(taps_w, up_x)):
            ix = ix0 + b
            tap_ok = row_ok & (b < count_x)
            inside = tap_ok & (iy >= 0) & (iy < in_h) & (ix >= 0) & (ix < in_w)
            v = tl.load(plane + iy * sx_h + ix * sx_w, mask=inside, other=0).to(acc.dtype)
            t = tl.load(taps_ptr + (ky0 + a * up_y) * taps_w + kx0 + b * up_x, mask=tap_ok, other=0)
            acc += t * v
    tl.store(out_ptr + n * so_n + c * so_c + oy * so_h + ox * so_w, acc.to(out_ptr.dtype.element_ty), mask=mask)


def _opmath(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def correlation_taps_2d(f: torch.Tensor, flip_filter: bool, gain: float, dtype: torch.dtype) -> torch.Tensor:
    """The kernel's taps: upfirdn2d_taps of csrc/common/upfirdn2d_op.h."""
    taps = correlation_taps(f.to(_opmath(dtype)), flip_filter)
    if taps.dim() == 1:
        taps = torch.outer(taps, taps)
    return (taps * gain).contiguous()


def _launch(x, taps, out, up, down, padding):
    if out.device.type == "cpu" and is_fake(out):
        return  # the interpreter runs eagerly; shape propagation needs only the output
    n, c, oh, ow = out.shape
    on_device = torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
    with on_device:
        torch.library.wrap_triton(upfirdn2d_kernel)[(triton.cdiv(out.numel(), BLOCK),)](
            x, taps, out,
            out.numel(), c, x.shape[2], x.shape[3], oh, ow,
            up[0], up[1], down[0], down[1], padding[0], padding[2], taps.shape[0], taps.shape[1],
            *x.stride(), *out.stride(),
            CHANNELS_LAST=out_memory_format(x) == torch.channels_last,
            FP64=x.dtype == torch.float64,
            BLOCK=BLOCK,
            num_warps=NUM_WARPS,
        )


@torch.library.triton_op("medkern::triton_upfirdn2d", mutates_args=())
def triton_upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: list[int],
    down: list[int],
    padding: list[int],
    flip_filter: bool,
    gain: float,
) -> torch.Tensor:
    f, up, down, padding, flip_filter, gain = check_args(
        "medkern::triton_upfirdn2d", x, f, up, down, padding, flip_filter, gain
    )
    out = x.new_empty(out_shape(x, f, up, down, padding)).contiguous(memory_format=out_memory_format(x))
    if out.numel() > 0:
        _launch(x, correlation_taps_2d(f, flip_filter, gain, x.dtype), out, up, down, padding)
    return out


def forward_op():
    return torch.ops.medkern.triton_upfirdn2d.default


register_autograd("medkern::triton_upfirdn2d")


_POINTER = {torch.float32: "*fp32", torch.float64: "*fp64", torch.float16: "*fp16", torch.bfloat16: "*bf16"}


def aot_variants():
    """Every dtype in both output layouts."""
    params = inspect.signature(upfirdn2d_kernel.fn).parameters
    for dtype, pointer in _POINTER.items():
        for channels_last in (False, True):
            signature = {name: ("constexpr" if "constexpr" in str(p.annotation) else "i64") for name, p in params.items()}
            signature.update(x_ptr=pointer, out_ptr=pointer, taps_ptr=_POINTER[_opmath(dtype)])
            constexprs = {"CHANNELS_LAST": channels_last, "FP64": dtype == torch.float64, "BLOCK": BLOCK}
            layout = "channels_last" if channels_last else "nchw"
            yield f"upfirdn2d_kernel[{pointer[1:]},{layout}]", upfirdn2d_kernel, signature, constexprs
