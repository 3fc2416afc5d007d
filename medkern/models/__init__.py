"""Reference models built from medkern layers, each with a plain-torch twin (``reference=True``)."""

from .classifier import ImageClassifier
from .dcgan import DCGANDiscriminator, DCGANGenerator, init_dcgan_weights
from .sequence import SequenceClassifier
from .stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from .unet import UNet

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "init_dcgan_weights", "StyleGAN2Generator", "StyleGAN2Discriminator",
           "ImageClassifier", "SequenceClassifier", "UNet"]
