"""Loading the compiled extension ``medkern._C`` and reporting what it holds.

Importing medkern never fails: if ``_C`` is missing or broken, a single warning says why and
how to build it, and every op runs its plain-PyTorch reference instead.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch

BUILD_HINT = (
    "build it from a checkout with `pip install --no-build-isolation -e .` "
    "(torch must be installed first; see README.md)"
)

_C = None
load_error: Optional[str] = None

try:
    from . import _C  # noqa: F811  (registers the torch.ops.medkern.* schemas and kernels)
except Exception as exc:  # any failure to load is reported, never raised
    load_error = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        f"medkern: the compiled extension medkern._C could not be loaded ({load_error}); "
        f"every op runs its slow plain-PyTorch reference. To get the fused kernels, {BUILD_HINT}.",
        RuntimeWarning,
        stacklevel=2,
    )


def loaded() -> bool:
    return _C is not None


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether ``medkern::op`` has a kernel for ``dispatch_key`` ("CPU", "CUDA")."""
    if _C is None or not hasattr(torch.ops.medkern, op):  # (an _C built before the op was added lacks it)
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"medkern::{op}", dispatch_key)


def has_cuda() -> bool:
    """Whether ``_C`` was built with CUDA kernels."""
    return _C is not None and bool(getattr(_C, "with_cuda", False))


def cuda_archs() -> list[str]:
    """The CUDA architectures ``_C`` was compiled for, as in TORCH_CUDA_ARCH_LIST."""
    if not has_cuda():
        return []
    return [a for a in _C.cuda_archs.replace(";", " ").split() if a]


def cuda_version() -> Optional[str]:
    return _C.cuda_version if has_cuda() else None


def rnn_cpu_gemm(choice: Optional[str] = None) -> Optional[str]:
    """Which GEMM the CPU's RNN kernels use for their fixed weights: "medkern" (its own, chosen
    where MKL runs its generic code path, i.e. on CPUs other than Intel's) or "library" (MKL, or
    at::mm). ``choice`` ("auto", "library", "medkern") sets it for the process, for tests and
    comparisons. None without the extension (or with one built before the setting existed)."""
    if _C is None or not hasattr(_C, "rnn_cpu_gemm"):
        return None
    return _C.rnn_cpu_gemm(choice)
