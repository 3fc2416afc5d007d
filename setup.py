"""Builds medkern._C: the CPU kernels always, the CUDA kernels when CUDA can be built.

Switches (environment variables):
  MEDKERN_CUDA=1          build the CUDA kernels or fail saying why; =0 skip them; unset: build
                          them when torch has CUDA and a matching nvcc is found.
  TORCH_CUDA_ARCH_LIST    architectures, e.g. "8.0;9.0+PTX" (the default when no GPU is visible;
                          with a GPU, torch's default: the visible GPUs' architectures).
  MAX_JOBS                parallel compile jobs (default: what memory allows, at most the cores).
"""

import glob
import os
import platform
import re
import subprocess
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;9.0+PTX"
# CPU kernels (csrc/cpu/*_kernel.cpp) are compiled once more for each of these, with ATen's
# flags for it, and the best the CPU supports is picked at run time (csrc/cpu/capability.h).
MEDKERN_CPU_CAPABILITIES = (
    {
        "AVX2": ["-mavx2", "-mfma", "-mf16c"],
        "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"],
    }
    if platform.machine().lower() in ("x86_64", "amd64")
    else {}
)


def fail(message):
    sys.exit(f"medkern build: {message}")


# torch looks for the toolkit through CUDA_HOME, else through `which nvcc`, which may be a
# wrapper script outside the toolkit (/usr/local/bin/nvcc); the standard location comes first.
if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")) and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:
    fail(
        "PyTorch must be installed before medkern is built "
        "(pip install torch, then pip install --no-build-isolation .)"
    )


