"""medkern.ops.bias_act: bias + activation + gain + clamp in one pass, differentiable to any order.

    y = clamp(act(x + b broadcast along dim, alpha) * gain, -clamp, clamp)

The backend (medkern.backend) picks the implementation: the C++ op ``medkern::bias_act``
(CPU and CUDA kernels), the Triton op ``medkern::triton_bias_act``, or the reference. Both
kernel ops share one autograd definition here:

- the gradient is ``bias_act_backward(grad, x, b, order=1)``, which also sums the bias gradient;
- that op is differentiable: w.r.t. grad it is itself (same order), w.r.t. x it is the op of
  the next order, so second-order gradients (R1, gradient penalty) run fused too; order 3 and
  up run as PyTorch ops (medkern.reference.bias_act_grad), which autograd differentiates on.

Only x and b are saved for backward: the fused op stores no intermediate.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .. import _extension, activations, backend
from .._args import check_float_tensor
from ..reference.bias_act import bias_act as reference_bias_act
from ..reference.bias_act import bias_act_grad as reference_bias_act_grad
from ..reference.bias_act import broadcast_along

OP = "medkern.ops.bias_act"


def _real(op: str, value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{op}: {name} must be finite, got {value}")
    return float(value)


def check_options(op: str, act, alpha, gain, clamp):
    """Checks and resolves the non-tensor arguments: (activation name, alpha, gain, clamp).

    The one check of these for the op, the Triton op and medkern.nn.BiasAct.
    """
    spec = activations.get(act, op)
    alpha = activations.resolve_alpha(spec, alpha, op)
    gain = 1.0 if gain is None else _real(op, gain, "gain")
    if clamp is not None:
        if isinstance(clamp, bool) or not isinstance(clamp, (int, float)) or math.isnan(clamp):
            raise TypeError(f"{op}: clamp must be a real number or None, got {clamp!r}")
        if clamp < 0:
            raise ValueError(f"{op}: clamp must be >= 0 (or None for no clamp), got {clamp}")
        clamp = None if math.isinf(clamp) else float(clamp)
    return spec.name, alpha, gain, clamp


def check_tensors(op: str, x, b, dim) -> None:
    """Checks x, b and dim (ValueError/TypeError naming ``op`` and the argument)."""
    check_float_tensor(op, "x", x)
    if x.dim() == 0:
        raise ValueError(f"{op}: x must have at least one dimension, got a 0-d tensor")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"{op}: dim must be an int, got {type(dim).__name__}")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"{op}: dim must be in [{-x.dim()}, {x.dim() - 1}] for a {x.dim()}-d x, got {dim}")
    if b is not None:
        if not isinstance(b, torch.Tensor):
            raise TypeError(f"{op}: b must be a torch.Tensor or None, got {type(b).__name__}")
        if b.device != x.device:
            raise ValueError(f"{op}: b must be on {x.device} (the device of x), got {b.device}")
        if b.dtype != x.dtype:
            raise TypeError(f"{op}: b must have dtype {x.dtype} (that of x), got {b.dtype}")
        if b.dim() != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(
                f"{op}: b must be 1-d with x.shape[{dim}] = {x.shape[dim]} elements, got shape {tuple(b.shape)}"
            )


def check_args(x, b, dim, act, alpha, gain, clamp):
    """Checks every argument; returns (dim in [0, ndim), activation name, alpha, gain, clamp)."""
    check_tensors(OP, x, b, dim)
    return (dim % x.dim(), *check_options(OP, act, alpha, gain, clamp))


def _autocast_bias(x: torch.Tensor, b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Under autocast, a floating bias of another dtype is cast to x's: the op runs in x's dtype."""
    if (
        b is not None
        and isinstance(x, torch.Tensor)
        and isinstance(b, torch.Tensor)
        and b.dtype != x.dtype
        and b.is_floating_point()
        and torch.is_autocast_enabled(x.device.type)
    ):
        return b.to(x.dtype)
    return b


