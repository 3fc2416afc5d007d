"""Checkpoint files: written atomically, read back safely (``weights_only``), checked for format."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT = "medkern.train.checkpoint/1"


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` through a temporary file in the same folder, so an interrupted
    save never leaves a truncated checkpoint where a good one was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"medkern.train: no checkpoint at {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which file, keep the cause
        raise ValueError(f"medkern.train: {str(path)!r} is not a readable checkpoint ({error})") from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"medkern.train: {str(path)!r} is not a medkern training checkpoint "
                         f"(expected format {FORMAT!r}, found {found!r})")
    return state
