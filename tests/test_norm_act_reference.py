"""The norm_act reference and the memory-saving backward it specifies for the kernels.

norm_act's forward is torch's functional norm followed by the activation; here it is held to the
torch module sequences it replaces (outputs, gradients, running statistics), and the backward
from the output alone (InPlace-ABN) is held to autograd.
"""

import pytest
import torch
from torch import nn

from medkern.reference.norm_act import (
    batch_rstd,
    invertible,
    norm_act,
    norm_act_backward_from_output,
    running_rstd,
)

KIND_MODULES = {
    "batch": lambda c, dims, affine: {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](c, affine=affine),
    "instance": lambda c, dims, affine: {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dims](
        c, affine=affine, track_running_stats=True
    ),
    "group": lambda c, dims, affine: nn.GroupNorm(2, c, affine=affine),
}
ACTS = {"relu": (nn.ReLU(), 0.0), "lrelu": (nn.LeakyReLU(0.01), 0.01), "elu": (nn.ELU(0.7), 0.7), "linear": (nn.Identity(), 0.0)}


def _norm_args(norm: nn.Module, kind: str):
    running = (norm.running_mean, norm.running_var) if kind != "group" else (None, None)
    return dict(weight=norm.weight, bias=norm.bias, running_mean=running[0], running_var=running[1],
                momentum=getattr(norm, "momentum", 0.1), eps=norm.eps, num_groups=getattr(norm, "num_groups", None))


@pytest.mark.parametrize("kind", list(KIND_MODULES))
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("affine", [True, False])
def test_matches_the_torch_sequence_in_train_and_eval(kind, dims, act, affine):
    torch.manual_seed(0)
    channels = 4
    norm = KIND_MODULES[kind](channels, dims, affine).double()
    if affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    ours = KIND_MODULES[kind](channels, dims, affine).double()
    ours.load_state_dict(norm.state_dict())
    module_act, alpha = ACTS[act]
    sequence = nn.Sequential(norm, module_act)
    for step in range(3):  # running statistics evolve identically
        x = torch.randn(3, channels, *[5] * dims, dtype=torch.float64, requires_grad=True)
        want = sequence(x)
        got = norm_act(x, kind, training=True, act=act, alpha=alpha, **_norm_args(ours, kind))
        torch.testing.assert_close(got, want)
        g = torch.randn_like(want)
        params = [p for p in (norm.weight, norm.bias) if p is not None]
        ours_params = [p for p in (ours.weight, ours.bias) if p is not None]
        want_grads = torch.autograd.grad(want, [x] + params, g)
        got_grads = torch.autograd.grad(got, [x] + ours_params, g)
        for a, b in zip(got_grads, want_grads):
            torch.testing.assert_close(a, b)
    for a, b in zip(ours.buffers(), norm.buffers()):
        if a.is_floating_point():
            torch.testing.assert_close(a, b)
    sequence.eval()
    x = torch.randn(3, channels, *[5] * dims, dtype=torch.float64)
    torch.testing.assert_close(norm_act(x, kind, training=False, act=act, alpha=alpha, **_norm_args(ours, kind)), sequence(x))


@pytest.mark.parametrize("kind,num_groups", [("batch", None), ("instance", None), ("group", 2), ("group", 1)])
@pytest.mark.parametrize("act,alpha", [("linear", 0.0), ("lrelu", 0.01), ("lrelu", 0.2), ("elu", 1.0)])
@pytest.mark.parametrize("affine", [True, False])
def test_backward_from_the_output_alone_equals_autograd(kind, num_groups, act, alpha, affine):
    """The InPlace-ABN backward (y and rstd kept, nothing else) gives autograd's gradients."""
    assert invertible(act, alpha)
    torch.manual_seed(1)
    x = torch.randn(3, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    weight = (torch.rand(4, dtype=torch.float64) + 0.5).requires_grad_() if affine else None
    bias = torch.randn(4, dtype=torch.float64).requires_grad_() if affine else None
    y = norm_act(x, kind, weight, bias, act=act, alpha=alpha, num_groups=num_groups)
    g = torch.randn_like(y)
    inputs = [x] + ([weight, bias] if affine else [])
    want = torch.autograd.grad(y, inputs, g)
    rstd = batch_rstd(x.detach(), kind, num_groups, 1e-5)
    dx, dweight, dbias = norm_act_backward_from_output(g, y.detach(), rstd, weight, bias, kind, act, alpha, num_groups)
    torch.testing.assert_close(dx, want[0], rtol=1e-9, atol=1e-9)
    if affine:
        torch.testing.assert_close(dweight, want[1], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(dbias, want[2], rtol=1e-9, atol=1e-9)


def test_backward_from_the_output_with_running_statistics():
    torch.manual_seed(2)
    norm = nn.BatchNorm2d(4).double().eval()
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    y = nn.functional.leaky_relu(norm(x), 0.1)
    g = torch.randn_like(y)
    want = torch.autograd.grad(y, [x, norm.weight, norm.bias], g)
    got = norm_act_backward_from_output(g, y.detach(), running_rstd(norm.running_var, norm.eps), norm.weight,
                                        norm.bias, "batch", "lrelu", 0.1, batch_stats=False)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_recovery_error_grows_as_gamma_shrinks():
    """Why the kernels must keep xhat when a gamma is near 0: in float32 the weight gradient
    recovered from y loses accuracy in proportion to 1/|gamma|."""
    torch.manual_seed(3)
    x = torch.randn(8, 2, 16, 16)
    errors = []
    for gamma in (1.0, 1e-2, 1e-4):
        weight = torch.tensor([gamma, 1.0], requires_grad=True)
        bias = torch.tensor([0.3, -0.2], requires_grad=True)
        y = norm_act(x, "batch", weight, bias, act="lrelu", alpha=0.01)
        g = torch.randn_like(y)
        (want,) = torch.autograd.grad(y, weight, g)
        rstd = batch_rstd(x, "batch", None, 1e-5)
        _, dweight, _ = norm_act_backward_from_output(g, y.detach(), rstd, weight.detach(), bias.detach(),
                                                      "batch", "lrelu", 0.01)
        errors.append(((dweight[0] - want[0]).abs() / want[0].abs()).item())
    assert errors[0] < 1e-4
    assert errors[2] > 10 * errors[0], errors


def test_non_invertible_activations_are_refused():
    assert not invertible("relu", 0.0) and not invertible("gelu", 0.0) and not invertible("lrelu", 0.0)
    with pytest.raises(ValueError, match="not invertible"):
        norm_act_backward_from_output(torch.ones(2, 2), torch.ones(2, 2), torch.ones(2), None, None, "batch", "gelu", 0.0)
