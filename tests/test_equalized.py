"""medkern.nn.EqualizedLinear / EqualizedConv2d: the equalized-LR formula, nn.Linear/nn.Conv2d checkpoints."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medkern.nn import EqualizedConv2d, EqualizedLinear
from medkern.ops import conv2d_resample
from medkern.reference.activations import activation as reference_activation


def test_linear_is_the_scaled_affine_then_the_activation():
    torch.manual_seed(0)
    layer = EqualizedLinear(6, 4, bias_init=0.5, lr_multiplier=0.1, activation="lrelu").double()
    assert torch.equal(layer.bias, torch.full((4,), 0.5, dtype=torch.float64))
    x = torch.randn(3, 2, 6, dtype=torch.float64)  # any leading dims
    z = F.linear(x, layer.weight * 0.1 / math.sqrt(6), layer.bias * 0.1)
    want = F.leaky_relu(z, 0.2) * math.sqrt(2)
    torch.testing.assert_close(layer(x), want, rtol=1e-12, atol=1e-12)
    plain = EqualizedLinear(6, 4, bias=False).double()
    torch.testing.assert_close(plain(x), F.linear(x, plain.weight / math.sqrt(6)), rtol=1e-12, atol=1e-12)


def test_linear_weight_starts_at_unit_scale_over_the_lr_multiplier():
    torch.manual_seed(0)
    layer = EqualizedLinear(256, 256, lr_multiplier=0.01)
    assert abs(layer.weight.std().item() * 0.01 - 1) < 0.02
    assert abs(layer(torch.randn(512, 256)).std().item() - 1) < 0.05  # unit in, unit out


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2)])
def test_conv_is_the_scaled_resampled_conv_then_bias_act(up, down):
    torch.manual_seed(0)
    layer = EqualizedConv2d(3, 5, 3, activation="relu", gain=0.7, up=up, down=down).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    y = conv2d_resample(x, layer.weight / math.sqrt(27), up, down, 1)
    want = F.relu(y + layer.bias[:, None, None]) * 0.7
    got = layer(x)
    assert got.shape == (2, 5, 8 * up // down, 8 * up // down)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0])


@pytest.mark.parametrize("module,twin", [
    (lambda: EqualizedLinear(6, 4), lambda: nn.Linear(6, 4)),
    (lambda: EqualizedConv2d(3, 5, 3, down=2), lambda: nn.Conv2d(3, 5, 3)),
    (lambda: EqualizedConv2d(3, 5, 1, bias=False), lambda: nn.Conv2d(3, 5, 1, bias=False)),
])
def test_checkpoints_load_both_ways_with_the_torch_layer(module, twin):
    ours, theirs = module(), twin()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    for source, target in ((twin(), module()), (module(), twin())):  # each direction from fresh modules
        target.load_state_dict(source.state_dict())
        for key, value in source.state_dict().items():
            assert torch.equal(value, target.state_dict()[key]), key


def test_activations_use_the_shared_table():
    layer = EqualizedLinear(4, 4, activation="silu").double()
    x = torch.randn(2, 4, dtype=torch.float64)
    z = F.linear(x, layer.weight / 2, layer.bias)
    want = reference_activation(z, "silu", 0.0) * math.sqrt(2)  # StyleGAN's swish gain
    torch.testing.assert_close(layer(x), want, rtol=1e-12, atol=1e-12)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="medkern.nn.EqualizedLinear: unknown activation act='relux'"):
        EqualizedLinear(2, 2, activation="relux")
    with pytest.raises(ValueError, match="medkern.nn.EqualizedConv2d: up and down cannot both be > 1"):
        EqualizedConv2d(2, 2, 3, up=2, down=2)
    with pytest.raises(ValueError, match="medkern.nn.EqualizedConv2d: down must be an int >= 1"):
        EqualizedConv2d(2, 2, 3, down=0)
    for bad, error, what in ((0, ValueError, "a finite number > 0"), (-0.5, ValueError, "a finite number > 0"),
                             (float("inf"), ValueError, "a finite number > 0"),
                             (float("nan"), ValueError, "a finite number > 0"),
                             (True, TypeError, "a real number"), ("1", TypeError, "a real number")):
        with pytest.raises(error, match=f"medkern.nn.EqualizedLinear: lr_multiplier must be {what}"):
            EqualizedLinear(2, 2, lr_multiplier=bad)
        with pytest.raises(error, match=f"medkern.nn.EqualizedConv2d: lr_multiplier must be {what}"):
            EqualizedConv2d(2, 2, 3, lr_multiplier=bad)
    assert EqualizedLinear(2, 2, lr_multiplier=np.float32(0.5)).weight_gain == pytest.approx(0.5 / 2 ** 0.5)
