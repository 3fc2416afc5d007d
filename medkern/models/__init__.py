"""Reference models built from medkern layers, each with a plain-torch twin (``reference=True``)."""

from .dcgan import DCGANDiscriminator, DCGANGenerator, init_dcgan_weights
from .stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "init_dcgan_weights", "StyleGAN2Generator", "StyleGAN2Discriminator"]
