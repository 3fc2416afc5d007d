"""medkern.nn's CNN blocks against the torch sequences they replace: outputs, gradients, running
statistics, state_dict round trips, eval-mode BatchNorm folding, layouts and bytes kept for backward."""

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn

import medkern
from medkern import tolerances
from medkern.bench.memory import saved_tensor_bytes
from medkern.nn import ConvAct, Conv1dAct, Conv2dAct, Conv3dAct, ConvNormAct, ConvTransposeNormAct, NormAct

DTYPE = torch.float64  # module parity is judged in float64, where only summation order differs

BLOCKS = {  # name -> (conv, norm, act, input shape)
    "resnet_2d": (lambda: nn.Conv2d(4, 6, 3, padding=1, bias=False), lambda: nn.BatchNorm2d(6), nn.ReLU, (3, 4, 7, 6)),
    "nnunet_3d": (lambda: nn.Conv3d(3, 4, 3, padding=1), lambda: nn.InstanceNorm3d(4, affine=True),
                  lambda: nn.LeakyReLU(0.01), (2, 3, 5, 4, 6)),
    "instance_tracked": (lambda: nn.Conv2d(3, 4, 3), lambda: nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
                         lambda: nn.ELU(0.7), (2, 3, 8, 7)),
    "segresnet_group": (lambda: nn.Conv2d(4, 8, 3, padding=1), lambda: nn.GroupNorm(4, 8), nn.SiLU, (2, 4, 6, 6)),
    "dcgan_disc_1d": (lambda: nn.Conv1d(2, 4, 4, stride=2, padding=1, padding_mode="reflect"),
                      lambda: nn.BatchNorm1d(4, momentum=None), lambda: nn.LeakyReLU(0.2), (5, 2, 16)),
    "bn_no_affine": (lambda: nn.Conv2d(3, 4, 1), lambda: nn.BatchNorm2d(4, affine=False), nn.GELU, (4, 3, 5, 5)),
}


def _randomize(module: nn.Module) -> nn.Module:
    """Non-trivial affine parameters and running statistics, so folding and recovery are exercised."""
    with torch.no_grad():
        for name, t in module.named_parameters():
            if name.startswith("norm."):
                t.copy_(torch.rand_like(t) + 0.5 if name.endswith("weight") else torch.randn_like(t) * 0.3)
        for name, t in module.named_buffers():
            if name.endswith("running_mean"):
                t.copy_(torch.randn_like(t) * 0.2)
            elif name.endswith("running_var"):
                t.copy_(torch.rand_like(t) + 0.5)
    return module


def _pair(name, transpose=False):
    make_conv, make_norm, make_act, shape = BLOCKS[name]
    torch_block = _randomize(nn.Sequential(OrderedDict(conv=make_conv(), norm=make_norm(), act=make_act()))).to(DTYPE)
    copy_ = copy.deepcopy(torch_block)
    cls = ConvTransposeNormAct if transpose else ConvNormAct
    return torch_block, cls.from_torch(copy_.conv, copy_.norm, copy_.act), shape


def _step(module, x, upstream):
    x = x.clone().requires_grad_()
    y = module(x)
    y.backward(upstream)
    return y.detach(), x.grad, {k: p.grad.clone() for k, p in module.named_parameters()}


def _assert_same_step(torch_block, block, x):
    with torch.no_grad():
        upstream = torch.randn_like(copy.deepcopy(torch_block)(x))
    y_t, gx_t, gp_t = _step(torch_block, x, upstream)
    y_m, gx_m, gp_m = _step(block, x, upstream)
    tolerances.assert_close(y_m, y_t, "norm_act", "forward", DTYPE, "output")
    tolerances.assert_close(gx_m, gx_t, "norm_act", "grad", DTYPE, "input gradient")
    assert gp_m.keys() == gp_t.keys()
    for key in gp_t:
        tolerances.assert_close(gp_m[key], gp_t[key], "norm_act", "grad", DTYPE, key)
    for module in (torch_block, block):
        module.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_conv_norm_act_matches_torch_in_training_for_several_steps(name):
    torch_block, block, shape = _pair(name)
    for step in range(3):
        _assert_same_step(torch_block.train(), block.train(), torch.randn(shape, dtype=DTYPE) * (step + 1))
    for key, value in torch_block.state_dict().items():  # running statistics, num_batches_tracked
        tolerances.assert_close(block.state_dict()[key], value, "norm_act", "forward", DTYPE, key)


