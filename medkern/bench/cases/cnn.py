"""CNN block cases: a training step (and inference) of the issue's blocks, torch modules vs medkern's.

Each case builds the torch sequence ``nn.Sequential(conv=..., norm=..., act=...)`` and the
medkern block from it (``from_torch``: the same parameter and buffer tensors), and passes x and
the parameters as inputs, so forward+backward is a full training step's gradient computation.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
from torch import nn

from ...nn import ConvNormAct, ConvTransposeNormAct
from ..case import Case, Target, speedup_target


def saved_activation_target(factor: float) -> Target:
    """Bytes kept for backward beyond the inputs at most ``factor`` times eager's."""
    return Target(f"saved activations <= {factor:g}x eager", ("saved_activation_bytes_vs_eager",), maximum=factor)


def block_case(
    name: str,
    description: str,
    make: Callable[[], tuple[nn.Module, nn.Module, nn.Module]],
    shape: tuple[int, ...],
    quick_shape: tuple[int, ...],
    memory_format: torch.memory_format = torch.contiguous_format,
    train: bool = True,
    transpose: bool = False,
    targets: tuple[Target, ...] = (),
) -> Case:
    blocks: dict[str, nn.Module] = {}

    def setup(device: torch.device, dtype: torch.dtype, quick: bool) -> tuple[torch.Tensor, ...]:
        conv, norm, act = make()
        sequence = nn.Sequential(OrderedDict(conv=conv, norm=norm, act=act)).to(device, dtype, memory_format=memory_format)
        fused_cls = ConvTransposeNormAct if transpose else ConvNormAct
        blocks["torch"] = sequence.train(train)
        blocks["medkern"] = fused_cls.from_torch(sequence.conv, sequence.norm, sequence.act).train(train)
        x = torch.randn(quick_shape if quick else shape, device=device, dtype=dtype)
        return (x.to(memory_format=memory_format).requires_grad_(), *sequence.parameters())

    return Case(
        name=f"cnn/{name}",
        family="norm_act",
        description=description,
        setup=setup,
        reference=lambda x, *params: blocks["torch"](x),
        fused=lambda x, *params: blocks["medkern"](x),
        targets=targets,
    )


def nnunet_block():
    return nn.Conv3d(32, 32, 3, padding=1), nn.InstanceNorm3d(32, affine=True), nn.LeakyReLU(0.01)


def resnet_block():
    return nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()


def dcgan_generator_block():
    return nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU()


NNUNET_SHAPE, NNUNET_QUICK = (2, 32, 48, 48, 48), (1, 32, 8, 8, 8)
RESNET_SHAPE, RESNET_QUICK = (8, 64, 56, 56), (2, 64, 8, 8)
DCGAN_SHAPE, DCGAN_QUICK = (16, 128, 16, 16), (2, 128, 4, 4)

CASES = (
    block_case(
        "nnunet_block", "Conv3d(32->32, k3) -> InstanceNorm3d(affine) -> LeakyReLU(0.01), training step",
        nnunet_block, NNUNET_SHAPE, NNUNET_QUICK,
        targets=(speedup_target("fwd_bwd", "eager", 1.3), speedup_target("fwd_bwd", "compile", 1.0),
                 saved_activation_target(0.6)),
    ),
    block_case(
        "nnunet_block_channels_last", "the same, channels_last_3d", nnunet_block, NNUNET_SHAPE, NNUNET_QUICK,
        memory_format=torch.channels_last_3d,
    ),
    block_case(
        "resnet_block", "Conv2d(64->64, k3) -> BatchNorm2d -> ReLU, training step, channels_last",
        resnet_block, RESNET_SHAPE, RESNET_QUICK, memory_format=torch.channels_last,
        targets=(speedup_target("fwd_bwd", "eager", 1.2),),
    ),
    block_case(
        "resnet_block_eval", "the same in eval mode (BatchNorm folded into the convolution)",
        resnet_block, RESNET_SHAPE, RESNET_QUICK, memory_format=torch.channels_last, train=False,
        targets=(speedup_target("fwd", "eager", 1.3),),
    ),
    block_case(
        "dcgan_generator_block", "ConvTranspose2d(128->64, k4, s2, p1) -> BatchNorm2d -> ReLU, training step",
        dcgan_generator_block, DCGAN_SHAPE, DCGAN_QUICK,
        transpose=True, targets=(speedup_target("fwd_bwd", "eager", 1.2),),
    ),
)


def _max_pool_case(name: str, description: str, memory_format: torch.memory_format) -> Case:
    from ...ops.max_pool import max_pool

    def setup(device: torch.device, dtype: torch.dtype, quick: bool) -> tuple[torch.Tensor, ...]:
        x = torch.randn((2, 64, 16, 16) if quick else (16, 64, 64, 64), device=device, dtype=dtype)
        return (x.contiguous(memory_format=memory_format).requires_grad_(),)

    return Case(name=f"cnn/{name}", family="max_pool", description=description, setup=setup,
                reference=lambda x: nn.functional.max_pool2d(x, 3, 2, 1), fused=lambda x: max_pool(x, 3, 2, 1),
                bandwidth_bound=True, tolerance=("max_pool", "forward"))


CASES += (
    _max_pool_case("max_pool2d", "ResNet's stem max-pool (3x3, stride 2, padding 1), 16x64x64x64", torch.contiguous_format),
    _max_pool_case("max_pool2d_channels_last", "the same, channels_last", torch.channels_last),
)
