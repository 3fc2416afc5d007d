"""How ``medkern check`` exercises the drop-in modules: small torch models of each pattern
``medkern.swap`` fuses, swapped and compared with the original by ``medkern.swapping.compare``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


class _LastStep(nn.Module):
    """An LSTM/GRU followed by a head on the last step (the recurrent modules' pattern)."""

    def __init__(self, recurrent: nn.Module, hidden: int):
        super().__init__()
        self.recurrent, self.head = recurrent, nn.Sequential(nn.Linear(hidden, 3), nn.Tanh())

    def forward(self, x):
        out, _ = self.recurrent(x)
        return self.head(out[:, -1])


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], nn.Module]
    shape: tuple[int, ...]
    train: bool = True


CASES = [
    Case("conv2d-batchnorm-lrelu", lambda: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4),
                                                          nn.LeakyReLU(0.2)), (2, 3, 5, 6)),
    Case("conv2d-batchnorm-relu eval", lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()),
         (2, 3, 5, 6), train=False),
    Case("conv3d-instancenorm-lrelu", lambda: nn.Sequential(nn.Conv3d(2, 4, 3, padding=1),
                                                             nn.InstanceNorm3d(4, affine=True), nn.LeakyReLU(0.01)),
         (2, 2, 4, 3, 5)),
    Case("convtranspose2d-batchnorm-relu", lambda: nn.Sequential(nn.ConvTranspose2d(3, 4, 4, 2, 1),
                                                                  nn.BatchNorm2d(4), nn.ReLU()), (2, 3, 3, 4)),
    Case("conv1d-groupnorm-silu", lambda: nn.Sequential(nn.Conv1d(3, 4, 3), nn.GroupNorm(2, 4), nn.SiLU()),
         (2, 3, 9)),
    Case("conv2d-sigmoid", lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.Sigmoid()), (2, 3, 4, 4)),
    Case("groupnorm-elu", lambda: nn.Sequential(nn.GroupNorm(3, 6), nn.ELU(0.5)), (2, 6, 4)),
    Case("linear-gelu", lambda: nn.Sequential(nn.Linear(5, 4), nn.GELU()), (3, 5)),
    Case("lstm", lambda: _LastStep(nn.LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True), 8),
         (2, 5, 3)),
    Case("gru", lambda: _LastStep(nn.GRU(3, 4, batch_first=True), 4), (2, 5, 3)),
]


def outputs(case: Case, dtype: torch.dtype, device: str) -> list[tuple[str, float]]:
    """(tensor name, error / allowed) of the swapped model against the original, for every output,
    parameter gradient and buffer."""
    from ..swapping import compare, swap

    torch.manual_seed(0)
    model = case.build().to(device)
    swapped = swap(model)
    x = torch.randn(case.shape, device=device)
    result = compare(model, swapped, x, train=case.train, dtype=dtype)
    return [(name, comparison.fraction) for name, comparison in result.items()]
