"""medkern.ops.max_pool: max pooling over 1 to 3 spatial dims, as torch's max_pool{1,2,3}d.

The kernels keep, for backward, the window position of each output's value in one byte
("argmax", csrc/common/max_pool.h) where torch keeps an int64 index (and, for NCHW, x).
On CPU they also run NCHW tensors several times faster than torch's NCHW kernel.

The backend picks the implementation: ``medkern::max_pool`` (CPU and CUDA kernels), the Triton op
``medkern::triton_max_pool``, or the reference (torch's own). A window of more than 255 positions
runs the reference whatever the backend (its argmax would not fit a byte; 255 marks a window that
holds no input element, which dilation allows: its output is -inf, as torch's, with no gradient).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .. import _extension, backend
from .._args import check_float_tensor
from ..reference import max_pool as reference

OP = "medkern.ops.max_pool"
WINDOW_LIMIT = 255  # window positions an argmax byte can name (csrc/common/max_pool.h)


def _per_axis(op: str, name: str, value, dims: int, minimum: int) -> tuple[int, ...]:
    """An int, or a sequence of one or ``dims`` ints (as torch takes them), each >= minimum, as a
    tuple of ``dims`` ints."""
    values = (value,) * dims if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(values, (tuple, list)) and len(values) == 1:
        values = tuple(values) * dims
    ok = isinstance(values, (tuple, list)) and len(values) == dims and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values)
    if not ok:
        raise ValueError(f"{op}: {name} must be an int >= {minimum} or {dims} of them (one per spatial dim), "
                         f"got {value!r}")
    return tuple(values)


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """torch's pooling output size along one axis (as csrc/common/max_pool_op.h computes it)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window must start inside the input
    return out


def output_sizes(spatial, kernel_size, stride, padding, dilation, ceil_mode: bool) -> list[int]:
    """``output_size`` along every spatial dim."""
    return [output_size(*args, ceil_mode) for args in zip(spatial, kernel_size, stride, padding, dilation)]


