"""GAN training pieces: losses and regularizers (R1, WGAN-GP) that run through medkern's ops."""

from .losses import (
    gradient_penalty,
    hinge_d_loss,
    hinge_g_loss,
    nonsaturating_d_loss,
    nonsaturating_g_loss,
    r1_penalty,
    wasserstein_d_loss,
)

__all__ = ["nonsaturating_d_loss", "nonsaturating_g_loss", "hinge_d_loss", "hinge_g_loss", "r1_penalty",
           "wasserstein_d_loss", "gradient_penalty"]

# name -> (discriminator loss, generator loss), as medkern.train.GANTrainer(loss=...) takes them
LOSSES = {
    "nonsaturating": (nonsaturating_d_loss, nonsaturating_g_loss),
    "hinge": (hinge_d_loss, hinge_g_loss),
    "wasserstein": (wasserstein_d_loss, hinge_g_loss),  # the critic's generator loss is -D(fake) too
}
