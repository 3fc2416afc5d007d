"""FIR resampling modules on medkern.ops.upfirdn2d: Upfirdn2d, Upsample2d, Downsample2d and Blur.

Each keeps its filter in a buffer named ``filter`` (saved in the state_dict, moved by ``.to``).
A filter given as taps (a sequence of numbers) is separable and normalized to sum 1 over the 2-d
filter; a tensor is used as given.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

from ..ops.upfirdn2d import check_filter, downsample2d, factors, filter2d, fir_filter, paddings, upfirdn2d, upsample2d

FilterLike = Union[Sequence[float], torch.Tensor, None]
DEFAULT_TAPS = (1, 3, 3, 1)  # StyleGAN's binomial low-pass filter


class _FIRModule(nn.Module):
    filter: torch.Tensor

    def __init__(self, f: FilterLike, flip_filter: bool, gain: float, padding, name: str):
        super().__init__()
        if f is None:
            f = torch.ones(1)
        elif not isinstance(f, torch.Tensor):
            f = fir_filter(f)
        check_filter(f"medkern.nn.{name}", f, f)  # fail now, not at forward (f is its own device)
        self.register_buffer("filter", f.detach().clone())
        self.flip_filter, self.gain = flip_filter, gain
        self.padding = paddings(f"medkern.nn.{name}", padding)

    def extra_repr(self) -> str:
        return f"filter={tuple(self.filter.shape)}, padding={self.padding}, gain={self.gain}"


class Upfirdn2d(_FIRModule):
    """:func:`medkern.ops.upfirdn2d` with a fixed filter: upsample, pad, filter, downsample."""

    def __init__(self, f: FilterLike = None, up=1, down=1, padding=0, flip_filter: bool = False, gain: float = 1):
        super().__init__(f, flip_filter, gain, padding, "Upfirdn2d")
        self.up = factors("medkern.nn.Upfirdn2d", up, "up")
        self.down = factors("medkern.nn.Upfirdn2d", down, "down")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.filter, self.up, self.down, self.padding, self.flip_filter, self.gain)

    def extra_repr(self) -> str:
        return f"up={self.up}, down={self.down}, " + super().extra_repr()


class Upsample2d(_FIRModule):
    """:func:`medkern.ops.upsample2d`: ``factor`` times the size, filtered (default taps 1, 3, 3, 1)."""

    def __init__(self, factor=2, f: FilterLike = DEFAULT_TAPS, padding=0, flip_filter: bool = False, gain: float = 1):
        super().__init__(f, flip_filter, gain, padding, "Upsample2d")
        self.factor = factors("medkern.nn.Upsample2d", factor, "factor")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample2d(x, self.filter, self.factor, self.padding, self.flip_filter, self.gain)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, " + super().extra_repr()


class Downsample2d(_FIRModule):
    """:func:`medkern.ops.downsample2d`: filtered (default taps 1, 3, 3, 1), then 1/``factor`` the size."""

    def __init__(self, factor=2, f: FilterLike = DEFAULT_TAPS, padding=0, flip_filter: bool = False, gain: float = 1):
        super().__init__(f, flip_filter, gain, padding, "Downsample2d")
        self.factor = factors("medkern.nn.Downsample2d", factor, "factor")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return downsample2d(x, self.filter, self.factor, self.padding, self.flip_filter, self.gain)

    def extra_repr(self) -> str:
        return f"factor={self.factor}, " + super().extra_repr()


class Blur(_FIRModule):
    """:func:`medkern.ops.filter2d`: a low-pass filter (default taps 1, 3, 3, 1) keeping the size."""

    def __init__(self, f: FilterLike = DEFAULT_TAPS, padding=0, flip_filter: bool = False, gain: float = 1):
        super().__init__(f, flip_filter, gain, padding, "Blur")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return filter2d(x, self.filter, self.padding, self.flip_filter, self.gain)
