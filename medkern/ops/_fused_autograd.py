"""The autograd and kernel lookup shared by the ops whose gradient is one fused backward op.

Such an op has a forward ``op(*tensors, *options)`` and a backward
``op_backward(grad, *tensors, *options)`` returning the gradient of each tensor (one tensor, or a
tuple). The forward is differentiated through the backward op (saving only the input tensors);
the backward op is differentiated through the reference with torch.func
(medkern/reference/_double_backward.py), exact and differentiable again, for R1 penalties.
"""

from __future__ import annotations

import importlib
from typing import Callable

import torch

from .. import _extension
from ..reference._double_backward import backward_of_backward


def kernel_ops(op: str, chosen: str):
    """(forward, backward) OpOverloads of ``op`` for a kernel backend: the Triton ops
    ``medkern::triton_<op>`` (registered when medkern.triton.<op> is imported) or the C++ ops."""
    name = op
    if chosen == "triton":
        importlib.import_module(f"medkern.triton.{op}")
        name = f"triton_{op}"
    return getattr(torch.ops.medkern, name).default, getattr(torch.ops.medkern, f"{name}_backward").default


def register_autograd(forward_name: str, backward_name: str, reference: Callable, num_tensors: int = 1) -> None:
    """Makes op ``forward_name`` differentiable through ``backward_name``, and that op through
    ``reference(*tensors, *options)``. Names are ``"medkern::op"``; the ops must be defined
    already. The first ``num_tensors`` inputs of the forward are the differentiable tensors."""
    backward_op = getattr(torch.ops.medkern, backward_name.split("::")[1]).default
    count = num_tensors

    def setup_forward(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:count])
        ctx.options = tuple(inputs[count:])

    def forward_backward(ctx, grad):
        grads = backward_op(grad, *ctx.saved_tensors, *ctx.options)
        grads = (grads,) if count == 1 else tuple(grads)
        return *grads, *([None] * len(ctx.options))

    def setup_backward(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:count + 1])  # grad and the tensors
        ctx.options = tuple(inputs[count + 1:])

    def backward_backward(ctx, *upstreams):
        grad, *tensors = ctx.saved_tensors
        none = [None] * (1 + count + len(ctx.options))
        if all(u is None for u in upstreams):
            return tuple(none)
        d_grad, d_tensors = backward_of_backward(lambda *xs: reference(*xs, *ctx.options), grad, tuple(tensors),
                                                 upstreams)
        out = [d_grad, *d_tensors] + none[count + 1:]
        return tuple(d if need else None for d, need in zip(out, ctx.needs_input_grad))

    torch.library.register_autograd(forward_name, forward_backward, setup_context=setup_forward)
    torch.library.register_autograd(backward_name, backward_backward, setup_context=setup_backward)


def register_compiled_ops(op: str, fake_forward: Callable, fake_backward: Callable, reference: Callable,
                          num_tensors: int = 1) -> None:
    """Fake kernels and autograd for the C++ ops ``medkern::op`` and ``medkern::op_backward``,
    only if _C defined them (an older or missing _C lacks them: never register on a missing op)."""
    if not _extension.loaded() or not hasattr(torch.ops.medkern, op):
        return
    torch.library.register_fake(f"medkern::{op}")(fake_forward)
    torch.library.register_fake(f"medkern::{op}_backward")(fake_backward)
    register_autograd(f"medkern::{op}", f"medkern::{op}_backward", reference, num_tensors)
