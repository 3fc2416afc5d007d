"""The triton backend of medkern.ops.rnn_sequence (medkern::triton_rnn_sequence and its backward).

Against the reference (medkern/reference/rnn.py) for every cell and option, forward and
gradients through the autograd of medkern.ops.rnn; against the C++ op (torch.ops.medkern.
rnn_sequence) on the same inputs, including the raw ``work`` tensor whose layout (WorkLayout of
csrc/common/rnn.h) both must share; opcheck; the argument checks.

On CPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set by conftest.py), about
20 ms per program, and a call launches 2 kernels x T steps x B programs each way: so the
shapes are small (T <= 5, B <= 3, H <= 8). The cuda params run the same tests on a GPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import pytest
import torch

import medkern
from medkern import tolerances
from medkern.ops import rnn as rnn_ops
from medkern.reference import rnn as reference
from medkern.testing import rnn as shared

from conftest import needs_cuda

triton = pytest.importorskip("triton")
from medkern.triton import rnn as triton_rnn  # noqa: E402

DEVICES = [
    pytest.param("cpu", id="cpu-triton_interpreter"),
    pytest.param("cuda", id="cuda-triton", marks=needs_cuda),
]
# The forward op's arguments, in schema order.
ARGS = ("xproj", "weight_hh", "bias_hh", "h0", "c0", "lengths", "cell", "reverse", "weight_hr", "norm_h_weight",
        "norm_h_bias", "norm_c_weight", "norm_c_bias", "eps", "zoneout_h", "zoneout_c", "candidate_mask")
# The differentiable ones (medkern.ops.rnn._DIFFERENTIABLE), in the backward op's output order.
GRADS = ("xproj", "weight_hh", "bias_hh", "h0", "c0", "weight_hr", "norm_h_weight", "norm_h_bias", "norm_c_weight",
         "norm_c_bias")


def _has_cpp() -> bool:
    return medkern._extension.loaded() and hasattr(torch.ops.medkern, "rnn_sequence")


needs_cpp = pytest.mark.skipif(not _has_cpp(), reason="medkern._C without medkern::rnn_sequence")


@dataclass(frozen=True)
class Case:
    cell: str
    T: int = 4
    B: int = 3
    H: int = 5
    proj: int = 0  # proj_size (lstm), 0 for none
    lengths: Optional[tuple] = None
    reverse: bool = False
    bias: bool = True  # bias_hh (never with norm_h)
    norm_h: bool = False
    norm_c: bool = False
    zoneout_h: str = ""  # "" none, "train" (0/1 keep masks), "eval" (probabilities)
    zoneout_c: str = ""
    mask: bool = False  # candidate mask (recurrent dropout)
    grad_cells: bool = True  # whether the loss reads the cells (lstm)

    @property
    def id(self) -> str:
        parts = [self.cell, f"T{self.T}B{self.B}H{self.H}"]
        parts += [f"proj{self.proj}"] if self.proj else []
        parts += [f"len{''.join(map(str, self.lengths))}"] if self.lengths is not None else []
        flags = ("reverse", "norm_h", "norm_c", "mask")
        parts += [f for f in flags if getattr(self, f)]
        parts += [f"zh-{self.zoneout_h}"] if self.zoneout_h else []
        parts += [f"zc-{self.zoneout_c}"] if self.zoneout_c else []
        parts += [] if self.bias or self.norm_h else ["nobias"]
        parts += [] if self.grad_cells or self.cell != "lstm" else ["states-only"]
        return "-".join(parts)


def make_inputs(case: Case, dtype: torch.dtype, device) -> dict:
    """The forward op's arguments by name: gates off saturation (weights ~ 1 / sqrt(fan-in)), keep
    masks of both kinds, and for half data the op-math (float32) c0, norms and masks the op accepts."""
    acc = reference.opmath_dtype(dtype)
    T, B, H = case.T, case.B, case.H
    G, P = reference.GATES[case.cell] * H, case.proj or H

    def randn(*shape, scale=1.0, of=dtype):
        return (torch.randn(shape, dtype=torch.float64) * scale).to(device=device, dtype=of)

    def keep(kind, *shape):
        if not kind:
            return None
        p = torch.rand(shape, dtype=torch.float64)
        mask = (p < 0.3).double() if kind == "train" else 0.1 + 0.5 * p
        return mask.to(device=device, dtype=acc)

    lstm = case.cell == "lstm"
    inputs = dict(
        xproj=randn(T, B, G),
        weight_hh=randn(G, P, scale=P ** -0.5),
        bias_hh=randn(G, scale=0.5) if case.bias and not case.norm_h else None,
        h0=randn(B, P),
        c0=randn(B, H, of=acc) if lstm else None,
        lengths=None if case.lengths is None else torch.tensor(case.lengths, dtype=torch.int64, device=device),
        cell=case.cell,
        reverse=case.reverse,
        weight_hr=randn(P, H, scale=H ** -0.5) if case.proj else None,
        norm_h_weight=(1 + randn(G, scale=0.3, of=acc)) if case.norm_h else None,
        norm_h_bias=randn(G, scale=0.3, of=acc) if case.norm_h else None,
        norm_c_weight=(1 + randn(H, scale=0.3, of=acc)) if case.norm_c else None,
        norm_c_bias=randn(H, scale=0.3, of=acc) if case.norm_c else None,
        eps=1e-5,
        zoneout_h=keep(case.zoneout_h, T, B, P),
        zoneout_c=keep(case.zoneout_c, T, B, H),
        candidate_mask=(torch.rand(T, B, H) < 0.7).to(device=device, dtype=acc) / 0.7 if case.mask else None,
    )
    return inputs


def _positional(inputs: dict) -> list:
    return [inputs[name] for name in ARGS]


def _leaves(inputs: dict, dtype: Optional[torch.dtype] = None) -> dict:
    """A copy of ``inputs`` whose differentiable tensors are fresh leaves (cast to ``dtype`` if given,
    as are the masks)."""
    out = dict(inputs)
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            value = value.detach().to(dtype or value.dtype)
            out[name] = value.requires_grad_() if name in GRADS else value
    return out


def _wanted(inputs: dict) -> list[str]:
    return [name for name in GRADS if inputs[name] is not None]


def run_triton(inputs: dict):
    states, cells, work = triton_rnn.forward_op()(*_positional(inputs))
    return states, cells, work


def run_reference(inputs: dict):
    return reference.rnn_sequence(*_positional(inputs))


def _upstream(case: Case, states: torch.Tensor, cells: torch.Tensor):
    g_states = torch.randn(states.shape, dtype=torch.float64).to(states)
    g_cells = torch.randn(cells.shape, dtype=torch.float64).to(cells) if cells.numel() and case.grad_cells else None
    return g_states, g_cells


def _grads(inputs: dict, states, cells, g_states, g_cells) -> dict:
    outputs, upstream = [states], [g_states]
    if g_cells is not None:
        outputs.append(cells)
        upstream.append(g_cells)
    names = _wanted(inputs)
    grads = torch.autograd.grad(outputs, [inputs[n] for n in names], upstream, allow_unused=True)
    return {n: (torch.zeros_like(inputs[n]) if g is None else g) for n, g in zip(names, grads)}


def check_against_reference(case: Case, dtype: torch.dtype, device, backward: bool = True) -> None:
    """States and cells, then every gradient, of the triton op against the reference in the
    oracle dtype (medkern/tolerances.py: float32 on the upcast inputs for half types)."""
    torch.manual_seed(1)
    inputs = _leaves(make_inputs(case, dtype, device))
    states, cells, work = run_triton(inputs)
    acc = reference.opmath_dtype(dtype)
    width = rnn_ops.work_width(case.cell, case.H, case.norm_h, case.norm_c)
    assert states.dtype == dtype and tuple(states.shape) == (case.T + 1, case.B, case.proj or case.H)
    assert cells.dtype == acc and tuple(cells.shape) == ((case.T + 1, case.B, case.H) if case.cell == "lstm" else (0,))
    assert work.dtype == acc and tuple(work.shape) == (case.T, case.B, width)
    oracle = tolerances.oracle_dtype(dtype)
    ref_inputs = _leaves(inputs, oracle)
    want_states, want_cells = run_reference(ref_inputs)
    label = f"{case.id} {dtype}"
    tolerances.assert_close(states, want_states, "rnn", "forward", dtype, f"{label} states")
    if case.cell == "lstm":
        tolerances.assert_close(cells, want_cells, "rnn", "forward", dtype, f"{label} cells")
    if not backward:
        return
    g_states, g_cells = _upstream(case, states, cells)
    got = _grads(inputs, states, cells, g_states, g_cells)
    want = _grads(ref_inputs, want_states, want_cells, g_states.to(oracle), g_cells)
    for name in got:
        assert got[name].dtype == inputs[name].dtype and got[name].shape == inputs[name].shape, name
        tolerances.assert_close(got[name], want[name], "rnn", "grad", dtype, f"{label} d{name}")


# --- parity with the reference --------------------------------------------------------------------


def _shrunk(case: shared.Case) -> shared.Case:
    """A case of medkern/testing/rnn.py at the interpreter's sizes (T <= 5, B <= 3, H <= 8)."""
    return dataclasses.replace(case, steps=min(case.steps, 5), batch=min(case.batch, 3), hidden=min(case.hidden, 8))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", [_shrunk(c) for c in shared.CASES], ids=lambda c: c.id)
