"""GAN training pieces: losses and regularizers (R1, WGAN-GP) that run through medkern's ops."""

from .losses import (
    gradient_penalty,
    hinge_d_loss,
    hinge_g_loss,
    nonsaturating_d_loss,
    nonsaturating_g_loss,
    r1_penalty,
)

__all__ = ["nonsaturating_d_loss", "nonsaturating_g_loss", "hinge_d_loss", "hinge_g_loss", "r1_penalty",
           "gradient_penalty"]
