"""Reference models built from medkern layers, each with a plain-torch twin (``reference=True``)."""

from .dcgan import DCGANDiscriminator, DCGANGenerator, init_dcgan_weights

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "init_dcgan_weights"]
