"""medkern.nn.LinearAct: nn.Linear + activation with the bias and activation as one bias_act pass."""

import pytest
import torch
from torch import nn

import medkern


@pytest.mark.parametrize("act", [nn.ReLU(), nn.LeakyReLU(0.2), nn.GELU(), nn.Tanh(), None])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_linear_then_activation(act, bias):
    linear = nn.Linear(5, 7, bias=bias).double()
    block = medkern.nn.LinearAct.from_torch(linear, act)
    assert block.linear is linear
    reference = nn.Sequential(linear, act or nn.Identity())
    for shape in [(3, 5), (2, 4, 5), (5,), (0, 5)]:
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        y, expected = block(x), reference(x)
        torch.testing.assert_close(y, expected)
        if x.numel():
            torch.autograd.gradcheck(block, (x,))


def test_state_dict_round_trip_and_to_torch():
    block = medkern.nn.LinearAct(nn.Linear(4, 3), "lrelu", 0.1)
    torch_sequence = block.to_torch()
    assert list(torch_sequence.state_dict()) == list(block.state_dict()) == ["linear.weight", "linear.bias"]
    assert isinstance(torch_sequence.act, nn.LeakyReLU) and torch_sequence.act.negative_slope == 0.1
    x = torch.randn(2, 4)
    torch.testing.assert_close(torch_sequence(x), block(x))
    other = medkern.nn.LinearAct(nn.Linear(4, 3), "lrelu", 0.1)
    other.load_state_dict(torch_sequence.state_dict())
    torch.testing.assert_close(other(x), block(x))


def test_bad_arguments():
    with pytest.raises(TypeError, match="medkern.nn.LinearAct: linear must be an nn.Linear"):
        medkern.nn.LinearAct(nn.Conv1d(2, 2, 1))
    with pytest.raises(ValueError, match="unknown activation"):
        medkern.nn.LinearAct(nn.Linear(2, 2), "swishy")
    with pytest.raises(ValueError, match="no medkern activation computes"):
        medkern.nn.LinearAct.from_torch(nn.Linear(2, 2), nn.PReLU())
