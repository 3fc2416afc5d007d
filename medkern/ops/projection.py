"""An RNN layer's input projection over all steps, ``x @ weight.T + bias``, on CPU.

Where MKL runs its generic code path (CPUs other than Intel's; ``medkern._extension.rnn_cpu_gemm()``
is then "medkern"), ``F.linear``'s GEMMs run at about half the speed of the vector units. oneDNN's
linear (``torch.ops.mkldnn._linear_pointwise``, which torch's compiled CPU code calls) computes the
forward and the input gradient 2-3x as fast there (measured on an AMD EPYC: 3200 x 128 x 1024 in
2.1 ms against 4.8 ms). The weight gradient, a reduction over every step and sample, where oneDNN
is no faster, is the op ``medkern::transposed_product`` (medkern's GEMM, csrc/cpu/gemm_kernel.cpp).
Everywhere else, under torch.compile and under autocast, this is ``F.linear``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .. import _extension

_ONEDNN_LINEAR = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


def _onednn_linear(x2d: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return _ONEDNN_LINEAR(x2d.contiguous(), weight.contiguous(), bias, "none", [], "")


def uses_onednn(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> bool:
    """Whether project() runs oneDNN's linear for these arguments."""
    return (
        _ONEDNN_LINEAR is not None
        and x.device.type == "cpu"
        and all(t is None or (t.dtype == torch.float32 and t.device.type == "cpu") for t in (x, weight, bias))
        and x.numel() > 0
        and weight.numel() > 0
        and not torch.compiler.is_compiling()
        and not torch.is_autocast_enabled("cpu")  # F.linear is autocast's to cast
        and not _transforms_active()
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and _extension.rnn_cpu_gemm() == "medkern"
    )


def _transforms_active() -> bool:
    """torch.func transforms or forward-mode AD, which _OneDnnLinear does not implement."""
    from torch.autograd import forward_ad

    return torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0


class _OneDnnLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        y = _onednn_linear(x.reshape(-1, x.shape[-1]), weight, bias)
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        x2d = x.reshape(-1, x.shape[-1])
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            if torch.is_grad_enabled():  # create_graph: a differentiable product for the next order
                dx = g @ weight
            else:
                dx = _onednn_linear(g, weight.t(), None)
            dx = dx.view(x.shape)
        if ctx.needs_input_grad[1]:
            dw = g.t() @ x2d if torch.is_grad_enabled() else torch.ops.medkern.transposed_product(g, x2d)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g.sum(0)
        return dx, dw, db


def project(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN where uses_onednn() says so."""
    if uses_onednn(x, weight, bias):
        return _OneDnnLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


def _fake_transposed_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a.new_empty((a.shape[1], b.shape[1]))


def _setup_transposed_product(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _transposed_product_backward(ctx, grad):
    """out = a.T @ b: d a = b @ grad.T, d b = a @ grad (differentiable products)."""
    a, b = ctx.saved_tensors
    return (b @ grad.t() if ctx.needs_input_grad[0] else None, a @ grad if ctx.needs_input_grad[1] else None)


if _extension.has_kernel("transposed_product", "CPU"):
    torch.library.register_fake("medkern::transposed_product")(_fake_transposed_product)
    torch.library.register_autograd("medkern::transposed_product", _transposed_product_backward,
                                    setup_context=_setup_transposed_product)
