"""``GANTrainer``: alternating discriminator and generator steps with R1 or a gradient penalty.

Each batch of real images takes one discriminator step; every ``d_steps_per_g_step`` of those is
followed by one generator step. R1 may be lazy (StyleGAN2): computed every ``r1_interval`` steps
and scaled by the interval, so its average weight is unchanged. Latents are drawn from torch's
generator, so a run is reproducible from its seed and resumes exactly (see ``loop.py``).
The batch's first tensor is the real images (labels, if any, are ignored).
"""

from __future__ import annotations

import torch
from torch import nn

from ..gan import LOSSES, gradient_penalty, r1_penalty
from . import distributed
from .batches import default_unpack, to_device
from .._args import check_positive_int
from .loop import EpochLoop, in_eval_mode
from .trainer import build_optimizer, check_precision, default_device, prepare_model

_OP = "medkern.train.GANTrainer"


class GANTrainer(EpochLoop):
    """``loss``: one of ``medkern.gan.LOSSES`` ("nonsaturating", "hinge", "wasserstein");
    ``r1_gamma``: the R1 weight (the penalty enters as gamma / 2 x R1); ``gp_weight``: the WGAN-GP
    weight. Optimizers are Optimizers or ``params -> Optimizer`` factories. The loop's options
    (checkpoint_dir, checkpoint_every, log_dir, tensorboard, progress, seed, deterministic) are as
    for :class:`medkern.train.Trainer`."""

    owner = _OP

    def __init__(self, generator: nn.Module, discriminator: nn.Module, g_optimizer, d_optimizer, *,
                 latent_dim: int | None = None, loss: str = "nonsaturating", r1_gamma: float = 0.0,
                 r1_interval: int = 1, gp_weight: float = 0.0, d_steps_per_g_step: int = 1, device=None,
                 precision: str = "fp32", channels_last: bool = False, swap: bool = False, **loop_options):
        if loss not in LOSSES:
            raise ValueError(f"{_OP}: loss must be one of {tuple(LOSSES)}, got {loss!r}")
        for name, value in (("r1_gamma", r1_gamma), ("gp_weight", gp_weight)):
            if not value >= 0:
                raise ValueError(f"{_OP}: {name} must be >= 0, got {value!r}")
        check_positive_int(_OP, "r1_interval", r1_interval)
        check_positive_int(_OP, "d_steps_per_g_step", d_steps_per_g_step)
        # no loss scaling: fp16 would need a scaler through R1's double backward
        self.amp_dtype = check_precision(_OP, precision, allowed=("fp32", "bf16"))
        if distributed.is_distributed():  # R1's double backward through DDP is not supported by torch
            raise ValueError(f"{_OP}: runs in one process; it does not support DistributedDataParallel")
        latent_dim = latent_dim if latent_dim is not None else getattr(generator, "latent_dim", None)
        check_positive_int(_OP, "latent_dim (or generator.latent_dim)", latent_dim)
        super().__init__(**loop_options)

        self.device = torch.device(device) if device is not None else default_device(generator)
        self.channels_last = channels_last
        self.generator = prepare_model(_OP, generator, self.device, channels_last, swap)
        self.discriminator = prepare_model(_OP, discriminator, self.device, channels_last, swap)
        self.g_optimizer = build_optimizer(_OP, g_optimizer, self.generator, swap)
        self.d_optimizer = build_optimizer(_OP, d_optimizer, self.discriminator, swap)
        self.latent_dim = latent_dim
        self.loss = loss
        self.d_loss_fn, self.g_loss_fn = LOSSES[loss]
        self.r1_gamma, self.r1_interval, self.gp_weight = float(r1_gamma), r1_interval, float(gp_weight)
        self.d_steps_per_g_step = d_steps_per_g_step
        self.precision = precision

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal latents in the generator's parameter dtype (from ``generator`` if given)."""
        dtype = next((p.dtype for p in self.generator.parameters()), torch.get_default_dtype())
        return torch.randn(n, self.latent_dim, generator=generator, dtype=dtype).to(self.device)

    def _discriminator_step(self, real: torch.Tensor) -> None:
        size = real.shape[0]
        with torch.no_grad(), self._autocast():
            fake = self.generator(self.latents(size))
        regularize = self.r1_gamma > 0 and self.global_step % self.r1_interval == 0
        real = real.detach().requires_grad_(regularize)
        with self._autocast():
            real_logits, fake_logits = self.discriminator(real), self.discriminator(fake)
            loss = self.d_loss_fn(real_logits, fake_logits)
            total = loss
            if regularize:
                r1 = r1_penalty(real_logits, real)
                total = total + (self.r1_gamma / 2 * self.r1_interval) * r1
                self._add("r1", r1.item(), size)
            if self.gp_weight > 0:
                gp = gradient_penalty(self.discriminator, real, fake)
                total = total + self.gp_weight * gp
                self._add("gp", gp.item(), size)
        self.d_optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.d_optimizer.step()
        self._add("d_loss", loss.item(), size)

    def _generator_step(self, size: int) -> None:
        # the discriminator's weights get no gradient here; flags the user set are put back after
        flags = [p.requires_grad for p in self.discriminator.parameters()]
        self.discriminator.requires_grad_(False)
        try:
            with self._autocast():
                loss = self.g_loss_fn(self.discriminator(self.generator(self.latents(size))))
            self.g_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.g_optimizer.step()
        finally:
            for p, flag in zip(self.discriminator.parameters(), flags):
                p.requires_grad_(flag)
        self._add("g_loss", loss.item(), size)

    def _train_batch(self, batch, batch_index: int, total: int | None) -> bool:
        self.generator.train(), self.discriminator.train()
        real = to_device(default_unpack(batch)[0][0], self.device, self.channels_last)
        self._discriminator_step(real)
        self.global_step += 1
        if self.global_step % self.d_steps_per_g_step == 0:
            self._generator_step(real.shape[0])
        return True

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images from the generator in eval mode (latents from ``generator`` if given)."""
        with in_eval_mode(self.generator):
            return self.generator(self.latents(n, generator)).float().cpu()

    def _stateful(self) -> dict:
        return {"generator": self.generator, "discriminator": self.discriminator,
                "g_optimizer": self.g_optimizer, "d_optimizer": self.d_optimizer}

    def _settings(self) -> dict:
        return {"loss": self.loss, "r1_gamma": self.r1_gamma, "r1_interval": self.r1_interval,
                "gp_weight": self.gp_weight, "d_steps_per_g_step": self.d_steps_per_g_step,
                "latent_dim": self.latent_dim, "precision": self.precision}