def test_shared_cases_through_medkern_ops(device, case):
    """The cases tests/test_rnn.py runs on the C++ kernels (medkern/testing/rnn.py), in float64
    through medkern.ops.rnn_sequence on the triton backend (this op and its autograd)."""
    inputs = shared.make_inputs(case, torch.float64, device)
    with medkern.use_backend("triton"):
        got = shared.outputs_and_grads(case, inputs)
    shared.assert_matches(got, shared.oracle(case, inputs, torch.float64), torch.float64, case.id)


# What the shared cases leave out: zoneout probabilities (eval), zoneout of h alone, a loss that
# reads the states only (no cells gradient), one sequence, H not a power of two with lengths.
CASES_FLOAT64 = [
    Case("lstm", norm_c=True, reverse=True, zoneout_h="eval", zoneout_c="eval", grad_cells=False),
    Case("lstm", T=3, B=2, H=7, proj=5, norm_h=True, lengths=(3, 1), zoneout_h="train", mask=True),
    Case("gru", B=1, H=8, reverse=True, mask=True, zoneout_h="eval"),
    Case("rnn_relu", lengths=(2, 4, 0), reverse=True, norm_h=True, zoneout_h="eval"),
    Case("rnn_tanh", lengths=(4, 1, 0), norm_h=True, zoneout_h="train", bias=False),
]
# float32 and the half types (float32 math, states rounded to the data's dtype every step).
CASES_DTYPES = [
    Case("lstm", proj=3, lengths=(4, 0, 3), reverse=True, norm_h=True, norm_c=True, zoneout_h="eval",
         zoneout_c="train", mask=True),
    Case("gru", lengths=(2, 4, 0), reverse=True, norm_h=True, zoneout_h="train", mask=True),
    Case("rnn_relu", lengths=(1, 4, 2), norm_h=True),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES_FLOAT64, ids=lambda c: c.id)
