"""medkern.ops.upfirdn2d: upsample, pad, FIR filter and downsample 2-D images in one pass.

The definition is medkern/reference/upfirdn2d.py (StyleGAN's resampling primitive). The
kernels (C++ ``medkern::upfirdn2d`` on CPU and CUDA, Triton ``medkern::triton_upfirdn2d``)
compute each output as a polyphase sum over only the taps that land on input samples, never
materializing the zero-inserted or padded image.

The op is linear in x, and its gradient is upfirdn2d again: the flipped filter slides over the
gradient with up and down swapped and the padding mirrored (``_backward_geometry``). So the
backward runs the same fused kernel, and so do second- and higher-order gradients (R1 and
gradient penalties through a discriminator). Gradients w.r.t. the filter ``f`` (a constant in
GANs) run through the reference when f requires them.

Helpers with StyleGAN's alignment: ``upsample2d``, ``downsample2d`` and ``filter2d`` (blur), and
``fir_filter`` to build a normalized filter from its taps.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch

from .. import _extension, backend
from .._args import check_float_tensor
from ..reference.upfirdn2d import down_alignment, up_alignment
from ..reference.upfirdn2d import upfirdn2d as reference_upfirdn2d

OP = "medkern.ops.upfirdn2d"

IntPair = Union[int, Sequence[int]]


def _int(op: str, value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{op}: {name} must be an int, got {value!r}")
    return value


def factors(op: str, value: IntPair, name: str) -> tuple[int, int]:
    """An int or an (x, y) pair of ints >= 1, as (x, y)."""
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{op}: {name} must be an int or an (x, y) pair, got {value!r}")
    pair = tuple(_int(op, v, name) for v in pair)
    if min(pair) < 1:
        raise ValueError(f"{op}: {name} must be >= 1, got {value!r}")
    return pair


def paddings(op: str, value) -> tuple[int, int, int, int]:
    """An int, an (x, y) pair or (x0, x1, y0, y1), as (x0, x1, y0, y1); negative crops."""
    items = (value,) if not isinstance(value, (tuple, list)) else tuple(value)
    items = tuple(_int(op, v, "padding") for v in items)
    if len(items) == 1:
        return items * 4
    if len(items) == 2:
        return items[0], items[0], items[1], items[1]
    if len(items) == 4:
        return items
    raise ValueError(f"{op}: padding must be an int, (x, y) or (x0, x1, y0, y1), got {value!r}")


def filter_size(f: torch.Tensor) -> tuple[int, int]:
    """(width, height) of a 1-d (separable) or 2-d filter."""
    return f.shape[-1], f.shape[0]


def check_filter(op: str, f, x: torch.Tensor, name: str = "f", x_name: str = "x") -> torch.Tensor:
    """f (the argument ``name``) as a filter tensor on the device of x (``x_name``): None means the single tap 1."""
    if f is None:
        return torch.ones(1, dtype=torch.float32, device=x.device)
    if not isinstance(f, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor or None, got {type(f).__name__}")
    check_float_tensor(op, name, f)
    if f.dim() not in (1, 2) or f.numel() == 0:
        raise ValueError(f"{op}: {name} must be a non-empty 1-d (separable) or 2-d filter, got shape {tuple(f.shape)}")
    if f.device != x.device:
        raise ValueError(f"{op}: {name} must be on {x.device} (the device of {x_name}), got {f.device}")
    return f


def out_length(size: int, up: int, down: int, pad0: int, pad1: int, taps: int) -> int:
    """Output samples along one axis (0 if the padded, upsampled input is shorter than the filter)."""
    span = size * up + pad0 + pad1 - taps
    return span // down + 1 if span >= 0 else 0


def check_args(op, x, f, up, down, padding, flip_filter, gain):
    """Checks every argument; returns (f, up, down, padding, flip_filter, gain) resolved."""
    check_float_tensor(op, "x", x)
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be 4-d (N, C, H, W), got shape {tuple(x.shape)}")
    f = check_filter(op, f, x)
    up, down, padding = factors(op, up, "up"), factors(op, down, "down"), paddings(op, padding)
    if not isinstance(flip_filter, bool):
        raise TypeError(f"{op}: flip_filter must be a bool, got {flip_filter!r}")
    if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain):
        raise TypeError(f"{op}: gain must be a finite real number, got {gain!r}")
    fw, fh = filter_size(f)
    width = out_length(x.shape[3], up[0], down[0], padding[0], padding[1], fw)
    height = out_length(x.shape[2], up[1], down[1], padding[2], padding[3], fh)
    if width < 1 or height < 1:
        raise ValueError(
            f"{op}: the output would be empty: W * up_x + pad_x0 + pad_x1 = {x.shape[3] * up[0] + padding[0] + padding[1]} "
            f"and H * up_y + pad_y0 + pad_y1 = {x.shape[2] * up[1] + padding[2] + padding[3]} must be at least the "
            f"filter's {fw} x {fh} (w x h) taps"
        )
    return f, up, down, padding, flip_filter, float(gain)


def out_memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last in, channels_last out; anything else gives a contiguous output (as the kernels)."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def out_shape(x: torch.Tensor, f: torch.Tensor, up, down, padding) -> tuple[int, int, int, int]:
    fw, fh = filter_size(f)
    width = out_length(x.shape[3], up[0], down[0], padding[0], padding[1], fw)
    height = out_length(x.shape[2], up[1], down[1], padding[2], padding[3], fh)
    return x.shape[0], x.shape[1], height, width


def upfirdn2d(
    x: torch.Tensor,
    f: Optional[torch.Tensor] = None,
    up: IntPair = 1,
    down: IntPair = 1,
    padding: Union[int, Sequence[int]] = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR filter and downsample x (N, C, H, W) in one pass.

    Args:
        x: float32/float64/float16/bfloat16, contiguous or channels_last (any strides work).
        f: 1-d taps (separable: the same along both axes) or 2-d taps (H, W); None is the
            identity. Any float dtype; applied in x's op-math type (float32 for half types).
        up, down: int or (x, y) factors >= 1.
        padding: int, (x, y) or (x0, x1, y0, y1) samples added to the upsampled image before
            filtering; negative values crop.
        flip_filter: False convolves with f (StyleGAN's default); True correlates.
        gain: scale of the output.

    Returns (N, C, (H * up_y + y0 + y1 - f_h) // down_y + 1, (W * up_x + x0 + x1 - f_w) // down_x + 1),
    channels_last if x is.
    """
    f, up, down, padding, flip_filter, gain = check_args(OP, x, f, up, down, padding, flip_filter, gain)
    chosen = backend.select("upfirdn2d", x.device)
    if chosen == "reference" or (f.requires_grad and torch.is_grad_enabled()):
        return reference_upfirdn2d(x, f, up, down, padding, flip_filter, gain)
    backend.check_traceable(OP, chosen, x.device)
    return kernel_op(chosen)(x, f, list(up), list(down), list(padding), flip_filter, gain)