@pytest.mark.parametrize("name", list(BLOCKS))
def test_conv_norm_act_matches_torch_in_eval(name):
    torch_block, block, shape = _pair(name)
    _assert_same_step(torch_block.eval(), block.eval(), torch.randn(shape, dtype=DTYPE))
    with torch.no_grad():
        x = torch.randn(shape, dtype=DTYPE)
        tolerances.assert_close(block(x), torch_block(x), "norm_act", "forward", DTYPE, "no-grad eval")


def test_eval_folding_follows_weight_and_statistics_changes():
    torch_block, block, shape = _pair("resnet_2d")
    torch_block.eval(), block.eval()
    x = torch.randn(shape, dtype=DTYPE)
    with torch.no_grad():
        first = block(x)
        for t in (block.conv.weight, block.norm.running_var, block.norm.bias):
            t.mul_(1.5)  # shared with nothing: change the medkern block only
            changed = block(x)
            assert not torch.equal(changed, first)
            torch_twin = block.to_torch().eval()
            tolerances.assert_close(changed, torch_twin(x), "norm_act", "forward", DTYPE, "after an in-place change")
            first = changed
        block.load_state_dict(torch_block.state_dict())  # copy_ into the same tensors
        tolerances.assert_close(block(x), torch_block(x), "norm_act", "forward", DTYPE, "after load_state_dict")


def test_conv_transpose_norm_act_matches_torch():
    make = (lambda: nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1, bias=False), lambda: nn.BatchNorm2d(4), nn.ReLU,
            (3, 6, 5, 5))
    BLOCKS["dcgan_generator"] = make
    try:
        torch_block, block, shape = _pair("dcgan_generator", transpose=True)
    finally:
        del BLOCKS["dcgan_generator"]
    for _ in range(2):
        _assert_same_step(torch_block.train(), block.train(), torch.randn(shape, dtype=DTYPE))
    _assert_same_step(torch_block.eval(), block.eval(), torch.randn(shape, dtype=DTYPE))
    with torch.no_grad():
        x = torch.randn(shape, dtype=DTYPE)
        out = block(x, output_size=[11, 11])
        tolerances.assert_close(out, torch_block.act(torch_block.norm(torch_block.conv(x, output_size=[11, 11]))),
                                "norm_act", "forward", DTYPE, "output_size")


@pytest.mark.parametrize("cls,rank", [(Conv1dAct, 1), (Conv2dAct, 2), (Conv3dAct, 3)])
def test_conv_act_modules_match_torch(cls, rank):
    block = cls(3, 5, 3, padding=1, act="lrelu", alpha=0.2).to(DTYPE)
    torch_block = block.to_torch()
    assert list(torch_block.state_dict()) == list(block.state_dict()) == ["conv.weight", "conv.bias"]
    _assert_same_step(torch_block, block, torch.randn((2, 3) + (6,) * rank, dtype=DTYPE))


def test_conv_act_residual():
    block = Conv2dAct(4, 4, 3, padding=1, act="relu").to(DTYPE)
    x, skip = torch.randn(2, 4, 5, 5, dtype=DTYPE), torch.randn(2, 4, 5, 5, dtype=DTYPE)
    expected = torch.relu(block.conv(x) + skip)
    tolerances.assert_close(block(x, residual=skip), expected, "norm_act", "forward", DTYPE)


@pytest.mark.parametrize("norm", [nn.BatchNorm2d(4), nn.InstanceNorm2d(4, affine=True), nn.GroupNorm(2, 4)],
                         ids=["batch", "instance", "group"])
