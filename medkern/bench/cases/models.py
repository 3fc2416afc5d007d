"""Model cases: a training step of a model users already have, as it is (eager and torch.compile)
and after ``medkern.swap`` (the issue's targets: MONAI DynUNet and torchvision ResNet-18); and of
medkern's reference U-Net against its plain-torch twin.

Both models hold the same Parameter objects (the swapped copy's are replaced by the original's),
so every contender differentiates the same inputs; except where swap lays out the copy channels-last
(``*_swap_channels_last``): each twin then differentiates its own copy of the same values. MONAI and
torchvision are the ``bench`` extra's; without them these cases report the ImportError.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Callable

import torch
from torch import nn

from ..case import Case, Target, share_parameters, speedup_target
from ..conv_only import conv_only_twin

MODEL_ROUNDS = 5  # a step takes seconds on CPU: fewer timed rounds than the op cases


def _twin_step_case(name: str, description: str, build_twins: Callable[[bool], tuple[nn.Module, nn.Module]],
                    input_shape: Callable[[bool], tuple[int, ...]], targets: tuple[Target, ...],
                    memory_format: torch.memory_format = torch.contiguous_format, shared: bool = True) -> Case:
    """A training step of a plain-torch model (eager, compile) against its medkern twin (same state_dict
    paths); ``memory_format`` lays out both models' weights and the input alike (e.g. channels_last_3d).
    ``shared``: the twins differentiate the same Parameter objects; if not (the medkern twin keeps
    its weights in another layout), each its own copy of the same values."""
    models: dict[str, nn.Module] = {}

    def setup(device: torch.device, dtype: torch.dtype, quick: bool) -> tuple[torch.Tensor, ...]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI's deprecation notices
            original, fused = (model.to(device, dtype) for model in build_twins(quick))
        if memory_format != torch.contiguous_format:
            original, fused = (model.to(memory_format=memory_format) for model in (original, fused))
        if shared:
            share_parameters(original, fused)
        models["torch"], models["medkern"] = original, fused
        models.pop("conv_only", None)  # built on first use (python -m medkern.bench.ceiling)
        x = torch.randn(input_shape(quick), device=device, dtype=dtype).contiguous(memory_format=memory_format)
        return (x, *original.parameters(), *(() if shared else fused.parameters()))

    def step(which: str):
        def run(x, *params):
            if which == "conv_only" and which not in models:
                models[which] = conv_only_twin(models["torch"])
            with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
                torch.manual_seed(0)  # dropout draws the same masks in every call of every contender
                output = models[which](x)
            return output if isinstance(output, torch.Tensor) else output[0]

        return run

    return Case(name=f"model/{name}", family="norm_act", description=description, setup=setup,
                reference=step("torch"), fused=step("medkern"), targets=targets, tolerance=("model_step", "forward"),
                max_rounds=MODEL_ROUNDS, conv_only=step("conv_only"), shared_parameters=shared)


def _swapped_step_case(name: str, description: str, build: Callable[[bool], nn.Module],
                       input_shape: Callable[[bool], tuple[int, ...]], targets: tuple[Target, ...],
                       memory_format: torch.memory_format = torch.contiguous_format,
                       channels_last: bool = False) -> Case:
    """The model as built against ``medkern.swap(model, channels_last=channels_last)`` of it."""
    from ...swapping import swap

    def build_twins(quick: bool) -> tuple[nn.Module, nn.Module]:
        original = build(quick)
        return original, swap(original, channels_last=channels_last)

    return _twin_step_case(name, description, build_twins, input_shape, targets, memory_format,
                           shared=not channels_last)


UNET_SPEEDUP_TARGET = 1.2  # issue 7: the U-Net on medkern layers at least 1.2x its plain-torch twin


def unet_twins(quick: bool, deep_supervision: bool = False) -> tuple[nn.Module, nn.Module]:
    """(plain-torch twin, medkern) medkern.models.UNet, 3D, the size examples/train_unet.py trains,
    with the same initial weights."""
    from ...models import UNet

    widths = (4, 8, 16) if quick else (16, 32, 64, 128)
    twins = []
    for reference in (True, False):
        torch.manual_seed(0)
        twins.append(UNet(1, 2, spatial_dims=3, widths=widths, deep_supervision=deep_supervision, reference=reference))
    return twins[0], twins[1]


def _dynunet(quick: bool) -> nn.Module:
    from monai.networks.nets import DynUNet

    levels = 3 if quick else 5
    return DynUNet(3, 1, 3, kernel_size=[3] * levels, strides=[1] + [2] * (levels - 1),
                   upsample_kernel_size=[2] * (levels - 1), filters=[8, 16, 32] if quick else None,
                   norm_name=("instance", {"affine": True}), act_name=("leakyrelu", {"negative_slope": 0.01}))


def _resnet18(quick: bool) -> nn.Module:
    from torchvision.models import resnet18

    return resnet18(num_classes=10)


class SignalClassifier(nn.Module):
    """An LSTM classifier of multichannel signals (e.g. 12-lead ECG): 2 bidirectional layers, then an
    MLP head on the last step, written in plain torch as a user would."""

    def __init__(self, leads: int = 12, hidden: int = 128, classes: int = 5):
        super().__init__()
        self.lstm = nn.LSTM(leads, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        features, _ = self.lstm(signals)
        return self.head(features[:, -1])


def _volume_batch(quick: bool) -> tuple[int, ...]:
    return (1, 1, 16, 16, 16) if quick else (2, 1, 48, 48, 48)


def _image_batch(quick: bool) -> tuple[int, ...]:
    return (4, 3, 64, 64) if quick else (16, 3, 128, 128)


# issue 6's targets: the DynUNet step 1.2x as fast as the original, keeping at most 0.75x its bytes for
# backward; the ResNet-18 step 1.15x
DYNUNET_TARGETS = (speedup_target("fwd_bwd", "eager", 1.2),
                   Target("saved for backward <= 0.75x eager", ("saved_bytes_vs_eager",), maximum=0.75))
RESNET_TARGETS = (speedup_target("fwd_bwd", "eager", 1.15),)

CASES = (
    _swapped_step_case(
        "dynunet_step", "MONAI DynUNet (3D, nnU-Net configuration: 5 levels, 32-320 filters, instance norm, "
        "lrelu 0.01), batch 2 x 1 x 48^3: a training step, medkern.swap vs the original",
        _dynunet, _volume_batch, DYNUNET_TARGETS),
    _swapped_step_case(
        "dynunet_step_channels_last", "the same DynUNet step with the model and input in channels_last_3d "
        "(original and swapped alike)",
        _dynunet, _volume_batch, DYNUNET_TARGETS, memory_format=torch.channels_last_3d),
    _swapped_step_case(
        "dynunet_step_swap_channels_last", "the same DynUNet step, the original and the input in the default "
        "layout, against medkern.swap(model, channels_last=True): fusion and the layout change together",
        _dynunet, _volume_batch, DYNUNET_TARGETS, channels_last=True),
    _swapped_step_case(
        "resnet18_step", "torchvision ResNet-18, batch 16 x 3 x 128^2: a training step, medkern.swap vs the original",
        _resnet18, _image_batch, RESNET_TARGETS),
    _swapped_step_case(
        "resnet18_step_channels_last", "the same ResNet-18 step with the model and input in channels_last "
        "(original and swapped alike)",
        _resnet18, _image_batch, RESNET_TARGETS, memory_format=torch.channels_last),
    _swapped_step_case(
        "resnet18_step_swap_channels_last", "the same ResNet-18 step, the original and the input in the default "
        "layout, against medkern.swap(model, channels_last=True): fusion and the layout change together",
        _resnet18, _image_batch, RESNET_TARGETS, channels_last=True),
    _swapped_step_case(
        "lstm_classifier_step", "LSTM signal classifier (12 leads, 2 bidirectional layers of 128, MLP head), "
        "batch 32 x 250 steps: a training step, medkern.swap vs the original",
        lambda quick: SignalClassifier(hidden=16 if quick else 128),
        lambda quick: (2, 10, 12) if quick else (32, 250, 12), ()),
    _twin_step_case(
        "unet3d_step", "medkern.models.UNet (3D, 4 levels of 16-128 filters, instance norm, lrelu 0.01), batch "
        "2 x 1 x 48^3: a training step, medkern layers vs the plain-torch twin",
        unet_twins,  # without deep supervision: the case differentiates one output, which every parameter is in
        _volume_batch,
        (speedup_target("fwd_bwd", "eager", UNET_SPEEDUP_TARGET),)),
)


def custom_model_cases(spec: str, input_shape: tuple[int, ...], channels_last: bool = False) -> tuple[Case, ...]:
    """The swapped-vs-original training step of any model: ``spec`` is ``"package.module:factory"``,
    where ``factory()`` (a class or a function, called without arguments) returns an nn.Module
    taking one tensor of ``input_shape``. ``channels_last``: a second case against
    ``medkern.swap(model, channels_last=True)``, the original and the input in the default layout."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"--model must be 'package.module:factory', got {spec!r}")
    try:
        factory = importlib.import_module(module_name)
        for part in attribute.split("."):
            factory = getattr(factory, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"--model {spec!r}: {error}") from None
    if not callable(factory):
        raise ValueError(f"--model {spec!r} is not callable")

    def build(quick: bool) -> nn.Module:
        model = factory()
        if not isinstance(model, nn.Module):
            raise TypeError(f"--model {spec!r} returned a {type(model).__name__}, not a torch.nn.Module")
        return model

    def shape(quick: bool) -> tuple[int, ...]:
        return input_shape

    described = f"{spec}, input {'x'.join(map(str, input_shape))}: a training step"
    cases = [_swapped_step_case(spec, f"{described}, medkern.swap vs the original", build, shape, ())]
    if channels_last:
        cases.append(_swapped_step_case(
            f"{spec}_swap_channels_last", f"{described}, medkern.swap(model, channels_last=True) vs the original",
            build, shape, (), channels_last=True))
    return tuple(cases)
