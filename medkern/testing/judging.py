"""What every op's testing module shares: the seeded random upstream gradients of a run, and
judging a run's outputs against the oracle's by the tolerance table (medkern.tolerances)."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .. import tolerances


def seeded_noise(seed: int, noise_dtype: Optional[torch.dtype] = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """noise(like): standard normal values shaped, typed and placed as ``like``, drawn from a
    generator seeded with ``seed`` and representable in ``noise_dtype`` (default: like's dtype), so
    a kernel and its oracle (in a wider dtype) get the same values."""
    gen = torch.Generator().manual_seed(seed)

    def noise(like: torch.Tensor) -> torch.Tensor:
        values = torch.randn(like.shape, generator=gen, dtype=torch.float64).to(noise_dtype or like.dtype)
        return values.to(like.dtype).to(like.device)

    return noise


def rounded(expected: torch.Tensor, dtype) -> torch.Tensor:
    """The oracle's value as a kernel of ``dtype`` can give it: rounded to dtype, compared in the
    oracle's dtype, on the CPU."""
    return expected.to(dtype).to(expected.dtype).cpu()


class Judge:
    """Judges a run's outputs, in the order ``outputs`` names them ((name, kind in the tolerance
    table) pairs), against the oracle's, by ``family``'s tolerance entries."""

    def __init__(self, family: str, outputs: tuple):
        self.family, self.outputs = family, outputs

    def worst(self, actual, expected, dtype) -> list[tuple[str, float]]:
        """(output name, largest error / allowed) per output (but those expected None), for ``medkern check``."""
        return [(name, tolerances.within(got.cpu(), rounded(want, dtype), self.family, kind, dtype)[0])
                for (name, kind), got, want in zip(self.outputs, actual, expected) if want is not None]

    def assert_matches(self, actual, expected, dtype, what: str) -> None:
        """Asserts each output's dtype, shape and values (an expected None: the output is None too)."""
        for got, want, (name, kind) in zip(actual, expected, self.outputs):
            if want is None:
                assert got is None, f"{what}: {name} should be None"
                continue
            assert got.dtype == dtype, f"{what}: {name} has dtype {got.dtype}, expected {dtype}"
            assert got.shape == want.shape, f"{what}: {name} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
            tolerances.assert_close(got.cpu(), rounded(want, dtype), self.family, kind, dtype, msg=f"{what}: {name}")
