"""bias_act in plain PyTorch: y = clamp(act(x + b) * gain, -clamp, clamp), b broadcast along dim."""

from typing import Optional

import torch

from .activations import activation, third_derivative


def broadcast_along(b: torch.Tensor, ndim: int, dim: int) -> torch.Tensor:
    """A view of the 1-D ``b`` that broadcasts along ``dim`` of an ``ndim``-D tensor."""
    shape = [1] * ndim
    shape[dim] = b.numel()
    return b.reshape(shape)


def bias_act(
    x: torch.Tensor,
    b: Optional[torch.Tensor],
    dim: int,
    act: str,
    alpha: float,
    gain: float,
    clamp: Optional[float],
) -> torch.Tensor:
    """The reference forward; all arguments already checked and resolved (see medkern.ops)."""
    z = x if b is None else x + broadcast_along(b, x.dim(), dim)
    y = activation(z, act, alpha)
    if gain != 1.0:
        y = y * gain
    if clamp is not None:
        y = torch.clamp(y, -clamp, clamp)
    return y


def bias_act_grad(
    grad: torch.Tensor,
    x: torch.Tensor,
    b: Optional[torch.Tensor],
    dim: int,
    act: str,
    alpha: float,
    gain: float,
    clamp: Optional[float],
    order: int,
):
    """grad * gain * act^(order)(x + b) where the output is not clamped, and its sum per channel.

    Only ``order == 3`` is computed here (the kernels do 1 and 2); written in torch ops, it
    can be differentiated again by autograd.
    """
    if order != 3:
        raise ValueError(f"reference.bias_act_grad computes order 3 only, got {order}")
    dim %= x.dim()  # direct op callers may pass a negative dim
    z = x if b is None else x + broadcast_along(b, x.dim(), dim)
    d = third_derivative(z, act, alpha) * gain
    if clamp is not None:
        v = activation(z, act, alpha) * gain
        d = torch.where((v >= -clamp) & (v <= clamp), d, torch.zeros_like(d))
    gx = grad * d
    reduce_dims = [i for i in range(x.dim()) if i != dim]
    if b is None:
        gb = None
    else:  # (sum over an empty list of dims would reduce them all)
        gb = gx.sum(reduce_dims) if reduce_dims else gx.clone()
    return gx, gb
