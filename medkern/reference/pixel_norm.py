"""pixel_norm in plain PyTorch: y = x * rsqrt(mean(x^2 over dim) + eps) (StyleGAN)."""

import torch


def pixel_norm(x: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    """The reference forward; arguments already checked (see medkern.ops.pixel_norm)."""
    return x * torch.rsqrt(x.square().mean(dim, keepdim=True) + eps)


def pixel_norm_grad(grad: torch.Tensor, x: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    """gx = r * grad - x * r^3 * sum(grad * x over dim) / C, r = rsqrt(mean(x^2) + eps), in torch ops."""
    r = torch.rsqrt(x.square().mean(dim, keepdim=True) + eps)
    dot = (grad * x).sum(dim, keepdim=True)
    return r * grad - x * r.pow(3) * (dot / x.shape[dim])