def kernel_op(chosen: str):
    if chosen == "triton":
        from ..triton import upfirdn2d as triton_upfirdn2d

        return triton_upfirdn2d.forward_op()
    return torch.ops.medkern.upfirdn2d.default


def _backward_geometry(x_shape, f, up, down, padding, out_hw):
    """(up, down, padding) of the upfirdn2d that computes the gradient w.r.t. x: the flipped filter
    over the gradient, up and down swapped, the padding mirrored so the output has x's size."""
    fw, fh = filter_size(f)
    (ux, uy), (dx, dy) = up, down
    x0, _, y0, _ = padding
    (h, w), (oh, ow) = x_shape[2:], out_hw
    grad_padding = [fw - 1 - x0, w * ux - ow * dx + x0 - ux + 1, fh - 1 - y0, h * uy - oh * dy + y0 - uy + 1]
    return [dx, dy], [ux, uy], grad_padding


def register_autograd(name: str) -> None:
    """Makes op ``name`` ("medkern::...", upfirdn2d's schema) differentiable through itself."""
    op = getattr(torch.ops.medkern, name.split("::")[1]).default

    def setup_context(ctx, inputs, output):
        x, f, up, down, padding, flip_filter, gain = inputs
        ctx.save_for_backward(f)
        ctx.x_shape, ctx.out_hw = tuple(x.shape), tuple(output.shape[2:])
        ctx.args = up, down, padding, flip_filter, gain

    def backward(ctx, grad):
        (f,) = ctx.saved_tensors
        up, down, padding, flip_filter, gain = ctx.args
        nones = (None,) * 6
        if not ctx.needs_input_grad[0]:
            return (None,) + nones
        if ctx.x_shape[2] == 0 or ctx.x_shape[3] == 0:  # no input samples: nothing to filter back
            return (grad.new_zeros(ctx.x_shape),) + nones
        grad_up, grad_down, grad_padding = _backward_geometry(ctx.x_shape, f, up, down, padding, ctx.out_hw)
        return (op(grad, f, grad_up, grad_down, grad_padding, not flip_filter, gain),) + nones

    torch.library.register_autograd(name, backward, setup_context=setup_context)


