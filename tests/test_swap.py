"""medkern.swap / swap_report / verify on small hand-written models: what is found, what is left
and why, that state is untouched, and that the swapped model computes what the original does."""

import copy
import io
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import medkern
from medkern.swapping.rewrite import SwappedForward


def blocks(model):
    return medkern.swap_report(model).counts()


def left_reasons(model):
    return [str(entry) for entry in medkern.swap_report(model).left]


def check_same_state(original, swapped):
    a, b = original.state_dict(), swapped.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


class Stem(nn.Module):
    """Attributes used in sequence in forward, with functional activations."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.gn = nn.GroupNorm(2, 8)
        self.conv3 = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(4, 6)

    def forward(self, x):
        x = F.leaky_relu(self.bn1(self.conv1(x)), 0.2)
        x = self.gn(self.conv2(x)).relu()
        x = torch.sigmoid(self.conv3(x))
        return torch.tanh(self.fc(x.mean((2, 3))))


def test_sequential_patterns_are_fused_with_state_and_keys_unchanged():
    model = nn.Sequential(
        nn.Conv3d(2, 8, 3, padding=1), nn.InstanceNorm3d(8, affine=True), nn.LeakyReLU(0.01),
        nn.ConvTranspose3d(8, 4, 2, stride=2), nn.BatchNorm3d(4), nn.Dropout(0.0), nn.ReLU(),
        nn.Conv3d(4, 4, 1), nn.SiLU(), nn.GroupNorm(2, 4), nn.ELU(0.5), nn.Flatten(), nn.Linear(4 * 8 ** 3, 3),
        nn.GELU()).double()
    swapped = medkern.swap(model)
    assert blocks(swapped) == {"ConvNormAct": 1, "ConvTransposeNormAct": 1, "ConvAct": 1, "NormAct": 1, "LinearAct": 1}
    report = medkern.swap_report(swapped)
    assert report.swapped[0].modules == ("0", "1", "2")
    assert report.swapped[1].modules == ("3", "4", "6")  # Dropout(p=0) is skipped inside the pattern
    assert report.left == []
    check_same_state(model, swapped)
    assert [n for n, _ in swapped.named_modules()] == [n for n, _ in model.named_modules()]
    x = torch.randn(2, 2, 4, 4, 4, dtype=torch.float64)
    for train in (True, False):
        result = medkern.verify(model, swapped, x, train=train)
        assert result.ok and any(name.startswith("grad:") for name in result)
    assert "forward" not in model.__dict__  # inplace=False: the original is untouched


def test_attribute_patterns_and_functional_activations():
    model = Stem().double()
    swapped = medkern.swap(model)
    assert blocks(swapped) == {"ConvNormAct": 2, "ConvAct": 1, "LinearAct": 1}
    fused = swapped.__dict__
    assert (fused["_medkern_fused_0"].act, fused["_medkern_fused_0"].alpha) == ("lrelu", 0.2)
    assert fused["_medkern_fused_0"].conv is swapped.conv1 and fused["_medkern_fused_0"].norm is swapped.bn1
    assert fused["_medkern_fused_1"].act == "relu" and fused["_medkern_fused_2"].act == "sigmoid"
    assert fused["_medkern_fused_3"].act == "tanh"
    x = torch.randn(3, 3, 7, 5, dtype=torch.float64)
    medkern.verify(model, swapped, x, train=True)
    medkern.verify(model, swapped, x, train=False)  # eval: the BatchNorm is folded into conv1


def test_output_used_twice_is_left_and_reported():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.act = nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU()

        def forward(self, x):
            y = self.bn(self.conv(x))
            return self.act(y) + y

    model = Branch().double()
    swapped = medkern.swap(model)
    # conv -> bn is still exact to fuse (the conv output feeds only the norm); the activation is not
    assert blocks(swapped) == {"ConvNormAct": 1}
    assert swapped.__dict__["_medkern_fused_0"].act == "linear"
    assert any("also used elsewhere" in reason for reason in left_reasons(swapped))
    medkern.verify(model, swapped, torch.randn(2, 2, 6, 6, dtype=torch.float64))


@pytest.mark.parametrize("act, reason", [(nn.PReLU(), "PReLU"), (nn.GELU(approximate="tanh"), "GELU"),
                                         (nn.Softplus(beta=2), "Softplus"), (nn.Hardswish(), "Hardswish")])
def test_activation_without_an_exact_medkern_twin_is_left(act, reason):
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), act).double()
    swapped = medkern.swap(model)
    assert blocks(swapped) == {"ConvNormAct": 1}  # conv + norm, the activation runs as before
    [left] = left_reasons(swapped)
    assert left.startswith("0 -> 1 -> 2: ") and reason in left
    medkern.verify(model, swapped, torch.randn(2, 2, 6, 6, dtype=torch.float64))


def test_functional_activation_with_other_parameters_is_left():
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 3, 3)

        def forward(self, x):
            return F.softplus(self.conv(x), beta=3.0)

    swapped = medkern.swap(Model())
    assert blocks(swapped) == {}
    assert any("beta=3.0" in reason for reason in left_reasons(swapped))


def test_modules_with_hooks_are_left():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU())
    calls = []
    model[0].register_forward_hook(lambda module, args, output: calls.append(1))
    swapped = medkern.swap(model)
    assert blocks(swapped) == {}
    assert any("hooks" in reason for reason in left_reasons(swapped))
    swapped(torch.randn(1, 2, 5, 5))
    assert calls == [1]


def test_untraceable_module_keeps_its_forward_and_its_children_are_swapped():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())

        def forward(self, x):
            if x.sum() > 0:  # fx cannot trace a branch on tensor values
                return self.block(x)
            return self.block(-x)

    model = DataDependent().double()
    swapped = medkern.swap(model)
    assert blocks(swapped) == {"ConvNormAct": 1}
    assert "forward" not in swapped.__dict__ and isinstance(swapped.block.__dict__["forward"], SwappedForward)
    [left] = left_reasons(swapped)
    assert left.startswith("<model>: torch.fx cannot trace")
    medkern.verify(model, swapped, torch.randn(2, 2, 5, 5, dtype=torch.float64))


def test_forward_reading_the_training_flag_is_left():
    class ModeDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act = nn.Conv2d(2, 4, 3), nn.ReLU()

        def forward(self, x):
            y = self.act(self.conv(x))
            return y * 2 if self.training else y

    model = ModeDependent().double()
    swapped = medkern.swap(model)
    assert blocks(swapped) == {} and "train/eval mode" in left_reasons(swapped)[0]
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    for train in (True, False):
        medkern.verify(model, swapped, x, train=train)


def test_forward_branching_on_an_argument_is_left():
    class OptionalSkip(nn.Module):  # like MONAI's UpCat: a trace would freeze one branch
        def __init__(self):
            super().__init__()
            self.convs = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
            self.up = nn.Conv2d(2, 4, 1)

        def forward(self, x, skip=None):
            x = self.up(x)
            if skip is not None and isinstance(skip, torch.Tensor):
                x = x + skip
            return self.convs(x)

    model = OptionalSkip().double()
    swapped = medkern.swap(model)
    assert blocks(swapped) == {"ConvAct": 1}  # inside convs, traced on its own
    assert left_reasons(swapped)[0] == "<model>: forward tests whether 'skip' is None"
    x, skip = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(1, 4, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(swapped(x, skip), model(x, skip))
    torch.testing.assert_close(swapped(x), model(x))


def _add_skip(y, skip):  # a module-level helper a forward calls
    return y + skip if isinstance(skip, torch.Tensor) else y


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1)


class _NoGrad(_Block):
    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        with torch.no_grad():
            return self.head(y)


class _NoGradHelper(_Block):
    @torch.no_grad()
    def _head(self, y):
        return self.head(y)

    def forward(self, x):
        return self._head(torch.relu(self.bn(self.conv(x))))


class _Random(_Block):  # stochastic depth with Python's random
    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return y if random.random() < 0.5 else self.head(y)


class _Helper(_Block):
    def forward(self, x):
        return _add_skip(self.head(torch.relu(self.bn(self.conv(x)))), x.repeat(1, 2, 1, 1))


@pytest.mark.parametrize("cls, reason", [
    (_NoGrad, "forward has a 'with' block"),
    (_NoGradHelper, "enters a grad-mode or autocast context"),
    (_Random, "forward reads 'random'"),
    (_Helper, "_add_skip tests 'skip' with isinstance()")])
def test_forward_whose_trace_would_freeze_python_behaviour_is_left(cls, reason):
    model = cls().double()
    swapped = medkern.swap(model)
    assert blocks(swapped) == {} and "forward" not in swapped.__dict__
    assert reason in left_reasons(swapped)[0]


def test_forward_with_keyword_only_or_variadic_parameters_is_left():
    class Variadic(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.act = nn.Conv2d(2, 4, 3), nn.ReLU()

        def forward(self, x, *extra, scale=1.0):
            return self.act(self.conv(x)) * scale

    swapped = medkern.swap(Variadic())
    assert blocks(swapped) == {} and "keyword-only or variadic" in left_reasons(swapped)[0]


def test_python_attribute_changed_after_the_swap_runs_the_original_forward():
    class FadeIn(nn.Module):  # ProGAN's fade-in: alpha is read as a constant by the trace
        def __init__(self):
            super().__init__()
            self.conv, self.alpha = nn.Conv2d(2, 2, 3, padding=1), 0.25

        def forward(self, x):
            return self.alpha * F.leaky_relu(self.conv(x), 0.2) + (1 - self.alpha) * x

    model = FadeIn().double()
    swapped = medkern.swap(model)
    assert blocks(swapped) == {"ConvAct": 1}
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(swapped(x), model(x))
    model.alpha = swapped.alpha = 0.75
    torch.testing.assert_close(swapped(x), model(x))


def test_hooks_added_after_the_swap_or_on_skipped_modules_are_called():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Identity(), nn.ReLU())
    calls = []
    model[1].register_forward_hook(lambda *args: calls.append("identity"))
    swapped = medkern.swap(model)
    assert blocks(swapped) == {}  # the hook on the skipped Identity keeps the pattern unfused
    plain = medkern.swap(nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU()))
    assert blocks(plain) == {"ConvAct": 1}
    plain[0].register_forward_hook(lambda *args: calls.append("conv"))
    x = torch.randn(1, 2, 5, 5)
    swapped(x), plain(x)
    assert calls == ["identity", "conv"]
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, *args: calls.append(type(module)))
    try:
        medkern.swap(nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU()))(x)
    finally:
        handle.remove()
    assert nn.Conv2d in calls  # a global hook sees every module, as without the swap


def test_subclassed_activation_is_not_taken_for_its_base():
    class ScaledLReLU(nn.LeakyReLU):
        def forward(self, x):
            return super().forward(x) * 2 ** 0.5

    model = nn.Sequential(nn.Conv2d(2, 4, 3), ScaledLReLU(0.2)).double()
    swapped = medkern.swap(model)
    assert blocks(swapped) == {} and "ScaledLReLU" in left_reasons(swapped)[0]
    medkern.verify(model, swapped, torch.randn(1, 2, 5, 5, dtype=torch.float64))


def test_eval_batchnorm_fold_follows_weights_updated_through_data_and_mixed_precision():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    swapped = medkern.swap(model)
    x = torch.randn(2, 2, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(swapped(x), model(x))
        for module in (model, swapped):
            for p in module.parameters():
                p.data.mul_(0.5)  # an EMA teacher's update: no version counter bump
        torch.testing.assert_close(swapped(x), model(x))
    with torch.inference_mode():
        torch.testing.assert_close(swapped(x), model(x))
    model[0].to(torch.bfloat16), swapped[0].to(torch.bfloat16)  # the BatchNorm stays float32
    xb = x.to(torch.bfloat16)
    with torch.no_grad():
        expected = model[2](model[1](model[0](xb).float()))
        torch.testing.assert_close(swapped(xb).float(), expected, rtol=2e-2, atol=2e-2)


def test_block_feeding_an_in_place_op_does_not_keep_its_output():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.act = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.LeakyReLU(0.1)

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class Parent(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Hardswish(inplace=True))
            self.b = Block()

        def forward(self, x):
            y = self.b(self.a(x))
            y.mul_(2)  # overwrites what b returns
            return y

    model = Parent().double()
    swapped = medkern.swap(model)
    # the parent's forward runs the Sequential's pattern: Hardswish(inplace=True) overwrites its output
    assert swapped.__dict__["_medkern_fused_0"].memory_saving is False
    # b's own forward returns its block's output, which the parent's mul_ overwrites
    assert swapped.b.__dict__["_medkern_fused_0"].memory_saving is False
    medkern.verify(model, swapped, torch.randn(2, 2, 6, 6, dtype=torch.float64))
    # a block feeding a convolution keeps its output (which the convolution keeps anyway); a block
    # whose output leaves the forward keeps its input, since the caller may overwrite the output
    chain = medkern.swap(nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.LeakyReLU(0.1),
                                       nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)))
    assert chain.__dict__["_medkern_fused_0"].memory_saving is True
    assert chain.__dict__["_medkern_fused_1"].memory_saving is False
    out = chain(torch.randn(2, 2, 6, 6))
    out /= 2  # the caller's in-place op: backward still works
    out.sum().backward()


def test_include_and_exclude_select_patterns():
    model = Stem()
    # without ConvNormAct, the next pattern at each norm is its NormAct
    assert blocks(medkern.swap(model, exclude="ConvNormAct")) == {"NormAct": 2, "ConvAct": 1, "LinearAct": 1}
    assert blocks(medkern.swap(model, include=["conv3", "fc"])) == {"ConvAct": 1, "LinearAct": 1}
    assert blocks(medkern.swap(model, exclude=["bn*"])) == {"ConvNormAct": 1, "ConvAct": 1, "LinearAct": 1}
    excluded = medkern.swap(model, exclude="fc")
    assert any(reason.endswith("excluded (exclude='fc')") for reason in left_reasons(excluded))
    prelu = medkern.swap(nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.PReLU()), exclude="ConvNormAct")
    assert len([r for r in left_reasons(prelu) if "PReLU" in r]) == 1  # seen from conv and from norm: once
    with pytest.raises(TypeError, match="medkern.swap: include must be a string or an iterable of strings"):
        medkern.swap(model, include=[1])


def test_recurrent_modules_become_medkern_modules():
    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(3, 5, num_layers=2, batch_first=True, bidirectional=True)
            self.head = nn.Sequential(nn.Linear(10, 4), nn.ReLU(), nn.Linear(4, 2))

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[:, -1])

    model = Classifier().double()
    swapped = medkern.swap(model)
    assert type(swapped.lstm) is medkern.nn.LSTM
    assert blocks(swapped) == {"medkern.nn.LSTM": 1, "LinearAct": 1}
    check_same_state(model, swapped)
    medkern.verify(model, swapped, torch.randn(3, 6, 3, dtype=torch.float64))
    assert type(medkern.swap(nn.GRU(3, 4))) is medkern.nn.GRU
    assert type(medkern.swap(model, exclude="lstm").lstm) is nn.LSTM


def test_inplace_swap_keeps_parameter_objects():
    model = Stem()
    parameters = list(model.parameters())
    assert medkern.swap(model, inplace=True) is model
    assert all(a is b for a, b in zip(parameters, model.parameters()))
    assert isinstance(model.__dict__["forward"], SwappedForward)


class TwoAndThreeD(nn.Module):
    """A 2D and a 3D convolution path: channels_last means another format for each rank."""

    def __init__(self):
        super().__init__()
        self.flat = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.volume = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.InstanceNorm3d(4, affine=True),
                                    nn.LeakyReLU(0.01), nn.ConvTranspose3d(4, 3, 2, stride=2), nn.BatchNorm3d(3),
                                    nn.SiLU())
        self.head = nn.Linear(4 + 3, 2)

    def forward(self, image, scan):
        features = torch.cat([self.flat(image).mean((2, 3)), self.volume(scan).mean((2, 3, 4))], 1)
        return self.head(features)


@pytest.mark.parametrize("inplace", [False, True])
def test_channels_last_lays_out_the_weights_by_rank_and_the_model_computes_the_same(inplace):
    model = TwoAndThreeD().double()
    original = copy.deepcopy(model)
    parameters = list(model.parameters())
    swapped = medkern.swap(model, inplace=inplace, channels_last=True)
    check_same_state(original, swapped)  # the same keys and values, only the strides differ
    assert swapped.flat[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert swapped.volume[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert swapped.volume[3].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert swapped.head.weight.is_contiguous()
    assert all(a is b for a, b in zip(parameters, swapped.parameters())) == inplace
    report = medkern.swap_report(swapped)
    assert report.channels_last and "weights laid out channels-last" in str(report)
    assert blocks(swapped) == {"ConvNormAct": 2, "ConvTransposeNormAct": 1}

    # default-layout inputs: the convolutions follow their weights, so the blocks run channels-last
    # (in float32: ATen's float64 convolutions on CPU ignore the weight's layout)
    image, scan = torch.randn(2, 2, 5, 7, dtype=torch.float64), torch.randn(2, 2, 3, 4, 5, dtype=torch.float64)
    single = copy.deepcopy(swapped).float()
    assert single.flat(image.float()).is_contiguous(memory_format=torch.channels_last)
    assert single.volume(scan.float()).is_contiguous(memory_format=torch.channels_last_3d)
    for train in (True, False):
        medkern.verify(original, swapped, image, scan, train=train)
    medkern.verify(original, swapped, image, scan, dtype=torch.float32)  # where it runs channels-last

    # checkpoints load both ways, and loading keeps the swapped model's layout
    fresh = TwoAndThreeD().double()
    swapped.load_state_dict(fresh.state_dict())
    check_same_state(fresh, swapped)
    assert swapped.volume[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    original.load_state_dict(swapped.state_dict())
    check_same_state(swapped, original)


def test_checkpoints_load_both_ways():
    model, other = Stem(), Stem()
    swapped = medkern.swap(model)
    swapped.load_state_dict(other.state_dict(), strict=True)
    check_same_state(other, swapped)
    fresh = Stem()
    fresh.load_state_dict(swapped.state_dict(), strict=True)
    check_same_state(swapped, fresh)
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(swapped.eval()(x), other.eval()(x))


def test_swapped_model_pickles_copies_converts_and_compiles():
    model = Stem().eval()  # eval: running the models leaves their state as it is
    swapped = medkern.swap(model)
    x = torch.randn(2, 3, 6, 6)
    buffer = io.BytesIO()
    torch.save(swapped, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    copied = copy.deepcopy(swapped)
    for other in (loaded, copied):
        assert other.forward.module is other and other.__dict__["_medkern_fused_0"].conv is other.conv1
        torch.testing.assert_close(other(x), model(x))
    assert medkern.swap_report(loaded).counts() == blocks(swapped)
    # .double() replaces buffers (running statistics): the forward looks them up live
    converted, reference = copy.deepcopy(swapped).double().eval(), copy.deepcopy(model).double().eval()
    torch.testing.assert_close(converted(x.double()), reference(x.double()))
    compiled = torch.compile(swapped, fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))


def test_bad_calls():
    with pytest.raises(TypeError, match="medkern.swap: model must be a torch.nn.Module"):
        medkern.swap("resnet")
    with pytest.raises(TypeError, match="medkern.swap: inplace, memory_saving and channels_last must be bools"):
        medkern.swap(Stem(), inplace=1)
    with pytest.raises(TypeError, match="channels_last must be bools, got bool, bool, str"):
        medkern.swap(Stem(), channels_last="yes")
    swapped = medkern.swap(Stem())
    with pytest.raises(ValueError, match="medkern.swap: model was swapped already"):
        medkern.swap(swapped)
    with pytest.raises(ValueError, match="medkern.swap_report: model was not returned by medkern.swap"):
        medkern.swap_report(Stem())


def test_verify_catches_a_wrong_swap_and_mismatched_state():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.LeakyReLU(0.2)).double()
    swapped = medkern.swap(model)
    swapped.__dict__["_medkern_fused_0"].alpha = 0.21  # a subtly wrong fused block
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    with pytest.raises(AssertionError, match=r"output\[0\]: max error"):
        medkern.verify(model, swapped, x)
    with pytest.raises(ValueError, match="medkern.verify: the state_dicts differ"):
        medkern.verify(model, nn.Sequential(nn.Conv2d(2, 4, 3)), x)
    with pytest.raises(TypeError, match="medkern.verify: dtype must be one of"):
        medkern.verify(model, model, x, dtype=torch.int32)


def test_verify_leaves_inputs_alone_and_compares_input_gradients():
    model = nn.Sequential(nn.ELU(inplace=True), nn.Conv2d(2, 4, 3), nn.ReLU()).double()
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    before = x.clone()
    result = medkern.verify(model, medkern.swap(model), x)
    assert torch.equal(x, before) and "grad:input[0]" in result


def test_verify_in_float32_is_judged_against_float64():
    model = nn.Sequential(nn.Conv2d(2, 8, 3), nn.GroupNorm(4, 8), nn.SiLU(), nn.Conv2d(8, 2, 1))
    result = medkern.verify(model, medkern.swap(model), torch.randn(2, 2, 9, 9), dtype=torch.float32)
    name, worst = result.worst()
    assert 0 < worst.fraction <= 1 and "grad:0.weight" in result
    assert model[0].weight.dtype == torch.float32  # the models passed in are not converted


# --- bias + activation pairs ---------------------------------------------------------------------


class _BiasActs(nn.Module):
    """act(x + bias) written the ways users write it: a viewed bias after a bias-free conv, a 1-D
    bias after a bias-free linear (either operand order), a module activation and functional ones."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bias = nn.Parameter(torch.randn(4))
        self.fc = nn.Linear(4, 5, bias=False)
        self.b2 = nn.Parameter(torch.randn(5))
        self.act = nn.GELU()

    def forward(self, x):
        y = F.leaky_relu(self.conv(x) + self.bias.view(1, -1, 1, 1), 0.2)
        return self.act(self.b2 + self.fc(y.mean((2, 3))))


