"""Choosing the backend: use_backend as a call and a context manager, MEDKERN_BACKEND, errors."""


import pytest
import torch

import medkern
from medkern import backend

from conftest import run_python


def test_use_backend_as_call_and_context_manager():
    assert backend.active() == "auto"
    with medkern.use_backend("reference"):
        assert backend.active() == "reference"
        with medkern.use_backend("cpu"):
            assert backend.active() == "cpu"
        assert backend.active() == "reference"
    assert backend.active() == "auto"
    medkern.use_backend("reference")
    try:
        assert backend.active() == "reference"
    finally:
        medkern.use_backend("auto")


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        medkern.use_backend("gpu")


def test_auto_picks_the_cpp_kernel_on_cpu():
    assert backend.select("bias_act", torch.device("cpu")) == "cpu"


def test_a_backend_that_cannot_serve_the_tensor_says_why():
    x = torch.randn(2, 3)
    with medkern.use_backend("cuda"), pytest.raises(RuntimeError, match="cuda backend runs CUDA tensors"):
        medkern.ops.bias_act(x, None, 1, "relu")


def test_triton_on_cpu_needs_the_interpreter():
    done = run_python(
        "import medkern, torch\n"
        "with medkern.use_backend('triton'):\n"
        "    medkern.ops.bias_act(torch.randn(2, 3), None, 1, 'relu')\n",
        TRITON_INTERPRET="0",
    )
    assert done.returncode != 0
    assert "TRITON_INTERPRET=1" in done.stderr


def test_environment_variable_sets_the_default():
    done = run_python("import medkern; print(medkern.backend.active())", MEDKERN_BACKEND="reference")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reference"


def test_bad_environment_variable_warns_and_uses_auto():
    done = run_python("import medkern; print(medkern.backend.active())", MEDKERN_BACKEND="warp-drive")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "auto"
    assert "MEDKERN_BACKEND='warp-drive' is not a backend" in done.stderr