def _pool_parameters(op: str, dims: int, kernel_size, stride, padding, dilation):
    """(kernel_size, stride, padding, dilation) as tuples of ``dims`` ints, checked as torch checks them."""
    kernel_size = _per_axis(op, "kernel_size", kernel_size, dims, 1)
    stride = kernel_size if stride is None or stride == [] or stride == () else _per_axis(op, "stride", stride, dims, 1)
    padding = _per_axis(op, "padding", padding, dims, 0)
    dilation = _per_axis(op, "dilation", dilation, dims, 1)
    if any(p > k // 2 for k, p in zip(kernel_size, padding)):
        raise ValueError(f"{op}: padding must be at most half the kernel size, got padding {padding} for "
                         f"kernel_size {kernel_size}")
    return kernel_size, stride, padding, dilation


def check_args(x, kernel_size, stride, padding, dilation, ceil_mode, op: str = OP):
    """Checks every argument as torch does (ValueError/TypeError naming ``op``); returns
    (kernel_size, stride, padding, dilation) as tuples of one int per spatial dim of x."""
    check_float_tensor(op, "x", x)
    dims = x.dim() - 2
    if not 1 <= dims <= 3:
        raise ValueError(f"{op}: x must be (N, C, *spatial) with 1 to 3 spatial dims, got shape {tuple(x.shape)}")
    kernel_size, stride, padding, dilation = _pool_parameters(op, dims, kernel_size, stride, padding, dilation)
    if not isinstance(ceil_mode, bool):
        raise TypeError(f"{op}: ceil_mode must be a bool, got {ceil_mode!r}")
    if any(size == 0 for size in x.shape[1:]):
        raise ValueError(f"{op}: x may be empty only along dim 0 (the batch), got shape {tuple(x.shape)}")
    if min(output_sizes(x.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)) < 1:
        raise ValueError(f"{op}: the output would be empty: input spatial size {tuple(x.shape[2:])} is too small "
                         f"for kernel_size {kernel_size}, padding {padding} and dilation {dilation}")
    return kernel_size, stride, padding, dilation


def check_backward_args(grad, argmax, input_size, kernel_size, stride, padding, dilation, op: str):
    """max_pool_backward's checks (as csrc/common/max_pool_op.h makes them); returns the pool's
    parameters as check_args does."""
    check_float_tensor(op, "grad", grad)
    if not isinstance(argmax, torch.Tensor) or argmax.dtype != torch.uint8:
        raise TypeError(f"{op}: argmax must be uint8 (max_pool's second output), got "
                        f"{getattr(argmax, 'dtype', type(argmax).__name__)}")
    if grad.shape != argmax.shape or grad.device != argmax.device:
        raise ValueError(f"{op}: grad must have the shape of argmax {tuple(argmax.shape)} and be on its device, got "
                         f"{tuple(grad.shape)} on {grad.device}")
    dims = argmax.dim() - 2
    if not 1 <= dims <= 3:
        raise ValueError(f"{op}: argmax must be (N, C, *spatial) with 1 to 3 spatial dims, got {tuple(argmax.shape)}")
    parameters = _pool_parameters(op, dims, kernel_size, stride, padding, dilation)
    if len(input_size) != argmax.dim() or list(input_size[:2]) != list(argmax.shape[:2]):
        raise ValueError(f"{op}: input_size must be x's shape (N, C, *spatial) for argmax of shape "
                         f"{tuple(argmax.shape)}, got {list(input_size)}")
    for size, out, *pool in zip(input_size[2:], argmax.shape[2:], *parameters):
        if size < 1 or out not in (output_size(size, *pool, False), output_size(size, *pool, True)):
            raise ValueError(f"{op}: argmax of shape {tuple(argmax.shape)} is not max_pool's output for input_size "
                             f"{list(input_size)} and these kernel_size, stride, padding and dilation")
    if not (argmax.is_contiguous() or channels_last(argmax)):
        raise ValueError(f"{op}: argmax must be laid out as max_pool wrote it (contiguous or channels-last)")
    return parameters


def kernel_op(chosen: str):
    """The forward op of a kernel backend ("cpu", "cuda" or "triton")."""
    if chosen == "triton":
        from ..triton import max_pool as triton_max_pool

        return triton_max_pool.forward_op()
    return torch.ops.medkern.max_pool.default


def _run(x, kernel_size, stride, padding, dilation, ceil_mode, with_indices: bool):
    kernel_size, stride, padding, dilation = check_args(x, kernel_size, stride, padding, dilation, ceil_mode)
    chosen = backend.select("max_pool", x.device)
    if chosen == "reference" or math.prod(kernel_size) > WINDOW_LIMIT:
        return reference.max_pool(x, kernel_size, stride, padding, dilation, ceil_mode, with_indices)
    backend.check_traceable(OP, chosen, x.device)
    y, argmax = kernel_op(chosen)(x, kernel_size, stride, padding, dilation, ceil_mode)
    if not with_indices:
        return y
    return y, reference.plane_indices(argmax, x.shape[2:], kernel_size, stride, padding, dilation)


def max_pool(x: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False):
    """torch's ``max_pool{1,2,3}d(x, kernel_size, stride, padding, dilation, ceil_mode)``, the number of
    spatial dims being ``x.dim() - 2``.

    Args:
        x: (N, C, *spatial) float32/float64/float16/bfloat16, contiguous or channels-last (others
            are copied once); the output has x's layout.
        kernel_size, stride, padding, dilation: an int or one per spatial dim; stride defaults to
            kernel_size; padding at most half the kernel size.
        ceil_mode: round the output size up, as torch does.
    """
    return _run(x, kernel_size, stride, padding, dilation, ceil_mode, False)


def max_pool_with_indices(x: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1,
                          ceil_mode: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``max_pool`` and torch's indices (int64, flat within each input plane), as
    ``return_indices=True`` gives them (e.g. for ``max_unpool``)."""
    return _run(x, kernel_size, stride, padding, dilation, ceil_mode, True)


def channels_last(t: torch.Tensor) -> bool:
    """Whether t (N, C, *spatial) is stored with C innermost (and is not plainly contiguous)."""
    return not t.is_contiguous() and t.movedim(1, -1).is_contiguous()


def _empty(n, c, spatial, rows: bool, like: torch.Tensor, dtype: Optional[torch.dtype] = None):
    """An empty (n, c, *spatial) tensor laid out as the kernels write it (max_pool_empty in C++):
    channels innermost if ``rows``."""
    dtype = dtype or like.dtype
    if rows:
        return like.new_empty((n, *spatial, c), dtype=dtype).movedim(-1, 1)
    return like.new_empty((n, c, *spatial), dtype=dtype)


def empty_outputs(x, kernel_size, stride, padding, dilation, ceil_mode):
    """(y, argmax) as the kernels allocate them: x's layout if channels-last, else contiguous."""
    sizes = output_sizes(x.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    rows = channels_last(x)
    n, c = x.shape[:2]
    return _empty(n, c, sizes, rows, x), _empty(n, c, sizes, rows, x, torch.uint8)


def empty_input_grad(grad, argmax, input_size, kernel_size, stride, padding, dilation):
    """dx as the kernels allocate it: argmax's layout."""
    return _empty(input_size[0], input_size[1], input_size[2:], channels_last(argmax), grad)


def register_autograd(forward_name: str, backward_name: str) -> None:
    """Makes op ``forward_name`` differentiable through ``backward_name`` (saving argmax and x's
    shape only), and that op (linear in grad) through a gather at argmax, differentiable again."""
    backward_op = getattr(torch.ops.medkern, backward_name.split("::")[1]).default

    def setup_forward(ctx, inputs, output):
        x, *options, _ceil_mode = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])
        ctx.input_size, ctx.options = list(x.shape), options

    def forward_backward(ctx, grad, _grad_argmax):
        (argmax,) = ctx.saved_tensors
        return (backward_op(grad, argmax, ctx.input_size, *ctx.options),) + (None,) * 5

    def setup_backward(ctx, inputs, output):
        _grad, argmax, input_size, *options = inputs
        ctx.save_for_backward(argmax)
        ctx.input_size, ctx.options = list(input_size), options

    def backward_backward(ctx, grad_dx):
        (argmax,) = ctx.saved_tensors
        return (reference.gather_at_argmax(grad_dx, argmax, ctx.input_size, *ctx.options),) + (None,) * 6

    torch.library.register_autograd(forward_name, forward_backward, setup_context=setup_forward)
    torch.library.register_autograd(backward_name, backward_backward, setup_context=setup_backward)


def _register_compiled_ops() -> None:
    if not _extension.loaded() or not hasattr(torch.ops.medkern, "max_pool"):
        return
    torch.library.register_fake("medkern::max_pool")(empty_outputs)
    torch.library.register_fake("medkern::max_pool_backward")(empty_input_grad)
    register_autograd("medkern::max_pool", "medkern::max_pool_backward")


_register_compiled_ops()