def test_bias_activation_pairs_are_fused_exactly():
    torch.manual_seed(0)
    model = _BiasActs()
    swapped = medkern.swap(model)
    report = medkern.swap_report(swapped)
    assert [(s.modules, s.block) for s in report.swapped] == [(("bias",), "BiasAct"), (("b2", "act"), "BiasAct")]
    assert list(swapped.state_dict()) == list(model.state_dict())
    medkern.verify(model, swapped, torch.randn(2, 3, 8, 8))  # float64: outputs and every gradient


@pytest.mark.parametrize("shape", [(2, 6), (2, 3, 6), (2, 3, 4, 6)])
def test_a_one_dimensional_bias_runs_along_the_last_dimension(shape):
    class LastDim(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Parameter(torch.randn(6))

        def forward(self, x):
            return torch.tanh(x + self.b)

    model = LastDim()
    swapped = medkern.swap(model)
    assert len(medkern.swap_report(swapped).swapped) == 1
    medkern.verify(model, swapped, torch.randn(shape))


def test_where_the_add_broadcasts_x_up_or_promotes_it_the_original_arithmetic_runs():
    from medkern.swapping.bias_pattern import BiasActCall

    call = BiasActCall((1, -1, 1, 1), "relu", None)
    b = torch.randn(4)
    x_small = torch.randn(4, 1, 1)  # rank 3 < 4: x + b.view(1, 4, 1, 1) has shape (1, 4, 1, 1)
    torch.testing.assert_close(call(x_small, b), torch.relu(x_small + b.view(1, -1, 1, 1)), rtol=0, atol=0)
    x_half = torch.randn(2, 4, 3, 3).half()  # float16 + float32 promotes to float32
    out = call(x_half, b)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.relu(x_half + b.view(1, -1, 1, 1)), rtol=0, atol=0)


