"""DCGAN (Radford et al. 2016) for 64x64 and 128x128 images with any number of channels.

The classic architecture: a generator of transposed 4x4 convolutions (stride 2) with BatchNorm and
ReLU, ending in tanh; a discriminator of 4x4 convolutions (stride 2) with BatchNorm (not on the
first layer) and LeakyReLU(0.2), ending in one logit per image (no sigmoid: use a logits loss,
e.g. medkern.gan.nonsaturating_d_loss). Convolutions have no bias (BatchNorm follows them);
weights start as the paper says: N(0, 0.02), BatchNorm scales N(1, 0.02).

``reference=True`` builds the same network from plain torch modules with identical parameter
names, so checkpoints load both ways and the two can be compared step by step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._args import check_positive_int
from ._blocks import conv_block

IMAGE_SIZES = (64, 128)
KERNEL = 4


def _doublings(owner: str, image_size: int) -> int:
    """Stride-2 layers between the 4x4 core and the image."""
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"medkern.models.{owner}: image_size must be one of {IMAGE_SIZES}, got {image_size!r}")
    return int(math.log2(image_size // 4))


def _block(transposed: bool, c_in: int, c_out: int, stride: int, padding: int, norm: bool, act: str,
           alpha, reference: bool, memory_saving: bool = True) -> nn.Module:
    """conv (no bias) -> [BatchNorm] -> act, as a medkern block or its plain-torch twin (same keys)."""
    conv_cls = nn.ConvTranspose2d if transposed else nn.Conv2d
    conv = conv_cls(c_in, c_out, KERNEL, stride, padding, bias=False)
    return conv_block(conv, nn.BatchNorm2d(c_out) if norm else None, act, alpha, reference, memory_saving)


def init_dcgan_weights(model: nn.Module) -> None:
    """The paper's initialization: convolutions N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """z (N, latent_dim) or (N, latent_dim, 1, 1) -> images (N, channels, image_size, image_size) in [-1, 1]."""

    def __init__(self, latent_dim: int = 100, channels: int = 1, image_size: int = 64, base_channels: int = 64,
                 reference: bool = False):
        super().__init__()
        owner = type(self).__name__
        op = f"medkern.models.{owner}"
        self.latent_dim = check_positive_int(op, "latent_dim", latent_dim)
        check_positive_int(op, "channels", channels), check_positive_int(op, "base_channels", base_channels)
        doublings = _doublings(owner, image_size)
        widths = [base_channels * 2 ** i for i in reversed(range(doublings))]  # e.g. 8b, 4b, 2b, b
        blocks = [_block(True, latent_dim, widths[0], 1, 0, True, "relu", None, reference)]  # 1x1 -> 4x4
        blocks += [_block(True, c_in, c_out, 2, 1, True, "relu", None, reference)
                   for c_in, c_out in zip(widths, widths[1:])]
        blocks.append(_block(True, widths[-1], channels, 2, 1, False, "tanh", None, reference))
        self.blocks = nn.Sequential(*blocks)
        init_dcgan_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:
            z = z[:, :, None, None]
        if z.dim() != 4 or z.shape[1:] != (self.latent_dim, 1, 1):
            raise ValueError(f"medkern.models.DCGANGenerator: z must be (N, {self.latent_dim}) or "
                             f"(N, {self.latent_dim}, 1, 1), got {tuple(z.shape)}")
        return self.blocks(z)


class DCGANDiscriminator(nn.Module):
    """images (N, channels, image_size, image_size) -> logits (N,).

    ``memory_saving=False`` keeps each BatchNorm's input for backward instead of recomputing it
    from the output: needed for second-order gradients (R1, gradient penalty).
    """

    def __init__(self, channels: int = 1, image_size: int = 64, base_channels: int = 64, reference: bool = False,
                 memory_saving: bool = True):
        super().__init__()
        owner = type(self).__name__
        op = f"medkern.models.{owner}"
        check_positive_int(op, "channels", channels), check_positive_int(op, "base_channels", base_channels)
        self.image_size = image_size
        doublings = _doublings(owner, image_size)
        widths = [base_channels * 2 ** i for i in range(doublings)]  # e.g. b, 2b, 4b, 8b
        blocks = [_block(False, channels, widths[0], 2, 1, False, "lrelu", 0.2, reference)]
        blocks += [_block(False, c_in, c_out, 2, 1, True, "lrelu", 0.2, reference, memory_saving)
                   for c_in, c_out in zip(widths, widths[1:])]
        self.blocks = nn.Sequential(*blocks)
        self.logits = nn.Conv2d(widths[-1], 1, KERNEL, 1, 0, bias=False)  # 4x4 -> 1x1
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[2:] != (self.image_size, self.image_size):
            raise ValueError(f"medkern.models.DCGANDiscriminator: x must be (N, C, {self.image_size}, "
                             f"{self.image_size}), got {tuple(x.shape)}")
        return self.logits(self.blocks(x)).flatten()