def test_matches_reference_float64(device, case):
    check_against_reference(case, torch.float64, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", CASES_DTYPES, ids=lambda c: c.id)
def test_matches_reference_dtypes(device, dtype, case):
    check_against_reference(case, dtype, device)


def test_second_order_gradients():
    """Double backward (medkern.ops.rnn's autograd differentiates the fused backward's result
    through the reference) matches the reference's own."""
    case = Case("gru", T=3, B=2, H=3, lengths=(3, 1), norm_h=True)
    inputs = _leaves(make_inputs(case, torch.float64, "cpu"))
    results = []
    for run, x in ((run_triton, inputs), (run_reference, _leaves(inputs))):
        (dx,) = torch.autograd.grad((run(x)[0] ** 2).sum(), [x["xproj"]], create_graph=True)
        results.append(torch.autograd.grad(dx.sum(), [x["weight_hh"], x["h0"], x["norm_h_weight"]]))
    for got, want in zip(*results):
        tolerances.assert_close(got, want, "rnn", "grad", torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_data_dtype_norms_and_masks(device):
    """c0, norm parameters and masks in the data's dtype (half) give what their float32 values give."""
    case = Case("lstm", T=3, B=2, norm_h=True, norm_c=True, zoneout_h="eval", zoneout_c="train", mask=True)
    inputs = make_inputs(case, torch.float16, device)
    as_data = {k: (v.half() if isinstance(v, torch.Tensor) and v.dtype == torch.float32 else v)
               for k, v in inputs.items()}
    upcast = {k: (v.float() if isinstance(v, torch.Tensor) and v.dtype == torch.float16 and k not in
                  ("xproj", "weight_hh", "h0") else v) for k, v in as_data.items()}
    for a, e in zip(run_triton(as_data), run_triton(upcast)):
        assert torch.equal(a, e)


# --- parity with the C++ op: the same outputs, work included ---------------------------------------

CASES_CPP = [
    (Case("lstm", proj=3, lengths=(4, 0, 3), reverse=True, norm_h=True, norm_c=True, zoneout_h="train",
          zoneout_c="eval", mask=True), (torch.float64, torch.float32, torch.float16, torch.bfloat16)),
    (Case("lstm", lengths=(2, 4, 4), zoneout_c="train", grad_cells=False), (torch.float64,)),
    (Case("gru", lengths=(3, 0, 4), reverse=True, norm_h=True, zoneout_h="eval", mask=True),
     (torch.float64, torch.float32)),
    (Case("rnn_tanh", lengths=(0, 4, 1), norm_h=True, zoneout_h="train"), (torch.float64,)),
    (Case("rnn_relu", reverse=True), (torch.float64,)),
]
_CPP_PARAMS = [pytest.param(case, dtype, id=f"{case.id}-{str(dtype)[6:]}") for case, dtypes in CASES_CPP
               for dtype in dtypes]


@needs_cpp
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case,dtype", _CPP_PARAMS)
def test_matches_cpp_op(device, case, dtype):
    """Forward (states, cells and the raw work tensor, finished rows and statistics included) and
    the backward op's ten outputs on identical inputs (the C++ forward's outputs). The kernels differ
    only in their transcendentals (and sums' order), so within the tolerances; bfloat16 also in
    rounding: Triton's interpreter converts float32 to bfloat16 by truncation (compiled Triton and
    C++ round to nearest), which the recurrence carries on."""
    torch.manual_seed(2)
    inputs = make_inputs(case, dtype, device)
    args = _positional(inputs)
    got = triton_rnn.forward_op()(*args)
    want = torch.ops.medkern.rnn_sequence(*args)
    for name, a, e in zip(("states", "cells", "work"), got, want):
        assert a.dtype == e.dtype and a.shape == e.shape, name
        tolerances.assert_close(a, e, "rnn", "forward", dtype, f"{case.id} {dtype} {name}")
    states, cells, work = want
    g_states, g_cells = _upstream(case, states, cells)
    bwd = dict(grad_states=g_states, grad_cells=g_cells, states=states, cells=cells, work=work,
               weight_hh=inputs["weight_hh"], has_bias_hh=inputs["bias_hh"] is not None, lengths=inputs["lengths"],
               cell=case.cell, reverse=case.reverse, weight_hr=inputs["weight_hr"],
               norm_h_weight=inputs["norm_h_weight"], norm_c_weight=inputs["norm_c_weight"],
               zoneout_h=inputs["zoneout_h"], zoneout_c=inputs["zoneout_c"], candidate_mask=inputs["candidate_mask"])
    got = triton_rnn.backward_op()(**bwd)
    want = torch.ops.medkern.rnn_sequence_backward(**bwd)
    for name, a, e in zip(GRADS, got, want):
        assert a.dtype == e.dtype and a.shape == e.shape, name
        tolerances.assert_close(a, e, "rnn", "grad", dtype, f"{case.id} {dtype} d{name}")


# --- op registration, shapes at the edges -----------------------------------------------------------


def test_opcheck():
    """torch.library.opcheck of both ops: schema, autograd registration, fake kernels (those of
    medkern.ops.rnn). The interpreter cannot be traced by AOT dispatch; on a GPU it is checked too."""
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    device = "cpu"
    if torch.cuda.is_available():
        device, utils = "cuda", utils + ("test_aot_dispatch_dynamic",)
    case = Case("lstm", T=2, B=2, H=2, proj=1, lengths=(2, 1), reverse=True, norm_h=True, norm_c=True,
                zoneout_h="train", mask=True)
    inputs = _leaves(make_inputs(case, torch.float64, device))
    torch.library.opcheck(triton_rnn.forward_op(), tuple(_positional(inputs)), test_utils=utils)
    gru = _leaves(make_inputs(Case("gru", T=2, B=2, H=2), torch.float32, device))
    torch.library.opcheck(triton_rnn.forward_op(), tuple(_positional(gru)), test_utils=utils)
    states, cells, work = run_triton({k: (v.detach() if isinstance(v, torch.Tensor) else v)
                                      for k, v in inputs.items()})
    args = (torch.randn_like(states), torch.randn_like(cells), states, cells, work, inputs["weight_hh"].detach(),
            False, inputs["lengths"], "lstm", True, inputs["weight_hr"].detach(), inputs["norm_h_weight"].detach(),
            inputs["norm_c_weight"].detach(), inputs["zoneout_h"], None, inputs["candidate_mask"])
    torch.library.opcheck(triton_rnn.backward_op(), args, test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("T,B,lengths", [(0, 2, None), (3, 0, None), (3, 2, (0, 0))])
def test_empty_and_idle(device, T, B, lengths):
    """No steps, no sequences, or sequences of length 0: states and cells keep h0 and c0, the
    gradients pass straight through to h0 and c0."""
    case = Case("lstm", T=T, B=B, H=3, lengths=lengths, norm_h=True)
    inputs = _leaves(make_inputs(case, torch.float64, device))
    states, cells, work = run_triton(inputs)
    assert tuple(work.shape) == (T, B, rnn_ops.work_width("lstm", 3, True, False))
    assert torch.equal(states, inputs["h0"].detach().expand(T + 1, B, 3))
    assert torch.equal(cells, inputs["c0"].detach().expand(T + 1, B, 3))
    assert not work.any()
    g_states, g_cells = torch.randn_like(states), torch.randn_like(cells)
    grads = _grads(inputs, states, cells, g_states, g_cells)
    torch.testing.assert_close(grads["h0"], g_states.sum(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads["c0"], g_cells.sum(0), rtol=1e-12, atol=1e-12)
    for name in ("xproj", "weight_hh", "norm_h_weight", "norm_h_bias"):
        assert not grads[name].any(), name


# --- argument checks: those of csrc/rnn_op.cpp, with the same error types ----------------------------


def _bad_calls():
    """(which op, the change to a valid call, the error, a regex of its message)."""
    f64, f32 = torch.float64, torch.float32
    t = lambda *shape, dtype=f64: torch.randn(shape, dtype=dtype)  # noqa: E731
    return [
        ("forward", dict(xproj=t(2, 3, 8).int()), TypeError, "xproj must be float"),
        ("forward", dict(xproj=t(3, 8)), ValueError, "xproj must be \\(T, B, G\\)"),
        ("forward", dict(weight_hh=t(7, 2)), ValueError, "weight_hh must be \\(G, P\\)"),
        ("forward", dict(weight_hh=t(8, 2, dtype=f32)), TypeError, "weight_hh must have dtype"),
        ("forward", dict(cell="lstmx"), ValueError, "unknown cell='lstmx'"),
        ("forward", dict(cell="gru"), ValueError, "last dim of xproj \\(8\\) must be 3 \\* hidden_size"),
        ("forward", dict(weight_hh=t(8, 3)), ValueError, "weight_hh must be \\(8, 2\\) without a projection"),
        ("forward", dict(cell="rnn_tanh", xproj=t(2, 3, 2), weight_hh=t(2, 1), weight_hr=t(1, 2), h0=t(3, 1),
                         c0=None), ValueError, "weight_hr \\(a projection\\) is for cell='lstm' only"),
        ("forward", dict(eps=0.0), ValueError, "eps must be finite and > 0"),
        ("forward", dict(eps=float("inf")), ValueError, "eps must be finite and > 0"),
        ("forward", dict(lengths=torch.tensor([1, 2, 2], dtype=torch.int32)), TypeError, "lengths must be int64"),
        ("forward", dict(lengths=torch.tensor([1, 2])), ValueError, "lengths must be 1-d with 3 elements"),
        ("forward", dict(lengths=torch.tensor([1, 3, 2])), ValueError, "lengths must lie in \\[0, 2\\]"),
        ("forward", dict(lengths=torch.tensor([1, -1, 2])), ValueError, "lengths must lie in \\[0, 2\\]"),
        ("forward", dict(norm_h_weight=t(8)), ValueError, "norm_h_weight and norm_h_bias must be given together"),
        ("forward", dict(norm_c_bias=t(2)), ValueError, "norm_c_weight and norm_c_bias must be given together"),
        ("forward", dict(norm_h_weight=t(8), norm_h_bias=t(7), bias_hh=None), ValueError,
         "norm_h_bias must have shape"),
        ("forward", dict(norm_c_weight=t(2, dtype=f32), norm_c_bias=t(2)), TypeError, "norm_c_weight must have dtype"),
        ("forward", dict(norm_h_weight=t(8), norm_h_bias=t(8)), ValueError, "bias_hh must be None with a recurrent"),
        ("forward", dict(bias_hh=t(7)), ValueError, "bias_hh must have shape"),
        ("forward", dict(h0=t(2, 2)), ValueError, "h0 must have shape"),
        ("forward", dict(h0=t(3, 2, dtype=f32)), TypeError, "h0 must have dtype"),
        ("forward", dict(c0=None), ValueError, "c0 is required for cell='lstm'"),
        ("forward", dict(c0=t(3, 3)), ValueError, "c0 must have shape"),
        ("forward", dict(weight_hr=t(3, 2)), ValueError, "weight_hr must have shape"),
        ("forward", dict(zoneout_h=t(2, 3, 3)), ValueError, "zoneout_h must have shape"),
        ("forward", dict(zoneout_c=t(2, 3, 2, dtype=torch.float16)), TypeError, "zoneout_c must have dtype"),
        ("forward", dict(candidate_mask=t(1, 3, 2)), ValueError, "candidate_mask must have shape"),
        ("forward", dict(cell="gru", xproj=t(2, 3, 6), weight_hh=t(6, 2), c0=None, zoneout_c=t(2, 3, 2)),
         ValueError, "zoneout_c is for cell='lstm' only"),
        ("forward", dict(cell="gru", xproj=t(2, 3, 6), weight_hh=t(6, 2), c0=None, norm_c_weight=t(2),
                         norm_c_bias=t(2)), ValueError, "norm_c_weight \\(the cell-state layer norm\\) is for"),
        ("forward", dict(cell="rnn_relu", xproj=t(2, 3, 2), weight_hh=t(2, 2), c0=None, candidate_mask=t(2, 3, 2)),
         ValueError, "candidate_mask \\(recurrent dropout\\) is for"),
        ("forward", dict(cell="gru", xproj=t(2, 3, 6), weight_hh=t(6, 2), bias_hh=None), ValueError,
         "c0 is for cell='lstm' only"),
        ("backward", dict(grad_states=t(3, 3, 3)), ValueError, "grad_states must have shape"),
        ("backward", dict(grad_states=t(3, 3, 2, dtype=f32)), TypeError, "grad_states must have dtype"),
        ("backward", dict(states=t(3, 2)), ValueError, "states must be \\(T \\+ 1, B, P\\)"),
        ("backward", dict(work=t(2, 3, 9)), ValueError, "work must be the \\(2, 3, 10\\)"),
        ("backward", dict(work=t(2, 3, 10, dtype=f32)), ValueError, "work must be the"),
        ("backward", dict(cells=t(2, 3, 2)), ValueError, "cells must be the \\(3, 3, 2\\)"),
        ("backward", dict(grad_cells=t(3, 3, 3)), ValueError, "grad_cells must have shape"),
        ("backward", dict(weight_hh=t(8)), ValueError, "weight_hh must be \\(G, P\\)"),
        ("backward", dict(cell="gru"), ValueError, "last dim of xproj \\(8\\) must be 3"),
        ("backward", dict(lengths=torch.tensor([0, 3, 1])), ValueError, "lengths must lie in \\[0, 2\\]"),
        ("backward", dict(norm_h_weight=t(7)), ValueError, "norm_h_weight must have shape"),
    ]


def _valid_call(which: str) -> dict:
    """A valid lstm call (T 2, B 3, H 2) of the forward or backward op, by argument name."""
    torch.manual_seed(0)
    inputs = make_inputs(Case("lstm", T=2, B=3, H=2, bias=True), torch.float64, "cpu")
    if which == "forward":
        return inputs
    states, cells, work = run_triton(inputs)
    return dict(grad_states=torch.randn_like(states), grad_cells=torch.randn_like(cells), states=states, cells=cells,
                work=work, weight_hh=inputs["weight_hh"], has_bias_hh=True, lengths=None, cell="lstm", reverse=False,
                weight_hr=None, norm_h_weight=None, norm_c_weight=None, zoneout_h=None, zoneout_c=None,
                candidate_mask=None)


_BAD = _bad_calls()


@pytest.mark.parametrize("index", range(len(_BAD)), ids=[f"{c[0]}-{c[3][:40]}" for c in _BAD])
def test_bad_input_names_op_and_argument(index):
    """The triton ops check what the C++ ops check, raising the same error type (where the C++ op
    is built, it is held to the same call) with a message naming the op and the argument."""
    which, change, error, message = _BAD[index]
    call = {**_valid_call(which), **change}
    op = triton_rnn.forward_op() if which == "forward" else triton_rnn.backward_op()
    with pytest.raises(error, match=message) as info:
        op(**call)
    name = "triton_rnn_sequence" + ("_backward" if which == "backward" else "")
    assert f"medkern::{name}: " in str(info.value)
    assert type(info.value) is error
    if _has_cpp():
        cpp = torch.ops.medkern.rnn_sequence if which == "forward" else torch.ops.medkern.rnn_sequence_backward
        with pytest.raises(error, match=message):
            cpp(**call)


def test_aot_variants_cover_the_kernels():
    """Every kernel has AOT variants, with a signature entry for each of its parameters."""
    variants = list(triton_rnn.aot_variants())
    kernels = {kernel.fn.__name__ for _, kernel, _, _ in variants}
    assert kernels == {"cell_forward_kernel", "state_forward_kernel", "state_backward_kernel", "cell_backward_kernel"}
    assert len({name for name, *_ in variants}) == len(variants)
    for name, kernel, signature, constexprs in variants:
        assert list(signature) == list(kernel.arg_names), name
        assert {k for k, v in signature.items() if v == "constexpr"} == set(constexprs), name
