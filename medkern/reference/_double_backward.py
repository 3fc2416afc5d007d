"""The derivative of a kernel op's backward, computed through the reference.

An op's backward ``gx = J(x)^T grad`` is differentiated here (for second-order gradients, e.g.
GAN R1 penalties) with torch.func over the reference forward: exact partial derivatives in grad
and x, and themselves differentiable by autograd (third and higher orders).
"""

from __future__ import annotations

from typing import Callable

import torch


def backward_of_backward(forward: Callable[[torch.Tensor], torch.Tensor], grad: torch.Tensor, x: torch.Tensor,
                         upstream: torch.Tensor):
    """(d_grad, d_x): the gradient of <J(x)^T grad, upstream> w.r.t. grad and x, J the Jacobian of
    ``forward`` (a reference) at x. float16 and bfloat16 are computed in float32, as the kernels do."""
    if x.dtype in (torch.float16, torch.bfloat16):
        d_grad, d_x = backward_of_backward(forward, grad.float(), x.float(), upstream.float())
        return d_grad.to(grad.dtype), d_x.to(x.dtype)

    def backward(g, xx):
        _, pullback = torch.func.vjp(forward, xx)
        return pullback(g)[0]

    _, pullback = torch.func.vjp(backward, grad, x)
    return pullback(upstream.to(x.dtype))
