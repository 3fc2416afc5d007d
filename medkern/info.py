"""What this medkern installation can run: ``medkern.info()`` and ``medkern info``."""

from __future__ import annotations

import torch

from . import _extension, backend


def info() -> dict:
    """Versions, the compiled extension, CUDA kernels and their architectures, Triton, the GPU,
    and the active backend, as a dict (``medkern info`` prints it)."""
    import medkern

    gpu = None
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        gpu = f"{torch.cuda.get_device_name(index)} (sm_{major}{minor})"
    return {
        "medkern": medkern.__version__,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "extension_loaded": _extension.loaded(),
        "extension_error": _extension.load_error,
        "cpu_kernels": _extension.has_kernel("bias_act", "CPU"),
        "cuda_kernels": _extension.has_cuda() and _extension.has_kernel("bias_act", "CUDA"),
        "cuda_archs": _extension.cuda_archs(),
        "cuda_version": _extension.cuda_version(),
        "triton": backend.triton_version(),
        "triton_interpreter": backend.triton_interpreted(),
        "gpu": gpu,
        "backend": backend.active(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_kernels_for": getattr(_extension._C, "cpu_capability", None),  # medkern's kernel variant in use
        "rnn_cpu_gemm": _extension.rnn_cpu_gemm(),
        "threads": torch.get_num_threads(),
    }


def format_info(facts: dict) -> str:
    width = max(map(len, facts))
    return "\n".join(f"{key:<{width}}  {value}" for key, value in facts.items() if value is not None or key == "gpu")
