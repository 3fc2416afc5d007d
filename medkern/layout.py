"""Channels-last memory layouts by tensor rank, for inputs and for whole models."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def channels_last_format(t: torch.Tensor) -> Optional[torch.memory_format]:
    """The channels-last memory format of a 4-D or 5-D tensor; None for other ranks."""
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim())


def to_channels_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` laid out channels-last if it is 4-D or 5-D; other tensors as they are."""
    layout = channels_last_format(t)
    return t.contiguous(memory_format=layout) if layout is not None else t


def model_to_channels_last(model: nn.Module) -> nn.Module:
    """Lays out ``model``'s 4-D and 5-D parameters and buffers channels-last, in place (the Parameter
    objects stay, so an optimizer built on them still holds them). ``Module.to(memory_format=)``
    takes one format for all ranks; a 3-D convolution's weight needs channels_last_3d."""
    return model._apply(to_channels_last)
