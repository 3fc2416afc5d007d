"""The derivative of a kernel op's backward, computed through the reference.

An op's backward ``(gx1, gx2, ...) = J(x1, x2, ...)^T grad`` is differentiated here (for
second-order gradients, e.g. GAN R1 penalties) with torch.func over the reference forward: exact
partial derivatives in grad and every primal, and themselves differentiable by autograd (third
and higher orders).
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

Tensors = Union[torch.Tensor, Sequence[torch.Tensor]]
HALF_DTYPES = (torch.float16, torch.bfloat16)


def backward_of_backward(forward: Callable[..., torch.Tensor], grad: torch.Tensor, x: Tensors, upstream):
    """(d_grad, d_x): the gradient of sum_j <(J^T grad)_j, upstream_j> w.r.t. grad and the primals,
    J the Jacobian of ``forward`` (a reference, called as ``forward(*x)``) at x.

    ``x`` is one tensor or a tuple of primals; ``upstream`` and the returned d_x have the same
    structure (an upstream may be None: zero). float16 and bfloat16 are computed in float32, as
    the kernels do."""
    single = isinstance(x, torch.Tensor)
    primals = (x,) if single else tuple(x)
    upstreams = (upstream,) if single else tuple(upstream)
    d_grad, d_primals = _backward_of_backward(forward, grad, primals, upstreams)
    return d_grad, (d_primals[0] if single else d_primals)


def _backward_of_backward(forward, grad, primals, upstreams):
    if any(p.dtype in HALF_DTYPES for p in primals):
        d_grad, d_primals = _backward_of_backward(
            forward, grad.float(), tuple(p.float() for p in primals),
            tuple(None if u is None else u.float() for u in upstreams))
        return d_grad.to(grad.dtype), tuple(d.to(p.dtype) for d, p in zip(d_primals, primals))

    def backward(g, *xs):
        _, pullback = torch.func.vjp(forward, *xs)
        return pullback(g)

    upstreams = tuple(torch.zeros_like(p) if u is None else u.to(p.dtype) for u, p in zip(upstreams, primals))
    _, pullback = torch.func.vjp(backward, grad, *primals)
    d_grad, *d_primals = pullback(upstreams)
    return d_grad, tuple(d_primals)