def nvcc_version(cuda_home):
    nvcc = os.path.join(cuda_home, "bin", "nvcc")
    if not os.path.exists(nvcc):
        return None
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"release (\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def why_no_cuda():
    """None if the CUDA kernels can be built, else the reason."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} was built without CUDA"
    if not CUDA_HOME:
        return "no CUDA toolkit found (set CUDA_HOME, e.g. CUDA_HOME=/usr/local/cuda)"
    found = nvcc_version(CUDA_HOME)
    if found is None:
        return f"no usable nvcc under CUDA_HOME={CUDA_HOME}"
    if not glob.glob(os.path.join(CUDA_HOME, "lib*", "libcudart.so")):
        return f"no libcudart.so under CUDA_HOME={CUDA_HOME} (lib64/ or lib/); set CUDA_HOME to the toolkit"
    wanted = int(torch.version.cuda.split(".")[0])
    if found[0] != wanted:
        return (
            f"nvcc {found[0]}.{found[1]} (CUDA_HOME={CUDA_HOME}) does not match the CUDA "
            f"{torch.version.cuda} torch was built with; install a CUDA {wanted}.x toolkit or "
            f"point CUDA_HOME at one"
        )
    return None


def want_cuda():
    switch = os.environ.get("MEDKERN_CUDA", "").strip()
    if switch not in ("", "0", "1"):
        fail(f"MEDKERN_CUDA must be 0, 1 or unset, got {switch!r}")
    if switch == "0":
        print("medkern build: MEDKERN_CUDA=0, skipping the CUDA kernels")
        return False
    reason = why_no_cuda()
    if reason is None:
        return True
    if switch == "1":
        fail(f"MEDKERN_CUDA=1 but the CUDA kernels cannot be built: {reason}")
    print(f"medkern build: building without CUDA kernels: {reason}")
    return False


def nvidia_wheel_includes():
    """Include folders of the nvidia-* pip wheels (cuBLAS, cuSPARSE, cuDNN headers, ...)."""
    try:
        import nvidia
    except ImportError:
        return []
    found = []
    for base in nvidia.__path__:
        found += glob.glob(os.path.join(base, "*", "include"))  # nvidia/cublas/include, nvidia/cu13/include
    return sorted(d for d in found if os.path.isdir(d))


def cuda_arch_list():
    if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        if torch.cuda.is_available():
            return None  # torch builds for the visible GPUs
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCHS
    return os.environ["TORCH_CUDA_ARCH_LIST"]


def write_build_config(folder, with_cuda, archs):
    """The header medkern.cpp includes to tell Python what this build holds."""
    os.makedirs(folder, exist_ok=True)
    if with_cuda and archs is None:
        archs = ";".join(f"{major}.{minor}" for major, minor in
                         (torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())))
    text = (
        "#pragma once\n"
        f"#define MEDKERN_WITH_CUDA {int(with_cuda)}\n"
        f"#define MEDKERN_CUDA_ARCHS \"{archs if with_cuda else ''}\"\n"
        f"#define MEDKERN_CUDA_VERSION \"{torch.version.cuda if with_cuda else ''}\"\n"
    )
    path = os.path.join(folder, "medkern_build_config.h")
    if not os.path.exists(path) or open(path).read() != text:  # keep ninja's cache when unchanged
        with open(path, "w") as f:
            f.write(text)


def default_max_jobs():
    """Parallel compile jobs: nvcc with torch headers takes about 2 GiB a job."""
    if "MAX_JOBS" in os.environ:
        return
    try:
        mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gib = 8
    os.environ["MAX_JOBS"] = str(max(1, min(os.cpu_count() or 1, int(mem_gib // 2))))


def extension():
    with_cuda = want_cuda()
    archs = cuda_arch_list() if with_cuda else None
    generated = os.path.join(ROOT, "build", "generated")
    write_build_config(generated, with_cuda, archs)
    default_max_jobs()

    rel = lambda pattern: sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/*.cpp")
    # at::parallel_for is OpenMP in torch's CPU builds: without -fopenmp it runs serially.
    # The libgomp.so.1 this links to is the one torch has loaded already.
    # -ffp-contract=off: no multiply-add fusion, whose choice may differ between two inlined
    # copies of a loop (serial and parallel), so results do not depend on the thread count.
    cxx_flags = ["-O3", "-DNDEBUG", "-fvisibility=hidden", "-fopenmp", "-ffp-contract=off"]
    link_flags = ["-fopenmp"]
    cxx_flags += [f"-DMEDKERN_CPU_{cap}" for cap in MEDKERN_CPU_CAPABILITIES]
    include_dirs = [os.path.join(ROOT, "csrc"), generated]
    if not with_cuda:
        return CppExtension("medkern._C", sources, include_dirs=include_dirs,
                            extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags)
    print(f"medkern build: CUDA kernels for TORCH_CUDA_ARCH_LIST={archs or 'the visible GPUs'}")
    nvcc_flags = ["-O3", "-DNDEBUG", "--expt-relaxed-constexpr", "-lineinfo"]
    return CUDAExtension(
        "medkern._C",
        sources + rel("csrc/cuda/*.cu"),
        include_dirs=include_dirs + nvidia_wheel_includes(),
        extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
        extra_link_args=link_flags,
    )


class BuildMedkern(BuildExtension):
    """torch's BuildExtension, plus the CPU kernels compiled once more per CPU capability.

    Those objects are linked after the portable ones, so any inline function they share with
    the rest of the library resolves to its portable copy.
    """

    def build_extension(self, ext):
        kernels = [src for src in ext.sources if src.endswith("_kernel.cpp")]
        base = ext.extra_compile_args["cxx"] if isinstance(ext.extra_compile_args, dict) else ext.extra_compile_args
        for cap, flags in MEDKERN_CPU_CAPABILITIES.items():
            extra = list(base) + flags + [f"-DCPU_CAPABILITY={cap}", f"-DCPU_CAPABILITY_{cap}"]
            ext.extra_objects = list(ext.extra_objects or []) + self.compiler.compile(
                kernels,
                output_dir=os.path.join(self.build_temp, cap.lower()),
                macros=ext.define_macros,
                include_dirs=ext.include_dirs,
                extra_postargs={"cxx": extra, "nvcc": []},
                depends=ext.depends,
            )
        super().build_extension(ext)


setup(
    packages=find_packages(include=["medkern", "medkern.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildMedkern.with_options(use_ninja=True)},
)
