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


def check_companion(op: str, name: str, t, like: torch.Tensor, like_name: str, allow_float32: bool = False) -> bool:
    """An optional tensor that goes with ``like``: on its device, with its dtype (or float32 for a
    float16/bfloat16 ``like`` if ``allow_float32``: parameters and states kept in the op-math type).
    Returns whether t was given; its shape is the caller's to check."""
    if t is None:
        return False
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor or None, got {type(t).__name__}")
    if t.device != like.device:
        raise ValueError(f"{op}: {name} must be on {like.device} (the device of {like_name}), got {t.device}")
    widened = allow_float32 and like.dtype in (torch.float16, torch.bfloat16)
    if not (t.dtype == like.dtype or (widened and t.dtype == torch.float32)):
        also = " or float32" if widened else ""
        raise TypeError(f"{op}: {name} must have dtype {like.dtype} (that of {like_name}){also}, got {t.dtype}")
    return True


def check_positive_int(op: str, name: str, value) -> int:
    """``value`` must be an int >= 1 (not a bool); ValueError naming op and name otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{op}: {name} must be an int >= 1, got {value!r}")
    return value


def check_choice(op: str, name: str, value, choices: tuple):
    """``value`` must be one of ``choices``; ValueError naming op, name and the choices otherwise."""
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{op}: {name} must be one of {choices}, got {value!r}")
    return value


def check_positive_ints(op: str, name: str, value, min_length: int = 1) -> tuple[int, ...]:
    """``value`` must be a sequence of at least ``min_length`` ints >= 1; returned as a tuple."""
    ok = isinstance(value, (tuple, list)) and len(value) >= min_length and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    if not ok:
        raise ValueError(f"{op}: {name} must be a tuple of at least {min_length} ints >= 1, got {value!r}")
    return tuple(value)


def check_probability(op: str, name: str, value) -> float:
    """``value`` must be a real number in [0, 1) (a dropout probability)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{op}: {name} must be a number in [0, 1), got {value!r}")
    return float(value)
