"""What the generated datasets share: a generator for item ``i`` seeded from (seed, i) alone, so the
data is the same whatever the access order, shuffling or number of DataLoader workers; and the checks
of their index and size arguments."""

from __future__ import annotations

import operator

import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """SplitMix64's finaliser: nearby inputs (seeds 0, 1, 2, ...) give unrelated outputs."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def item_generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator whose state depends only on ``seed`` and ``index``."""
    mixed = _splitmix64(_splitmix64(seed & _MASK64) ^ index)
    return torch.Generator().manual_seed(mixed >> 1)  # 63 bits: manual_seed's safe range


def checked_index(index, length: int, op: str) -> int:
    """``index`` as an int in [0, length), negative indices counting from the end (IndexError otherwise)."""
    try:
        index = operator.index(index)
    except TypeError:
        raise TypeError(f"{op}: index must be an int, got {type(index).__name__}") from None
    if not -length <= index < length:
        raise IndexError(f"{op}: index {index} is out of range for {length} items")
    return index % length


def check_count(value, name: str, op: str, minimum: int = 0) -> int:
    """``value`` after checking it is an int >= ``minimum`` (a length, size or seed)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{op}: {name} must be an int >= {minimum}, got {value!r}")
    return value
