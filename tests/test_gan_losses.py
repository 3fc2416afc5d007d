"""medkern.gan: losses against their formulas, and R1 / WGAN-GP through medkern's fused ops equal
to the same penalties through the reference ops (second-order gradients of every op)."""

import math

import pytest
import torch
import torch.nn.functional as F

import medkern
from medkern import gan
from medkern.nn import BiasAct, Downsample2d, MinibatchStdDev, PixelNorm


def test_losses_match_their_formulas():
    real = torch.tensor([2.0, -1.0, 0.5])
    fake = torch.tensor([-3.0, 1.5])
    sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
    want_d = sum(sp(-v) for v in real.tolist()) / 3 + sum(sp(v) for v in fake.tolist()) / 2
    torch.testing.assert_close(gan.nonsaturating_d_loss(real, fake), torch.tensor(want_d))
    torch.testing.assert_close(gan.nonsaturating_g_loss(fake), torch.tensor((sp(3.0) + sp(-1.5)) / 2))
    want_hinge = (0 + 2.0 + 0.5) / 3 + (0 + 2.5) / 2
    torch.testing.assert_close(gan.hinge_d_loss(real, fake), torch.tensor(want_hinge))
    torch.testing.assert_close(gan.hinge_g_loss(fake), torch.tensor(0.75))
    torch.testing.assert_close(gan.wasserstein_d_loss(real, fake), torch.tensor(-0.75 - 0.5))


def test_r1_of_a_quadratic_critic():
    """D(x) = sum(x^2) per sample has input gradient 2x: R1 = mean over samples of 4 |x|^2."""
    x = torch.randn(3, 2, 4, 4, requires_grad=True)
    logits = x.square().flatten(1).sum(1)
    torch.testing.assert_close(gan.r1_penalty(logits, x), (4 * x.detach().square().flatten(1).sum(1)).mean())


def test_gradient_penalty_of_a_linear_critic():
    """D(x) = <w, x> has input gradient w everywhere: the penalty is (|w| - 1)^2."""
    w = torch.randn(2, 3, 3)
    critic = lambda x: (x * w).flatten(1).sum(1)  # noqa: E731
    got = gan.gradient_penalty(critic, torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3))
    torch.testing.assert_close(got, (w.norm() - 1).square())


def test_penalties_say_what_is_missing():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="medkern.gan.r1_penalty: the discriminator's input must require grad"):
        gan.r1_penalty(x.sum(1), x)
    with pytest.raises(ValueError, match="medkern.gan.gradient_penalty: real and fake must have one shape"):
        gan.gradient_penalty(lambda v: v, torch.randn(2, 3), torch.randn(3, 3))
    with pytest.raises(TypeError, match="medkern.gan.hinge_g_loss: fake_logits must be a floating-point tensor"):
        gan.hinge_g_loss([1.0])


class _Critic(torch.nn.Module):
    """conv -> bias + lrelu * sqrt(2) -> pixel norm -> blur-downsample -> minibatch stddev -> conv
    -> bias + lrelu -> mean: StyleGAN's fused discriminator ops, with second-order gradients, in
    sequence."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.act1 = BiasAct(8, "lrelu", alpha=0.2, gain=math.sqrt(2))
        self.norm = PixelNorm()
        self.down = Downsample2d(2)
        self.stddev = MinibatchStdDev(group_size=2)
        self.conv2 = torch.nn.Conv2d(9, 4, 3, padding=1, bias=False)
        self.act2 = BiasAct(4, "lrelu", alpha=0.2)

    def forward(self, x):
        x = self.norm(self.act1(self.conv1(x)))
        return self.act2(self.conv2(self.stddev(self.down(x)))).flatten(1).mean(1)


@pytest.mark.parametrize("penalty", ["r1", "wgan_gp"])
def test_penalty_step_through_fused_ops_equals_the_reference(penalty):
    torch.manual_seed(0)
    critic = _Critic().double()
    with torch.no_grad():
        critic.act1.bias.normal_()
        critic.act2.bias.normal_()
    real, fake = torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randn(4, 3, 8, 8, dtype=torch.float64)

    def step(backend):
        critic.zero_grad()
        torch.manual_seed(1)  # the same interpolation weights for WGAN-GP
        with medkern.use_backend(backend):
            if penalty == "r1":
                x = real.clone().requires_grad_()
                loss = gan.r1_penalty(critic(x), x)
            else:
                loss = gan.gradient_penalty(critic, real, fake)
            loss.backward()
        return loss.detach(), [p.grad.clone() for p in critic.parameters()]

    loss, grads = step("cpu")
    want_loss, want_grads = step("reference")
    torch.testing.assert_close(loss, want_loss, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, want_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