def bias_act(
    x: torch.Tensor,
    b: Optional[torch.Tensor] = None,
    dim: int = 1,
    act: str = "linear",
    alpha: Optional[float] = None,
    gain: Optional[float] = None,
    clamp: Optional[float] = None,
) -> torch.Tensor:
    """``clamp(act(x + b, alpha) * gain, -clamp, clamp)`` with b (1-d) broadcast along ``dim``.

    Args:
        x: float32/float64/float16/bfloat16 tensor of any rank >= 1 and any layout.
        b: optional bias with ``x.shape[dim]`` elements, x's dtype and device (under autocast a
            bias of another float dtype is cast to x's).
        dim: the dimension of x that b runs along.
        act: one of ``medkern.activations.NAMES`` (aliases: swish, leaky_relu, identity).
        alpha: lrelu's negative slope (default 0.01) or elu's alpha (default 1.0); other
            activations take none.
        gain: scale applied after the activation (default 1).
        clamp: if given (>= 0), the output is clamped to [-clamp, clamp].

    Returns a tensor of x's shape, dtype and (for dense x) layout. float16 and bfloat16 inputs
    are computed in float32 inside the kernels.
    """
    b = _autocast_bias(x, b)
    dim, act, alpha, gain, clamp = check_args(x, b, dim, act, alpha, gain, clamp)
    chosen = backend.select("bias_act", x.device)
    backend.check_traceable(OP, chosen, x.device)
    if chosen == "reference":
        return reference_bias_act(x, b, dim, act, alpha, gain, clamp)
    forward, _ = _kernel_ops(chosen)
    return forward(x, b, dim, act, alpha, gain, clamp)


def _kernel_ops(chosen: str):
    """(forward op, backward op) of a kernel backend."""
    if chosen == "triton":
        from ..triton import bias_act as triton_bias_act

        return triton_bias_act.forward_op(), triton_bias_act.backward_op()
    return torch.ops.medkern.bias_act.default, torch.ops.medkern.bias_act_backward.default


def register_autograd(forward_name: str, backward_name: str) -> None:
    """Makes op ``forward_name`` differentiable through ``backward_name``, and that op through itself.

    Names are ``"medkern::op"``; the ops must be defined already.
    """
    backward_op = getattr(torch.ops.medkern, backward_name.split("::")[1]).default

    def setup_forward(ctx, inputs, output):
        x, b, *params = inputs
        ctx.save_for_backward(x, b)
        ctx.params = params  # dim, act, alpha, gain, clamp

    def forward_backward(ctx, grad):
        x, b = ctx.saved_tensors
        need_b = b is not None and ctx.needs_input_grad[1]
        gx, gb = backward_op(grad, x, b, *ctx.params, 1, need_b)
        return gx, (gb if need_b else None), None, None, None, None, None

    def setup_backward(ctx, inputs, output):
        grad, x, b, *params, order, bias_grad = inputs
        ctx.save_for_backward(grad, x, b)
        ctx.params, ctx.order, ctx.bias_grad = params, order, bias_grad

    def backward_backward(ctx, grad_gx, grad_gb):
        grad, x, b = ctx.saved_tensors
        dim = ctx.params[0]
        # gb is the sum of gx over all dims but dim: its gradient flows back through gx
        upstream = grad_gx
        if ctx.bias_grad and grad_gb is not None:
            spread = broadcast_along(grad_gb, x.dim(), dim).expand_as(x)
            upstream = spread if upstream is None else upstream + spread
        nones = (None,) * 7
        if upstream is None:
            return (None, None, None) + nones
        need_grad, need_x, need_b = ctx.needs_input_grad[:3]
        need_b = need_b and b is not None
        d_grad = d_x = d_b = None
        if need_grad:
            d_grad, _ = backward_op(upstream, x, b, *ctx.params, ctx.order, False)
        if need_x or need_b:
            if ctx.order < 2:
                d_x, d_b = backward_op(upstream * grad, x, b, *ctx.params, ctx.order + 1, need_b)
            else:
                d_x, d_b = reference_bias_act_grad(upstream * grad, x, b, *ctx.params, ctx.order + 1)
        return (d_grad, d_x if need_x else None, d_b if need_b else None) + nones

    torch.library.register_autograd(forward_name, forward_backward, setup_context=setup_forward)
    torch.library.register_autograd(backward_name, backward_backward, setup_context=setup_backward)


def fake_forward(x, b, dim, act, alpha, gain, clamp):
    return torch.empty_like(x)  # the kernels allocate y the same way: x's layout when dense


def fake_backward(grad, x, b, dim, act, alpha, gain, clamp, order, bias_grad):
    return torch.empty_like(x), x.new_empty((x.shape[dim] if bias_grad else 0,))


def _register_compiled_ops() -> None:
    """Autograd and fake kernels for the C++ ops, only if _C defined them (never on a missing op)."""
    if not _extension.loaded():
        return
    torch.library.register_fake("medkern::bias_act")(fake_forward)
    torch.library.register_fake("medkern::bias_act_backward")(fake_backward)
    register_autograd("medkern::bias_act", "medkern::bias_act_backward")


_register_compiled_ops()
