"""A compact StyleGAN2 (Karras et al., 2020) for 64x64 to 256x256 images with any number of channels.

Generator: a mapping network (pixel norm, equalized-LR fully connected layers with lr 0.01) turns z
into a latent w; a synthesis network starts from a learned 4x4 constant and doubles the resolution
per block with modulated 3x3 convolutions (the first upsampling with a [1, 3, 3, 1] FIR filter),
per-pixel noise, bias and leaky ReLU, and sums toRGB outputs across resolutions ("skip"
architecture). Discriminator: "resnet" blocks of equalized 3x3 convolutions with FIR
downsampling, then minibatch standard deviation, a 3x3 convolution and two fully connected layers
down to one logit per image.

Compact: one w for every layer (no style mixing or truncation), channels min(channel_base /
resolution, channel_max). Every layer is a medkern op or module, so the whole model (and an R1
penalty through the discriminator) runs on whichever backend medkern.use_backend selects;
the reference backend is its plain-PyTorch twin.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..nn.equalized import LRELU_ALPHA, EqualizedConv2d, EqualizedLinear, stylegan_gain
from ..nn.minibatch_stddev import MinibatchStdDev
from ..nn.modulated_conv import ModulatedConv2d
from ..ops.bias_act import bias_act
from ..ops.pixel_norm import pixel_norm
from ..ops.upfirdn2d import fir_filter, upsample2d

IMAGE_SIZES = (64, 128, 256)
NOISE_MODES = ("random", "const", "none")
SKIP_GAIN = math.sqrt(0.5)  # a residual sum of two unit-variance branches keeps unit variance


def _resolutions(owner: str, image_size: int) -> list[int]:
    """4, 8, ..., image_size."""
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"medkern.models.{owner}: image_size must be one of {IMAGE_SIZES}, got {image_size!r}")
    return [2 ** i for i in range(2, int(math.log2(image_size)) + 1)]


def _channels(resolution: int, channel_base: int, channel_max: int) -> int:
    return max(1, min(channel_base // resolution, channel_max))


class MappingNetwork(nn.Module):
    """z (N, z_dim) -> w (N, w_dim): pixel norm, then ``num_layers`` lrelu EqualizedLinear layers."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int = 4, lr_multiplier: float = 0.01):
        super().__init__()
        widths = [z_dim] + [w_dim] * num_layers
        self.layers = nn.Sequential(*[
            EqualizedLinear(c_in, c_out, activation="lrelu", lr_multiplier=lr_multiplier)
            for c_in, c_out in zip(widths[:-1], widths[1:])
        ])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(pixel_norm(z, 1))


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally upsampling by 2), + noise * strength, + bias, lrelu * sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        x = self.conv(x, w)
        if noise_mode == "random":
            x = x + torch.randn(x.shape[0], 1, *x.shape[2:], dtype=x.dtype, device=x.device) * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        return bias_act(x, self.bias, 1, "lrelu", LRELU_ALPHA, stylegan_gain("lrelu"))


