"""GAN layer cases: upfirdn2d as StyleGAN uses it (2x upsampling and downsampling with the 4-tap
binomial filter), against the reference written as the definition reads."""

from __future__ import annotations

import torch

from ...ops.upfirdn2d import downsample2d, fir_filter, upsample2d
from ...reference.upfirdn2d import upfirdn2d as reference_upfirdn2d
from ..case import Case, speedup_target

SHAPE, QUICK_SHAPE = (16, 64, 64, 64), (2, 8, 16, 16)
TAPS = (1, 3, 3, 1)

# The acceptance criterion: up=2 with a 4-tap filter on 16x64x64x64.
ACCEPTANCE = (speedup_target("fwd_bwd", "eager", 2.0),)


def _setup(shape, quick_shape, factor_in: int):
    def setup(device: torch.device, dtype: torch.dtype, quick: bool) -> tuple[torch.Tensor, ...]:
        n, c, h, w = quick_shape if quick else shape
        x = torch.randn(n, c, h * factor_in, w * factor_in, device=device, dtype=dtype)
        return x.requires_grad_(), fir_filter(TAPS, device=device)

    return setup


def _upsample_reference(x, f):
    # upsample2d's geometry for a 4-tap filter and up = 2: padding (2, 1) per axis, gain 4
    return reference_upfirdn2d(x, f, (2, 2), (1, 1), (2, 1, 2, 1), False, 4.0)


def _downsample_reference(x, f):
    # downsample2d's geometry for a 4-tap filter and down = 2: padding (1, 1) per axis
    return reference_upfirdn2d(x, f, (1, 1), (2, 2), (1, 1, 1, 1), False, 1.0)


CASES = (
    Case(
        name="gan/upfirdn2d_up2",
        family="upfirdn2d",
        description="upsample2d, 4-tap [1,3,3,1] filter, 16x64x64x64 -> 128x128",
        setup=_setup(SHAPE, QUICK_SHAPE, 1),
        reference=_upsample_reference,
        fused=lambda x, f: upsample2d(x, f),
        bandwidth_bound=True,
        targets=ACCEPTANCE,
        tolerance=("upfirdn2d", "forward"),
    ),
    Case(
        name="gan/upfirdn2d_down2",
        family="upfirdn2d",
        description="downsample2d, 4-tap [1,3,3,1] filter, 16x64x128x128 -> 64x64",
        setup=_setup(SHAPE, QUICK_SHAPE, 2),
        reference=_downsample_reference,
        fused=lambda x, f: downsample2d(x, f),
        bandwidth_bound=True,
        tolerance=("upfirdn2d", "forward"),
    ),
)


# --- DCGAN training steps (the model targets) ---------------------------------------------

DCGAN_BATCH, DCGAN_QUICK_BATCH = 16, 2
DCGAN_LATENT = 100


def _dcgan_step_case(name: str, description: str, r1_gamma: float, targets) -> Case:
    """One discriminator + generator step of DCGAN 64x64 (``r1_gamma`` = 0), or the discriminator
    step with an R1 penalty: the loss whose gradient w.r.t. every parameter is that step's."""
    from ...gan import nonsaturating_d_loss, nonsaturating_g_loss, r1_penalty
    from ...models import DCGANDiscriminator, DCGANGenerator

    models: dict[str, tuple] = {}

    def setup(device: torch.device, dtype: torch.dtype, quick: bool) -> tuple[torch.Tensor, ...]:
        batch = DCGAN_QUICK_BATCH if quick else DCGAN_BATCH
        g_fused = DCGANGenerator(DCGAN_LATENT, channels=1).to(device, dtype)
        d_fused = DCGANDiscriminator(channels=1, memory_saving=r1_gamma == 0).to(device, dtype)
        g_plain = DCGANGenerator(DCGAN_LATENT, channels=1, reference=True).to(device, dtype)
        d_plain = DCGANDiscriminator(channels=1, reference=True).to(device, dtype)
        for plain, fused in ((g_plain, g_fused), (d_plain, d_fused)):
            plain.load_state_dict(fused.state_dict())
            # the same Parameter objects (same state_dict paths): every contender differentiates the inputs
            for name, param in fused.named_parameters():
                owner, _, attr = name.rpartition(".")
                plain.get_submodule(owner)._parameters[attr] = param
        models["torch"], models["medkern"] = (g_plain, d_plain), (g_fused, d_fused)
        z = torch.randn(batch, DCGAN_LATENT, device=device, dtype=dtype)
        real = torch.randn(batch, 1, 64, 64, device=device, dtype=dtype).clamp(-1, 1)
        if r1_gamma:  # the discriminator's step alone: the generator's samples are data
            with torch.no_grad():
                fake = g_fused(z)
            return (real, fake, *d_fused.parameters())
        return (z, real, *g_fused.parameters(), *d_fused.parameters())

    def step(which: str):
        def run(first, second, *params):
            generator, discriminator = models[which]
            if r1_gamma:
                real, fake = first, second
                with torch.enable_grad():  # the penalty is a gradient, even in the forward-only timing
                    real = real.detach().requires_grad_()
                    logits = discriminator(real)
                    penalty = r1_penalty(logits, real)
                    return nonsaturating_d_loss(logits, discriminator(fake)) + r1_gamma / 2 * penalty
            z, real = first, second
            fake = generator(z)
            d_loss = nonsaturating_d_loss(discriminator(real), discriminator(fake.detach()))
            return d_loss + nonsaturating_g_loss(discriminator(fake))

        return run

    # torch.compile's autograd cannot differentiate a compiled graph twice
    no_compile = "torch.compile does not support double backward (the R1 penalty)" if r1_gamma else None
    return Case(name=f"gan/{name}", family="norm_act", description=description, setup=setup,
                reference=step("torch"), fused=step("medkern"), targets=targets, no_compile=no_compile)


CASES += (
    _dcgan_step_case("dcgan64_step", "DCGAN 64x64, batch 16: one discriminator + generator step (losses' gradients)",
                     0.0, (speedup_target("fwd_bwd", "eager", 1.2),)),
    _dcgan_step_case("dcgan64_r1_step", "the DCGAN discriminator step with an R1 penalty (gamma 10)",
                     10.0, (speedup_target("fwd_bwd", "eager", 1.2),)),
)