def test_norm_act_module(norm):
    norm = _randomize(nn.Sequential(OrderedDict(norm=norm))).norm.to(DTYPE)
    torch_block = nn.Sequential(OrderedDict(norm=norm, act=nn.LeakyReLU(0.1)))
    block = NormAct.from_torch(copy.deepcopy(norm), nn.LeakyReLU(0.1))
    for mode in (True, False):
        _assert_same_step(torch_block.train(mode), block.train(mode), torch.randn(3, 4, 5, 5, dtype=DTYPE))


def test_unbatched_instance_norm():
    norm = nn.InstanceNorm1d(3, affine=True).to(DTYPE)
    block = NormAct.from_torch(copy.deepcopy(norm), nn.ReLU())
    x = torch.randn(3, 10, dtype=DTYPE)
    tolerances.assert_close(block(x), torch.relu(norm(x)), "norm_act", "forward", DTYPE)


def test_state_dict_loads_both_ways():
    torch_block, block, shape = _pair("resnet_2d")
    fresh_torch = copy.deepcopy(torch_block)
    fresh_medkern = ConvNormAct(nn.Conv2d(4, 6, 3, padding=1, bias=False).to(DTYPE), nn.BatchNorm2d(6).to(DTYPE))
    fresh_medkern.load_state_dict(torch_block.state_dict())
    block.train()(torch.randn(shape, dtype=DTYPE))  # changes running statistics and num_batches_tracked
    fresh_torch.load_state_dict(block.state_dict())
    for key, value in block.state_dict().items():
        assert torch.equal(fresh_torch.state_dict()[key], value), key
    for key, value in torch_block.state_dict().items():
        assert torch.equal(fresh_medkern.state_dict()[key], value), key


def test_channels_last_in_channels_last_out():
    block = ConvNormAct(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8)).to(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 9, 9).to(memory_format=torch.channels_last).requires_grad_()
    for mode in (True, False):
        y = block.train(mode)(x)
        assert y.is_contiguous(memory_format=torch.channels_last)
        (gx,) = torch.autograd.grad(y, x, torch.randn_like(y))
        assert gx.is_contiguous(memory_format=torch.channels_last)


def test_nnunet_block_keeps_half_the_activation_bytes_of_torch():
    """Torch keeps the conv output, the norm output and (LeakyReLU) its input; medkern keeps y only."""
    torch_block, block, shape = _pair("nnunet_3d")
    x = torch.randn(shape, dtype=DTYPE, requires_grad=True)
    inputs = (x, *torch_block.parameters(), *block.parameters())
    eager = saved_tensor_bytes(lambda: torch_block(x), inputs)
    fused = saved_tensor_bytes(lambda: block(x), inputs)
    volume = x.numel() // 3 * 4 * x.element_size()  # one tensor of the block's output size
    assert fused <= volume + 1024 and eager >= 2 * volume, (fused, eager, volume)


@pytest.mark.parametrize("act", [nn.GELU(approximate="tanh"), nn.Softplus(beta=2), nn.Hardswish()])
def test_from_torch_refuses_activations_it_cannot_match(act):
    with pytest.raises(ValueError, match="no medkern activation computes"):
        ConvNormAct.from_torch(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2), act)


def test_mismatched_channels_and_wrong_modules_are_refused():
    with pytest.raises(ValueError, match="norm has 3 channels, conv has 2 outputs"):
        ConvNormAct(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(3))
    with pytest.raises(TypeError, match="conv must be one of"):
        ConvNormAct(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with pytest.raises(TypeError, match="norm must be a torch BatchNorm"):
        NormAct(nn.LayerNorm(4))
    with pytest.raises(TypeError, match="conv must be one of"):
        ConvAct(nn.ConvTranspose2d(2, 2, 1))


def test_modules_run_under_torch_compile():
    block = ConvNormAct(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), act="lrelu", alpha=0.1)
    torch_block = block.to_torch()
    compiled = torch.compile(block, fullgraph=True)
    x = torch.randn(2, 3, 6, 6)
    with medkern.use_backend("cpu"):
        tolerances.assert_close(compiled(x), torch_block(x), "norm_act", "forward", torch.float32)