class ToRGB(nn.Module):
    """Modulated 1x1 conv without demodulation, + bias."""

    def __init__(self, in_channels: int, image_channels: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, image_channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(image_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return bias_act(self.conv(x, w), self.bias, 1)


class SynthesisBlock(nn.Module):
    """One resolution: [upsampling layer,] layer, toRGB; the image so far is upsampled and added to."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, image_channels: int):
        super().__init__()
        self.first = in_channels == 0
        if self.first:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGB(out_channels, image_channels, w_dim)
        self.register_buffer("resample_filter", fir_filter((1, 3, 3, 1)), persistent=False)

    def forward(self, x, img, w, noise_mode: str):
        if self.first:
            x = self.const.unsqueeze(0).expand(w.shape[0], -1, -1, -1)
        else:
            x = self.conv0(x, w, noise_mode)
        x = self.conv1(x, w, noise_mode)
        rgb = self.torgb(x, w)
        img = rgb if img is None else upsample2d(img, self.resample_filter) + rgb
        return x, img


class StyleGAN2Generator(nn.Module):
    """z (N, z_dim) -> images (N, channels, image_size, image_size), unbounded (about [-1, 1]).

    Args:
        z_dim, w_dim: sizes of the input noise and the latent.
        image_size: 64, 128 or 256. channels: image channels (1 for CT/MR slices).
        channel_base, channel_max: feature maps per resolution, min(channel_base // res, channel_max).
        mapping_layers: depth of the mapping network.
    """

    def __init__(self, z_dim: int = 128, w_dim: int = 128, image_size: int = 64, channels: int = 1,
                 channel_base: int = 4096, channel_max: int = 256, mapping_layers: int = 4):
        super().__init__()
        self.z_dim, self.image_size, self.channels = z_dim, image_size, channels
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers)
        blocks, c_in = [], 0
        for res in _resolutions("StyleGAN2Generator", image_size):
            c_out = _channels(res, channel_base, channel_max)
            blocks.append(SynthesisBlock(c_in, c_out, w_dim, res, channels))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)

    def forward(self, z: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"medkern.models.StyleGAN2Generator: noise_mode must be one of {NOISE_MODES}, "
                             f"got {noise_mode!r}")
        if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[1] != self.z_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"medkern.models.StyleGAN2Generator: z must be (N, {self.z_dim}), got {shape}")
        w = self.mapping(z)
        x = img = None
        for block in self.blocks:
            x, img = block(x, img, w, noise_mode)
        return img


class DiscriminatorBlock(nn.Module):
    """[fromRGB,] conv 3x3, conv 3x3 down 2, plus a 1x1 down-2 skip; branches summed * sqrt(0.5)."""

    def __init__(self, in_channels: int, out_channels: int, image_channels: int, from_rgb: bool):
        super().__init__()
        self.fromrgb = EqualizedConv2d(image_channels, in_channels, 1, activation="lrelu") if from_rgb else None
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, activation="lrelu")
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, activation="lrelu", down=2,
                                     gain=stylegan_gain("lrelu") * SKIP_GAIN)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, bias=False, down=2, gain=SKIP_GAIN)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fromrgb is not None:
            x = self.fromrgb(x)
        return self.skip(x) + self.conv1(self.conv0(x))


class StyleGAN2Discriminator(nn.Module):
    """images (N, channels, image_size, image_size) -> one logit per image (N, 1).

    Args:
        image_size, channels, channel_base, channel_max: as StyleGAN2Generator.
        mbstd_group_size, mbstd_num_channels: the minibatch-stddev layer's grouping (the batch
            size must be divisible by min(group size, batch)).
    """

    def __init__(self, image_size: int = 64, channels: int = 1, channel_base: int = 4096, channel_max: int = 256,
                 mbstd_group_size: int = 4, mbstd_num_channels: int = 1):
        super().__init__()
        self.image_size, self.channels = image_size, channels
        resolutions = _resolutions("StyleGAN2Discriminator", image_size)[::-1]  # image_size, ..., 4
        self.blocks = nn.ModuleList([
            DiscriminatorBlock(_channels(res, channel_base, channel_max), _channels(res // 2, channel_base, channel_max),
                               channels, from_rgb=(res == image_size))
            for res in resolutions[:-1]
        ])
        c4 = _channels(4, channel_base, channel_max)
        self.mbstd = MinibatchStdDev(mbstd_group_size, mbstd_num_channels)
        self.conv = EqualizedConv2d(c4 + mbstd_num_channels, c4, 3, activation="lrelu")
        self.fc = EqualizedLinear(c4 * 16, c4, activation="lrelu")
        self.out = EqualizedLinear(c4, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        expected = (self.channels, self.image_size, self.image_size)
        if not isinstance(img, torch.Tensor) or img.dim() != 4 or tuple(img.shape[1:]) != expected:
            shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
            raise ValueError(f"medkern.models.StyleGAN2Discriminator: img must be (N, {', '.join(map(str, expected))}), "
                             f"got {shape}")
        x = img
        for block in self.blocks:
            x = block(x)
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1)))
