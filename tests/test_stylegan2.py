"""medkern.models StyleGAN2: shapes, noise modes, checkpoints, and the fused model equal to itself on
the reference backend (the plain-PyTorch twin) in a generator step and an R1 discriminator step."""

import pytest
import torch

import medkern
from medkern import gan
from medkern.models import StyleGAN2Discriminator, StyleGAN2Generator

SMALL = dict(channel_base=128, channel_max=8)  # 8 feature maps at 4x4 and 8x8, fewer above


@pytest.mark.parametrize("image_size", [64, 128, 256])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(image_size, channels):
    g = StyleGAN2Generator(z_dim=8, w_dim=8, image_size=image_size, channels=channels, **SMALL)
    d = StyleGAN2Discriminator(image_size=image_size, channels=channels, **SMALL)
    images = g(torch.randn(2, 8))
    assert images.shape == (2, channels, image_size, image_size)
    assert torch.isfinite(images).all()
    assert d(images).shape == (2, 1)


def test_noise_modes():
    torch.manual_seed(0)
    g = StyleGAN2Generator(z_dim=8, w_dim=8, **SMALL)
    for module in g.modules():
        if hasattr(module, "noise_strength"):
            torch.nn.init.constant_(module.noise_strength, 0.5)
    z = torch.randn(2, 8)
    torch.testing.assert_close(g(z, "const"), g(z, "const"), rtol=0, atol=0)
    assert not torch.equal(g(z, "random"), g(z, "random"))
    assert not torch.equal(g(z, "none"), g(z, "const"))
    with pytest.raises(ValueError, match="StyleGAN2Generator: noise_mode must be one of"):
        g(z, "fixed")


def test_checkpoint_round_trip_reproduces_the_model():
    torch.manual_seed(0)
    g, d = StyleGAN2Generator(z_dim=8, w_dim=8, **SMALL), StyleGAN2Discriminator(**SMALL)
    g2, d2 = StyleGAN2Generator(z_dim=8, w_dim=8, **SMALL), StyleGAN2Discriminator(**SMALL)
    g2.load_state_dict(g.state_dict()), d2.load_state_dict(d.state_dict())
    z = torch.randn(4, 8)
    torch.testing.assert_close(g2(z, "const"), g(z, "const"), rtol=0, atol=0)
    torch.testing.assert_close(d2(g(z, "const")), d(g(z, "const")), rtol=0, atol=0)
    assert any(key.endswith("noise_const") for key in g.state_dict())  # the fixed noise is part of the model


def _step_results(g, d, z, real, backend):
    """A generator step and a discriminator step with R1, on ``backend``: losses and every gradient."""
    with medkern.use_backend(backend):
        g_loss = gan.nonsaturating_g_loss(d(g(z, "const")))
        g_grads = torch.autograd.grad(g_loss, list(g.parameters()))
        real = real.clone().requires_grad_()
        real_logits = d(real)
        d_loss = gan.nonsaturating_d_loss(real_logits, d(g(z, "const").detach())) + gan.r1_penalty(real_logits, real)
        d_grads = torch.autograd.grad(d_loss, list(d.parameters()))
    return g_loss.detach(), d_loss.detach(), g_grads, d_grads


def test_fused_steps_equal_the_reference_backend():
    """The issue's check, for StyleGAN2: a generator step (through modulate_weight, upfirdn2d,
    bias_act and pixel_norm) and a discriminator step with R1 (second-order gradients through
    upfirdn2d, bias_act and minibatch_stddev) equal the same steps through the plain-PyTorch
    reference of every op, with the same weights."""
    for op in ("modulate_weight", "upfirdn2d", "bias_act", "pixel_norm", "minibatch_stddev"):
        if medkern.backend.select(op, torch.device("cpu")) == "reference":
            pytest.skip(f"no {op} kernel here (medkern._C not built): nothing to compare with the reference")
    torch.manual_seed(0)
    g = StyleGAN2Generator(z_dim=8, w_dim=8, **SMALL).double()
    d = StyleGAN2Discriminator(**SMALL).double()
    for module in g.modules():  # exercise the noise path
        if hasattr(module, "noise_strength"):
            torch.nn.init.constant_(module.noise_strength, 0.1)
    z, real = torch.randn(4, 8, dtype=torch.float64), torch.randn(4, 1, 64, 64, dtype=torch.float64)
    fused = _step_results(g, d, z, real, "auto")
    plain = _step_results(g, d, z, real, "reference")
    torch.testing.assert_close(fused[0], plain[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fused[1], plain[1], rtol=1e-10, atol=1e-12)
    names = [n for n, _ in g.named_parameters()] + [n for n, _ in d.named_parameters()]
    for name, got, want in zip(names, fused[2] + fused[3], plain[2] + plain[3]):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-11, msg=name)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="StyleGAN2Generator: image_size must be one of"):
        StyleGAN2Generator(image_size=32)
    with pytest.raises(ValueError, match="StyleGAN2Discriminator: image_size must be one of"):
        StyleGAN2Discriminator(image_size=100)
    with pytest.raises(ValueError, match=r"StyleGAN2Generator: z must be \(N, 8\)"):
        StyleGAN2Generator(z_dim=8, w_dim=8, **SMALL)(torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"StyleGAN2Discriminator: img must be \(N, 1, 64, 64\)"):
        StyleGAN2Discriminator(**SMALL)(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="minibatch_stddev"):
        StyleGAN2Discriminator(**SMALL)(torch.randn(6, 1, 64, 64))  # 6 is not divisible by 4