def test_additions_that_are_not_bias_activation_pairs_are_left_alone():
    class NotPairs(nn.Module):
        def __init__(self):
            super().__init__()
            self.matrix = nn.Parameter(torch.randn(3, 3))  # not a 1-D bias
            self.b = nn.Parameter(torch.randn(3))

        def forward(self, x):
            a = torch.relu(x + self.matrix)
            s = x + self.b  # used twice: the sum must be kept
            return a + torch.relu(s) + s + torch.relu(x + 1.0)

    model = NotPairs()
    swapped = medkern.swap(model)
    assert medkern.swap_report(swapped).swapped == []
    x = torch.randn(3, 3)
    torch.testing.assert_close(swapped(x), model(x), rtol=0, atol=0)


def test_a_bias_with_an_activation_medkern_does_not_compute_is_reported():
    class TanhGelu(nn.Module):
        def __init__(self):
            super().__init__()
            self.b = nn.Parameter(torch.randn(3))

        def forward(self, x):
            return F.gelu(x + self.b, approximate="tanh")

    report = medkern.swap_report(medkern.swap(TanhGelu()))
    assert report.swapped == [] and len(report.left) == 1 and "tanh" in report.left[0].reason


class _Functional(nn.Module):
    """A forward written with functional calls on the module's own tensors: conv + bias + relu, a
    batch norm with running statistics + lrelu, a weight-standardized conv (a computed weight) into a
    group norm + relu, an instance norm + silu and a linear into a module activation."""

    def __init__(self):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.3), nn.Parameter(torch.randn(8) * 0.1)
        self.g, self.beta = nn.Parameter(torch.rand(8) + 0.5), nn.Parameter(torch.randn(8) * 0.1)
        self.register_buffer("rm", torch.zeros(8))
        self.register_buffer("rv", torch.ones(8))
        self.w2 = nn.Parameter(torch.randn(8, 8, 3, 3) * 0.2)
        self.gw, self.gb = nn.Parameter(torch.rand(8) + 0.5), nn.Parameter(torch.randn(8) * 0.1)
        self.register_buffer("irm", torch.zeros(8))
        self.register_buffer("irv", torch.ones(8))
        self.lw, self.lb = nn.Parameter(torch.randn(5, 8) * 0.3), nn.Parameter(torch.randn(5) * 0.1)
        self.act = nn.Tanh()

    def forward(self, x):
        x = F.relu(F.conv2d(x, self.w1, self.b1, padding=1))
        x = F.leaky_relu(F.batch_norm(x, self.rm, self.rv, self.g, self.beta, True, 0.2, 1e-3), 0.1)
        w = self.w2 - self.w2.mean((1, 2, 3), keepdim=True)
        x = F.group_norm(F.conv2d(x, w, None, 1, "same"), 4, self.gw, self.gb).relu()
        x = F.silu(F.instance_norm(x, self.irm, self.irv, momentum=0.3))
        return self.act(F.linear(x.mean((2, 3)), self.lw, self.lb))


