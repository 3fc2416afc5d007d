"""Seeds, the random-number state a training run depends on, and deterministic mode.

An exact resume restores every generator a run draws from: Python's ``random``, NumPy's global
generator, torch's CPU generator, every CUDA device's generator, and any ``torch.Generator`` the
data pipeline owns (a DataLoader's or its sampler's). States are stored as tensors and plain
Python values so that checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterable, Iterator

import numpy as np
import torch

# cuBLAS needs this workspace setting to be deterministic (CUDA >= 10.2)
_CUBLAS_WORKSPACE = ":4096:8"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device) with ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"medkern.train.seed_everything: seed must be an int >= 0, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too


def _numpy_state() -> tuple:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)


def _set_numpy_state(state: tuple) -> None:
    kind, keys, pos, has_gauss, cached = state
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def capture_rng(generators: Iterable[torch.Generator] = ()) -> dict:
    """Every global generator's state, plus the given generators' (in order)."""
    return {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": [g.get_state() for g in generators],
    }


def restore_rng(state: dict, generators: Iterable[torch.Generator] = ()) -> None:
    """Put back what :func:`capture_rng` captured; the generators must be the same ones, in order."""
    generators = list(generators)
    if len(generators) != len(state["generators"]):
        raise ValueError("medkern.train: the checkpoint's data pipeline had "
                         f"{len(state['generators'])} torch.Generator(s), this one has {len(generators)}; "
                         "resume with the same DataLoader and sampler settings")
    random.setstate(state["python"])
    _set_numpy_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for generator, saved in zip(generators, state["generators"]):
        generator.set_state(saved)


def loader_generators(loader) -> list[torch.Generator]:
    """The torch.Generators a DataLoader draws its order and worker seeds from, if it owns any."""
    found = []
    for owner in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None),
                  getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[None]:
    """Deterministic kernels while the block runs (torch raises on ops that have none); the
    previous settings come back afterwards, so a Trainer does not change the process for good."""
    if not enabled:
        yield
        return
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        if saved[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4]