def fake_upfirdn2d(x, f, up, down, padding, flip_filter, gain):
    return x.new_empty(out_shape(x, f, up, down, padding)).contiguous(memory_format=out_memory_format(x))


def _register_compiled_ops() -> None:
    """Autograd and fake kernel for the C++ op, only if _C defined it."""
    if not _extension.loaded():
        return
    torch.library.register_fake("medkern::upfirdn2d")(fake_upfirdn2d)
    register_autograd("medkern::upfirdn2d")


_register_compiled_ops()


# --- helpers with StyleGAN's alignment ---------------------------------------------------------


def fir_filter(taps: Sequence[float], normalize: bool = True, separable: bool = True, dtype=torch.float32,
               device=None) -> torch.Tensor:
    """A filter from its 1-d taps: 1-d (separable) or their 2-d outer product; normalized to sum 1
    (over the 2-d filter) if asked."""
    f = torch.as_tensor(taps, dtype=dtype, device=device)
    if f.dim() != 1 or f.numel() == 0:
        raise ValueError(f"medkern.ops.fir_filter: taps must be a non-empty 1-d sequence, got shape {tuple(f.shape)}")
    if normalize:
        f = f / f.sum()
    return f if separable else torch.outer(f, f)


def _aligned(op: str, x, f, factor_xy: tuple[int, int], padding, align):
    """(f, padding): the filter checked, and the padding plus ``align(taps, factor)`` = (lead, trail)
    per axis, which centers the filter on the resampled grid."""
    f = check_filter(op, f, x) if isinstance(x, torch.Tensor) else f
    x0, x1, y0, y1 = paddings(op, padding)
    fw, fh = filter_size(f) if isinstance(f, torch.Tensor) else (1, 1)
    (lx, tx), (ly, ty) = align(fw, factor_xy[0]), align(fh, factor_xy[1])
    return f, [x0 + lx, x1 + tx, y0 + ly, y1 + ty]


def upsample2d(x, f=None, up: IntPair = 2, padding=0, flip_filter: bool = False, gain: float = 1):
    """Upsample by ``up`` and filter with f: output (H * up_y, W * up_x) (plus padding); the gain is
    multiplied by up_x * up_y to keep the signal's magnitude, as zero insertion divides it."""
    op = "medkern.ops.upsample2d"
    up = factors(op, up, "up")
    f, pad = _aligned(op, x, f, up, padding, up_alignment)
    return upfirdn2d(x, f, up=up, padding=pad, flip_filter=flip_filter, gain=gain * up[0] * up[1])


def downsample2d(x, f=None, down: IntPair = 2, padding=0, flip_filter: bool = False, gain: float = 1):
    """Filter with f and downsample by ``down``: output (H // down_y, W // down_x) (plus padding)."""
    op = "medkern.ops.downsample2d"
    down = factors(op, down, "down")
    f, pad = _aligned(op, x, f, down, padding, down_alignment)
    return upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, gain=gain)


def filter2d(x, f, padding=0, flip_filter: bool = False, gain: float = 1):
    """Filter with f keeping the size (H, W) (plus padding): a blur with a low-pass f."""
    f, pad = _aligned("medkern.ops.filter2d", x, f, (1, 1), padding, down_alignment)
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain)
