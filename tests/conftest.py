"""Test set-up shared by every test file.

Triton kernels run on CPU tensors in Triton's interpreter, whose mode is read when Triton is
first imported: so it is switched on here, before any test imports Triton, unless a GPU is
present (then Triton runs for real) or the caller chose a mode.
"""

import os
import subprocess
import sys
import textwrap

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

import medkern  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def kernel_targets():
    """(device, backend) pairs of the kernel implementations, as pytest params; GPU ones skip without a GPU."""
    return [
        pytest.param(("cpu", "cpu"), id="cpu-cpp"),
        pytest.param(("cpu", "triton"), id="cpu-triton_interpreter"),
        pytest.param(("cuda", "cuda"), id="cuda-cpp", marks=needs_cuda),
        pytest.param(("cuda", "triton"), id="cuda-triton", marks=needs_cuda),
    ]


@pytest.fixture(autouse=True)
def _seed_and_backend():
    """Every test starts from the same seed and the auto backend."""
    torch.manual_seed(0)
    with medkern.use_backend("auto"):
        yield


@pytest.fixture(params=["library", "medkern"])
def rnn_cpu_gemm(request):
    """Runs a test with each choice of GEMMs for the CPU's RNNs: "library" (MKL, F.linear) and
    "medkern" (its packed GEMM per step, oneDNN's linear for the input projection). The choice is
    per process; "auto" is restored after."""
    from medkern import _extension

    if _extension.rnn_cpu_gemm() is None:
        pytest.skip("the compiled extension is not loaded")
    if _extension.rnn_cpu_gemm(request.param) != request.param:
        _extension.rnn_cpu_gemm("auto")
        pytest.skip(f"the {request.param} GEMM is not available on this CPU (medkern's needs AVX2 or AVX-512)")
    yield request.param
    _extension.rnn_cpu_gemm("auto")


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    """``python -c code`` (dedented) in a fresh process; ``env`` entries set variables (None unsets
    one). The caller's MEDKERN_BACKEND does not leak in."""
    full = {k: v for k, v in os.environ.items() if k != "MEDKERN_BACKEND"}
    for key, value in env.items():
        if value is None:
            full.pop(key, None)
        else:
            full[key] = value
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full, capture_output=True, text=True)
