"""GAN losses and regularizers, written on logits so they run through any discriminator
(medkern's fused ops included: R1 and the gradient penalty differentiate the discriminator's
input gradient, which needs second-order gradients of every op in it).

Conventions: ``*_logits`` are the discriminator's raw outputs (any shape, one per sample or
more), losses are means over them; penalties are means over the batch.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def _check_logits(op: str, name: str, t) -> None:
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        raise TypeError(f"medkern.gan.{op}: {name} must be a floating-point tensor, got {type(t).__name__}")


def nonsaturating_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's logistic loss: softplus(-D(real)) + softplus(D(fake)), averaged."""
    _check_logits("nonsaturating_d_loss", "real_logits", real_logits)
    _check_logits("nonsaturating_d_loss", "fake_logits", fake_logits)
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def nonsaturating_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's non-saturating loss: softplus(-D(fake)), averaged."""
    _check_logits("nonsaturating_g_loss", "fake_logits", fake_logits)
    return F.softplus(-fake_logits).mean()


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """relu(1 - D(real)) + relu(1 + D(fake)), averaged."""
    _check_logits("hinge_d_loss", "real_logits", real_logits)
    _check_logits("hinge_d_loss", "fake_logits", fake_logits)
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-D(fake), averaged."""
    _check_logits("hinge_g_loss", "fake_logits", fake_logits)
    return -fake_logits.mean()


def wasserstein_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The WGAN critic's loss: D(fake) - D(real), averaged (pair it with gradient_penalty; the
    generator's loss is -D(fake), which is hinge_g_loss)."""
    _check_logits("wasserstein_d_loss", "real_logits", real_logits)
    _check_logits("wasserstein_d_loss", "fake_logits", fake_logits)
    return fake_logits.mean() - real_logits.mean()


def _input_gradient(op: str, logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor) or not inputs.requires_grad:
        raise ValueError(f"medkern.gan.{op}: the discriminator's input must require grad "
                         "(call inputs.requires_grad_() before running the discriminator)")
    (grad,) = torch.autograd.grad(logits.sum(), inputs, create_graph=True)
    return grad


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): the mean over the batch of |d D(real) / d real|^2.

    ``real_images`` must require grad and ``real_logits`` come from them; the result is
    differentiable w.r.t. the discriminator's parameters (scale it by gamma / 2 in the loss).
    """
    _check_logits("r1_penalty", "real_logits", real_logits)
    grad = _input_gradient("r1_penalty", real_logits, real_images)
    return grad.square().flatten(1).sum(1).mean()


def gradient_penalty(discriminator: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     target: float = 1.0) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): the mean of (|d D(x) / d x| - target)^2 at random points
    x on the lines between real and fake samples (one uniform weight per sample)."""
    if real.shape != fake.shape:
        raise ValueError(f"medkern.gan.gradient_penalty: real and fake must have one shape, got "
                         f"{tuple(real.shape)} and {tuple(fake.shape)}")
    weight = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device, dtype=real.dtype)
    mixed = (real.detach() + weight * (fake.detach() - real.detach())).requires_grad_()
    grad = _input_gradient("gradient_penalty", discriminator(mixed), mixed)
    return (grad.flatten(1).norm(dim=1) - target).square().mean()