def test_functional_patterns_are_fused_exactly_with_running_statistics_updated_as_torch_does():
    torch.manual_seed(0)
    model = _Functional().double()
    swapped = medkern.swap(model)
    report = medkern.swap_report(swapped)
    assert [(s.modules, s.block) for s in report.swapped] == [
        (("w1", "b1"), "ConvAct"), (("rm", "rv", "g", "beta"), "NormAct"), (("gw", "gb"), "NormAct"),
        (("irm", "irv"), "NormAct"), (("lw", "lb", "act"), "LinearAct")]
    assert report.left == []
    assert "conv2d" in swapped.forward.source  # the conv with a computed weight feeds a norm: it stays
    check_same_state(model, swapped)
    x = torch.randn(4, 3, 9, 7, dtype=torch.float64)
    for train in (True, False):
        assert medkern.verify(model, swapped, x, train=train).ok
    for _ in range(3):  # the running statistics of both functional norms, updated in place
        model(x)
        swapped(x)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(swapped.state_dict()[key], value, rtol=1e-12, atol=1e-12, msg=key)
    assert not torch.equal(model.rm, torch.zeros(8, dtype=torch.float64))


def test_functional_calls_medkern_cannot_run_exactly_are_left_and_reported():
    class Traced(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 2, 3, 3))
            self.w2 = nn.Parameter(torch.randn(4, 4, 3, 3))

        def forward(self, x):
            y = F.relu(F.conv2d(x, self.w, None, x.shape[-1] // 4))  # a stride the trace cannot fix
            z = F.conv2d(y, self.w2, padding=1)
            return F.relu(z) + z  # z is used twice

    model = Traced().double()
    swapped = medkern.swap(model)
    report = medkern.swap_report(swapped)
    assert report.swapped == []
    reasons = left_reasons(swapped)
    assert any("w: " in r and "traced (not constant) stride" in r for r in reasons)
    assert any("w2: " in r and "also used elsewhere" in r for r in reasons)
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(swapped(x), model(x), rtol=0, atol=0)


def test_functional_batch_norm_following_the_module_mode_is_left():
    class ModeDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("rm", torch.zeros(3))
            self.register_buffer("rv", torch.ones(3))

        def forward(self, x):
            return F.relu(F.batch_norm(x, self.rm, self.rv, training=self.training))

    swapped = medkern.swap(ModeDependent())
    assert medkern.swap_report(swapped).swapped == []
    assert any("train/eval mode" in r for r in left_reasons(swapped))


class _MoreFunctional(nn.Module):
    """conv1d and conv3d with "same" padding and keyword-only arguments, a batch norm on its running
    statistics (training=False), an instance norm on its running statistics (use_input_stats=False),
    and a linear whose bias broadcasts (shape (1,)), as F.linear allows."""

    def __init__(self):
        super().__init__()
        self.w1, self.w3 = nn.Parameter(torch.randn(4, 2, 3) * 0.4), nn.Parameter(torch.randn(3, 2, 3, 3, 3) * 0.3)
        self.register_buffer("rm", torch.randn(4) * 0.1)
        self.register_buffer("rv", torch.rand(4) + 0.5)
        self.register_buffer("irm", torch.randn(3) * 0.1)
        self.register_buffer("irv", torch.rand(3) + 0.5)
        self.lw, self.lb = nn.Parameter(torch.randn(5, 4) * 0.3), nn.Parameter(torch.randn(1))

    def forward(self, signal, volume):
        a = F.elu(F.conv1d(input=signal, weight=self.w1, padding="same"))
        a = F.relu(F.batch_norm(a, self.rm, self.rv, training=False))
        v = F.silu(F.conv3d(volume, self.w3, None, 1, "same"))
        v = torch.sigmoid(F.instance_norm(v, self.irm, self.irv, use_input_stats=False))
        return torch.tanh(F.linear(a.mean(2), self.lw, self.lb)), v


def test_functional_conv1d_conv3d_running_statistics_and_a_broadcast_linear_bias():
    torch.manual_seed(0)
    model = _MoreFunctional().double()
    swapped = medkern.swap(model)
    report = medkern.swap_report(swapped)
    assert [s.block for s in report.swapped] == ["ConvAct", "NormAct", "ConvAct", "NormAct", "LinearAct"]
    assert report.left == []
    signal, volume = torch.randn(3, 2, 7, dtype=torch.float64), torch.randn(2, 2, 4, 5, 3, dtype=torch.float64)
    for train in (True, False):
        assert medkern.verify(model, swapped, signal, volume, train=train).ok
    check_same_state(model, swapped)  # running statistics used, not updated
