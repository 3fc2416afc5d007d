"""The compiled extension: what it holds, and medkern without it (or without Triton)."""

import os
import shutil
import subprocess
import textwrap

import pytest
import torch

import medkern
from medkern import _extension

from conftest import run_python

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compiled_ops():
    """Every op _C defines (the Triton ops are defined in Python, named triton_*)."""
    names = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("medkern::")]
    return sorted(n for n in names if not n.split("::")[1].startswith("triton_"))


def test_extension_loaded():
    assert _extension.loaded(), f"medkern._C did not load: {_extension.load_error}"
    assert compiled_ops() == ["medkern::bias_act", "medkern::bias_act_backward", "medkern::max_pool",
                              "medkern::max_pool_backward", "medkern::minibatch_stddev",
                              "medkern::minibatch_stddev_backward", "medkern::modulate_weight",
                              "medkern::modulate_weight_backward", "medkern::norm_act",
                              "medkern::norm_act_backward", "medkern::pixel_norm", "medkern::pixel_norm_backward",
                              "medkern::rnn_sequence", "medkern::rnn_sequence_backward", "medkern::transposed_product",
                              "medkern::upfirdn2d"]


def test_every_schema_has_a_cpu_kernel():
    for op in compiled_ops():
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU"), op


@pytest.mark.skipif(not _extension.has_cuda(), reason="medkern._C was built without CUDA (MEDKERN_CUDA=0)")
def test_every_schema_has_a_cuda_kernel():
    for op in compiled_ops():
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), op
    assert _extension.cuda_archs(), "the build should record its architectures"
    assert _extension.cuda_version().split(".")[0] == torch.version.cuda.split(".")[0]


def _cuobjdump():
    try:
        import triton
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    return path if os.path.exists(path) else shutil.which("cuobjdump")


@pytest.mark.skipif(not _extension.has_cuda(), reason="medkern._C was built without CUDA (MEDKERN_CUDA=0)")
def test_the_binary_holds_code_for_each_recorded_architecture():
    """cuobjdump lists the cubins (and PTX) in _C: one per architecture of TORCH_CUDA_ARCH_LIST."""
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (it comes with Triton or the CUDA toolkit)")
    library = _extension._C.__file__
    elves = subprocess.run([tool, "--list-elf", library], capture_output=True, text=True, check=True).stdout
    ptx = subprocess.run([tool, "--list-ptx", library], capture_output=True, text=True, check=True).stdout
    for arch in _extension.cuda_archs():
        sm = "sm_" + arch.replace("+PTX", "").replace(".", "")
        assert f".{sm}." in elves, f"no {sm} cubin in {library}:\n{elves}"
        if arch.endswith("+PTX"):
            assert f".{sm}." in ptx, f"no {sm} PTX in {library}:\n{ptx}"


def test_cpu_capability_is_reported():
    assert _extension._C.cpu_capability in ("DEFAULT", "AVX2", "AVX512")


def test_portable_cpu_kernels_give_the_same_results():
    """ATEN_CPU_CAPABILITY=default selects the portable (DEFAULT) kernels; they agree with the others."""
    script = textwrap.dedent(
        """
        import torch, medkern
        torch.manual_seed(0)
        x = torch.randn(4, 6, 33, 17, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        b = torch.randn(6, dtype=torch.float64, requires_grad=True)
        y = medkern.ops.bias_act(x, b, 1, "gelu", gain=1.3, clamp=1.0)
        gx, gb = torch.autograd.grad(y, (x, b), torch.randn_like(y))
        print(medkern._extension._C.cpu_capability)
        torch.save([y.detach(), gx, gb], "{out}")
        """
    )
    outputs = {}
    for capability in ("default", None):
        out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"medkern_cap_{capability}.pt")
        done = run_python(script.format(out=out), ATEN_CPU_CAPABILITY=capability)
        assert done.returncode == 0, done.stderr
        outputs[done.stdout.strip()] = torch.load(out)
    assert "DEFAULT" in outputs
    first, *others = outputs.values()
    for other in others:
        for a, b in zip(other, first):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


BLOCK_IMPORT = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == {name!r} or name.startswith({name!r} + "."):
            raise ImportError(f"{{name}} blocked by the test")
sys.meta_path.insert(0, Block())
"""


def test_import_without_the_extension_warns_once_and_runs_the_reference():
    done = run_python(
        BLOCK_IMPORT.format(name="medkern._C")
        + """
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import medkern
    import medkern.ops, medkern.nn
    import torch
    x = torch.randn(2, 3, 4, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    y = medkern.ops.bias_act(x, b, 1, "lrelu", gain=2.0, clamp=1.0)
    y.sum().backward()
    want = torch.clamp(torch.nn.functional.leaky_relu(x + b.view(1, 3, 1), 0.01) * 2.0, -1, 1)
    torch.testing.assert_close(y, want)
mine = [str(w.message) for w in caught if "medkern" in str(w.message)]
assert len(mine) == 1, mine
assert "pip install --no-build-isolation" in mine[0], mine[0]
info = medkern.info()
assert info["extension_loaded"] is False and info["cpu_kernels"] is False
try:
    with medkern.use_backend("cpu"):
        medkern.ops.bias_act(x, b, 1, "relu")
except RuntimeError as e:
    assert "medkern._C is not loaded" in str(e), e
else:
    raise AssertionError("the cpu backend should refuse to run without _C")
print("ok")
"""
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_import_without_triton():
    done = run_python(
        "import torch  # torch probes for Triton with find_spec at import: let it see none later\n"
        + BLOCK_IMPORT.format(name="triton")
        + """
import medkern
assert medkern.info()["triton"] is None
try:
    with medkern.use_backend("triton"):
        medkern.ops.bias_act(torch.randn(2, 3), None, 1, "relu")
except RuntimeError as e:
    assert "Triton is not installed" in str(e), e
else:
    raise AssertionError("the triton backend should refuse to run without Triton")
print(medkern.ops.bias_act(torch.ones(2, 3), None, 1, "relu").sum().item())
""",
        TRITON_INTERPRET="0",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6.0"


def test_info_reports_the_installation():
    info = medkern.info()
    assert info["medkern"] == medkern.__version__
    assert info["torch"] == torch.__version__
    assert info["extension_loaded"] is True and info["cpu_kernels"] is True
    assert info["cuda_kernels"] == _extension.has_cuda()
    assert info["backend"] == medkern.backend.active()
    assert info["gpu"] is None or "sm_" in info["gpu"]
    assert info["rnn_cpu_gemm"] in ("medkern", "library")
    from medkern.info import format_info

    rendered = format_info(info)
    assert "extension_loaded" in rendered and torch.__version__ in rendered
