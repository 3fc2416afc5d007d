"""GAN layer cases: upfirdn2d as StyleGAN uses it (2x upsampling and downsampling with the 4-tap
binomial filter), against the reference written as the definition reads."""

from __future__ import annotations

import torch

from ...ops.upfirdn2d import downsample2d, fir_filter, upsample2d
from ...reference.modulated_conv2d import resample_padding
from ...reference.upfirdn2d import upfirdn2d as reference_upfirdn2d
from ..case import Case, share_parameters, speedup_target

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


def _resample_reference(up: int, down: int):
    """upsample2d (up > 1) or downsample2d as the reference op, with the helpers' alignment."""
    def run(x, f):
        padding = resample_padding(f, up, down, (0, 0))
        return reference_upfirdn2d(x, f, (up, up), (down, down), padding, False, float(up * up))

    return run


CASES = (
    Case(
        name="gan/upfirdn2d_up2",
        family="upfirdn2d",
        description="upsample2d, 4-tap [1,3,3,1] filter, 16x64x64x64 -> 128x128",
        setup=_setup(SHAPE, QUICK_SHAPE, 1),
        reference=_resample_reference(2, 1),
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
        reference=_resample_reference(1, 2),
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
            share_parameters(fused, plain)
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


# --- StyleGAN2 layers (no targets in the issue: measured for the record) --------------------------

def _modulated_conv_case(name: str, up: int, description: str) -> Case:
    from ...ops.modulated_conv2d import modulated_conv2d
    from ...reference.modulated_conv2d import modulated_conv2d as reference_modulated_conv2d

    def setup(device: torch.device, dtype: torch.dtype, quick: bool) -> tuple[torch.Tensor, ...]:
        n, c, size = (2, 8, 8) if quick else (8, 64, 32)
        x = torch.randn(n, c, size, size, device=device, dtype=dtype)
        weight = torch.randn(c, c, 3, 3, device=device, dtype=dtype)
        styles = torch.randn(n, c, device=device, dtype=dtype)
        return x.requires_grad_(), weight.requires_grad_(), styles.requires_grad_(), fir_filter(TAPS, device=device)

    return Case(
        name=f"gan/{name}", family="modulate_weight", description=description, setup=setup,
        reference=lambda x, w, s, f: reference_modulated_conv2d(x, w, s, True, up, 1, (1, 1), f, 1e-8),
        fused=lambda x, w, s, f: modulated_conv2d(x, w, s, True, up, 1, 1, f),
        tolerance=("modulated_conv2d", "forward"),
    )


def _image_setup(shape, quick_shape):
    def setup(device: torch.device, dtype: torch.dtype, quick: bool) -> tuple[torch.Tensor, ...]:
        return (torch.randn(*(quick_shape if quick else shape), device=device, dtype=dtype).requires_grad_(),)

    return setup


def _stylegan_layer_cases() -> tuple[Case, ...]:
    from ...ops.minibatch_stddev import minibatch_stddev
    from ...ops.pixel_norm import pixel_norm
    from ...reference.minibatch_stddev import minibatch_stddev as reference_minibatch_stddev
    from ...reference.pixel_norm import pixel_norm as reference_pixel_norm

    return (
        _modulated_conv_case("modulated_conv2d", 1, "StyleGAN2 3x3 modulated conv, 8x64x32x32, demodulated"),
        _modulated_conv_case("modulated_conv2d_up2", 2, "the same with 2x FIR upsampling first (-> 64x64)"),
        Case(name="gan/pixel_norm", family="pixel_norm", description="pixel norm over channels, 16x512x32x32",
             setup=_image_setup((16, 512, 32, 32), (2, 8, 8, 8)), bandwidth_bound=True,
             reference=lambda x: reference_pixel_norm(x, 1, 1e-8), fused=lambda x: pixel_norm(x, 1, 1e-8),
             tolerance=("pixel_norm", "forward")),
        Case(name="gan/minibatch_stddev", family="minibatch_stddev",
             description="minibatch stddev (group 4, 1 channel), 16x256x16x16",
             setup=_image_setup((16, 256, 16, 16), (4, 8, 4, 4)), bandwidth_bound=True,
             reference=lambda x: reference_minibatch_stddev(x, 4, 1), fused=lambda x: minibatch_stddev(x, 4, 1),
             tolerance=("minibatch_stddev", "forward")),
    )


CASES += _stylegan_layer_cases()
