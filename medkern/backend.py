"""Choosing which implementation runs an op: C++ (CPU), CUDA C++, Triton or the reference.

``auto`` picks, per tensor: the C++ kernel on CPU; on a GPU, the op's preferred GPU backend
(CUDA C++ unless the op says Triton), falling back to the other, then to the reference.
A backend asked for by name must serve the tensor or the call raises, saying why.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Optional

import torch

from . import _extension

BACKENDS = ("auto", "cuda", "triton", "cpu", "reference")
ENV_VAR = "MEDKERN_BACKEND"


def _initial_backend() -> str:
    name = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        warnings.warn(
            f"medkern: {ENV_VAR}={name!r} is not a backend ({', '.join(BACKENDS)}); using 'auto'",
            RuntimeWarning,
            stacklevel=3,
        )
        return "auto"
    return name


_active = _initial_backend()


def _check_name(name) -> str:
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"medkern.use_backend: unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return name.lower()


class use_backend:
    """Set the backend; as a context manager, restore the previous one on exit.

    >>> medkern.use_backend("reference")          # from now on
    >>> with medkern.use_backend("triton"): ...   # inside the block only
    """

    def __init__(self, name: str):
        global _active
        name = _check_name(name)
        self._previous, _active = _active, name
        self.name = name

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        global _active
        _active = self._previous
        return False

    def __repr__(self):
        return f"medkern.use_backend({self.name!r})"


def active() -> str:
    return _active


def triton_version() -> Optional[str]:
    try:
        import triton
    except Exception:
        return None
    return triton.__version__


def triton_interpreted() -> bool:
    """Whether Triton kernels run in the interpreter (set before Triton was first imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _why_not(backend: str, op: str, device: torch.device) -> Optional[str]:
    """None if ``backend`` can run ``op`` on ``device``, else the reason it cannot."""
    device = torch.device(device)
    if backend == "reference":
        return None
    if backend == "cpu":
        if device.type != "cpu":
            return f"the cpu backend runs CPU tensors, got a tensor on {device}"
        if not _extension.has_kernel(op, "CPU"):
            return f"medkern._C is not loaded ({_extension.load_error}); {_extension.BUILD_HINT}"
        return None
    if backend == "cuda":
        if device.type != "cuda":
            return f"the cuda backend runs CUDA tensors, got a tensor on {device}"
        if not _extension.has_kernel(op, "CUDA"):
            if not _extension.loaded():
                return f"medkern._C is not loaded ({_extension.load_error}); {_extension.BUILD_HINT}"
            return "medkern._C was built without CUDA kernels; rebuild with MEDKERN_CUDA=1"
        return None
    if backend == "triton":
        if triton_version() is None:
            return "Triton is not installed"
        if device.type == "cuda":
            return None
        if device.type == "cpu" and triton_interpreted():
            return None
        return (
            f"Triton runs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1 set before "
            f"Triton is imported), got a tensor on {device}"
        )
    raise AssertionError(backend)


def select(op: str, device: torch.device, gpu_preference: tuple[str, ...] = ("cuda", "triton")) -> str:
    """The backend that runs ``op`` on ``device`` under the active setting."""
    return _select(op, str(device), _active, gpu_preference)


# A constant for torch.compile: it is evaluated while tracing, not traced (it asks the
# dispatcher which kernels exist, which Dynamo cannot trace). Cached: what is installed does
# not change while a process runs, and this is on every op call's path.
@torch.compiler.assume_constant_result
def _select(op: str, device: str, active: str, gpu_preference: tuple[str, ...]) -> str:
    return _select_cached(op, device, active, gpu_preference)


@functools.lru_cache(maxsize=None)
def _select_cached(op: str, device: str, active: str, gpu_preference: tuple[str, ...]) -> str:
    if active != "auto":
        reason = _why_not(active, op, device)
        if reason is not None:
            raise RuntimeError(f"medkern.{op}: backend {active!r} cannot run here: {reason}")
        return active
    candidates = gpu_preference if torch.device(device).type == "cuda" else ("cpu",)
    for backend in candidates:
        if _why_not(backend, op, device) is None:
            return backend
    return "reference"


def check_traceable(op: str, chosen: str, device: torch.device) -> None:
    """Raises if torch.compile is tracing a call that Triton's interpreter would run (it cannot be traced)."""
    if chosen == "triton" and torch.device(device).type == "cpu" and torch.compiler.is_compiling():
        raise RuntimeError(
            f"{op}: Triton's interpreter (the triton backend on CPU tensors) cannot be traced by "
            "torch.compile; compile with the cpu or reference backend"
        )
