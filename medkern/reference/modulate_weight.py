"""Style modulation and demodulation of a convolution weight in plain PyTorch (StyleGAN2).

For weight W (O, I, *k) and styles s (N, I), per sample n:

    u[n, o, i, k] = W[o, i, k] * s[n, i]
    d[n, o]       = rsqrt(sum over (i, k) of u[n, o, i, k]^2 + eps)      (demodulate only)
    w[n, o, i, k] = u[n, o, i, k] * d[n, o]                             (u if not demodulate)

and the gradient, for an upstream g of w's shape:

    du  = d * g - d^3 * u * sum over (i, k) of (g * u)                   (g if not demodulate)
    gW[o, i, k] = sum over n of du[n, o, i, k] * s[n, i]
    gs[n, i]    = sum over (o, k) of du[n, o, i, k] * W[o, i, k]
"""

from __future__ import annotations

import torch


def _modulated(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """u = W * s, (N, O, I, *k)."""
    kernel_dims = weight.dim() - 2
    return weight.unsqueeze(0) * styles.reshape(*styles.shape[:2], *([1] * kernel_dims)).unsqueeze(1)


def _row_dims(weight: torch.Tensor) -> list[int]:
    """The dims of (N, O, I, *k) summed over per output channel: I and the kernel."""
    return list(range(2, weight.dim() + 1))


def modulate_weight(weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, eps: float) -> torch.Tensor:
    """The reference forward; arguments already checked (see medkern.ops.modulate_weight)."""
    u = _modulated(weight, styles)
    if not demodulate:
        return u
    return u * torch.rsqrt(u.square().sum(_row_dims(weight), keepdim=True) + eps)


def modulate_weight_grad(grad: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                         eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(gW, gs) as written in the module docstring, in torch ops (differentiable again)."""
    du = grad
    if demodulate:
        u = _modulated(weight, styles)
        rows = _row_dims(weight)
        d = torch.rsqrt(u.square().sum(rows, keepdim=True) + eps)
        du = d * grad - d.pow(3) * u * (grad * u).sum(rows, keepdim=True)
    kernel_dims = list(range(3, weight.dim() + 1))
    s = styles.reshape(*styles.shape[:2], *([1] * (weight.dim() - 2))).unsqueeze(1)
    grad_weight = (du * s).sum(0)
    grad_styles = (du * weight.unsqueeze(0)).sum([1] + kernel_dims)
    return grad_weight, grad_styles
