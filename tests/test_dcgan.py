"""medkern.models DCGAN: shapes, the plain-torch twin (same keys, same numbers), checkpoints both ways."""

import pytest
import torch

from medkern.models import DCGANDiscriminator, DCGANGenerator


def _pair(cls, **kwargs):
    torch.manual_seed(0)
    fused = cls(**kwargs).double()
    plain = cls(reference=True, **kwargs).double()
    plain.load_state_dict(fused.state_dict())
    return fused, plain


@pytest.mark.parametrize("image_size", [64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes(image_size, channels):
    g = DCGANGenerator(latent_dim=16, channels=channels, image_size=image_size, base_channels=4)
    d = DCGANDiscriminator(channels=channels, image_size=image_size, base_channels=4)
    images = g(torch.randn(3, 16))
    assert images.shape == (3, channels, image_size, image_size)
    assert images.abs().max() <= 1
    assert d(images).shape == (3,)


@pytest.mark.parametrize("cls,kwargs,make_input", [
    (DCGANGenerator, dict(latent_dim=8, channels=3, base_channels=4), lambda: torch.randn(4, 8, dtype=torch.float64)),
    (DCGANDiscriminator, dict(channels=2, base_channels=4), lambda: torch.randn(4, 2, 64, 64, dtype=torch.float64)),
])
def test_matches_its_plain_torch_twin_in_train_and_eval(cls, kwargs, make_input):
    fused, plain = _pair(cls, **kwargs)
    assert list(fused.state_dict()) == list(plain.state_dict())
    for step in range(2):  # train steps: outputs, every parameter gradient, running statistics
        x = make_input()
        for model in (fused, plain):
            model.zero_grad()
            model(x).square().sum().backward()
        torch.testing.assert_close(fused(x), plain(x), rtol=1e-10, atol=1e-10)
        for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-10, msg=name)
    for (name, a), b in zip(fused.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    fused.eval(), plain.eval()
    x = make_input()
    torch.testing.assert_close(fused(x), plain(x), rtol=1e-10, atol=1e-10)
    plain.train().load_state_dict(fused.state_dict())  # and back the other way
    fused.load_state_dict(plain.state_dict())


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="DCGANGenerator: image_size must be one of"):
        DCGANGenerator(image_size=32)
    with pytest.raises(ValueError, match="DCGANDiscriminator: channels must be an int >= 1"):
        DCGANDiscriminator(channels=0)
    with pytest.raises(ValueError, match=r"DCGANGenerator: z must be \(N, 100\)"):
        DCGANGenerator(base_channels=2)(torch.randn(2, 99))
    with pytest.raises(ValueError, match=r"DCGANDiscriminator: x must be \(N, C, 64, 64\)"):
        DCGANDiscriminator(base_channels=2)(torch.randn(2, 1, 32, 32))


def test_r1_step_equals_the_plain_torch_twin():
    """The issue's check: an R1 step through the medkern discriminator equals the same step through
    the reference one with the same weights (second-order gradients through every fused block)."""
    from medkern import gan

    torch.manual_seed(0)
    fused = DCGANDiscriminator(channels=1, base_channels=4, memory_saving=False).double()
    plain = DCGANDiscriminator(channels=1, base_channels=4, reference=True).double()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(4, 1, 64, 64, dtype=torch.float64)
    results = []
    for model in (fused, plain):
        real = x.clone().requires_grad_()
        logits = model(real)
        loss = gan.nonsaturating_d_loss(logits, -logits) + 5.0 * gan.r1_penalty(logits, real)
        results.append((loss.detach(), torch.autograd.grad(loss, list(model.parameters()))))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-10, atol=1e-12)
    for got, want in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)
    with pytest.raises(RuntimeError, match="memory_saving=False"):
        real = x.clone().requires_grad_()
        saving = DCGANDiscriminator(channels=1, base_channels=4).double()
        torch.autograd.grad(gan.r1_penalty(saving(real), real), list(saving.parameters()))
