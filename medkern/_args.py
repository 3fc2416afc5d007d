"""Argument checks every op shares, so each error reads the same wherever it is raised."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_float_tensor(op: str, name: str, value) -> None:
    """``value`` must be a float32/float64/float16/bfloat16 tensor (TypeError naming op and name)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must be float32, float64, float16 or bfloat16, got {value.dtype}")
