"""medkern.ops.rnn_sequence on the compiled kernels (C++ CPU; CUDA C++ and Triton on a GPU)
against the reference: states, cells and every gradient, gradcheck and gradgradcheck, opcheck,
the meaning of lengths and reverse, layouts, empty and bad input, thread counts, tracing.

Triton's interpreter runs the same cases in tests/test_rnn_triton.py (it is slow, so smaller).
"""

import pytest
import torch

import medkern
from medkern import tolerances
from medkern.ops import rnn as rnn_ops
from medkern.reference import rnn as reference
from medkern.testing.rnn import CASES, Case, assert_matches, leaves, make_inputs, oracle, outputs_and_grads, run

from conftest import kernel_targets

TARGETS = [t for t in kernel_targets() if t.id != "cpu-triton_interpreter"]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
CASE_IDS = [c.id for c in CASES]


def _dtype_id(d):
    return str(d).removeprefix("torch.")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_reference(target, dtype, case):
    device, backend = target
    inputs = make_inputs(case, dtype, device)
    with medkern.use_backend(backend):
        actual = outputs_and_grads(case, inputs)
    expected = oracle(case, {k: _to_cpu(v) for k, v in inputs.items()}, dtype)
    assert_matches([_to_cpu(actual[0]), _to_cpu(actual[1]), [g.cpu() for g in actual[2]]], expected, dtype, case.id)


def _to_cpu(v):
    if isinstance(v, tuple):
        return tuple(_to_cpu(t) for t in v)
    if isinstance(v, torch.Tensor):
        out = v.detach().cpu()
        return out.requires_grad_() if v.requires_grad else out
    return v


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("cell", reference.CELLS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_lengths_and_reverse_mean_running_each_sequence_alone(target, cell, reverse):
    device, backend = target
    case = Case(cell, steps=6, batch=4, lengths=(6, 3, 0, 1), reverse=reverse)
    inputs = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in make_inputs(case, torch.float64).items()}
    with medkern.use_backend(backend):
        dev = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        states, _ = run(case, dev)
        y, h_n, _ = rnn_ops.read_outputs(states, _, torch.tensor(case.lengths), reverse)
    states, y, h_n = states.cpu(), y.cpu(), h_n.cpu()
    for b, length in enumerate(case.lengths):
        alone = _independent_oracle_one(case, inputs, b, length)
        tolerances.assert_close(h_n[b], alone[-1][0], "rnn", "forward", torch.float64, msg=f"h_n of sequence {b}")
        outputs = alone[1:, 0]  # (length, P): the state after each of its steps
        if reverse:
            outputs = outputs.flip(0)  # y is indexed by input time
        tolerances.assert_close(y[:length, b], outputs, "rnn", "forward", torch.float64, msg=f"y of sequence {b}")
        assert (y[length:, b] == 0).all(), "outputs past a sequence's end are zero"
        assert (states[length:, b] == states[length, b]).all(), "a finished sequence's state stays put"


def _independent_oracle_one(case, inputs, b, length):
    xs = inputs["xproj"][:length, b : b + 1]
    if case.reverse:
        xs = xs.flip(0)
    c0 = None if inputs["c0"] is None else inputs["c0"][b : b + 1]
    with medkern.use_backend("reference"):
        states, _ = rnn_ops.rnn_sequence(xs, inputs["weight_hh"], inputs["bias_hh"], inputs["h0"][b : b + 1], c0,
                                         cell=case.cell)
    return states


GRADCHECK_CASES = [
    Case("lstm", steps=3, batch=2, hidden=3, lengths=(3, 1), reverse=True),
    Case("lstm", steps=3, batch=2, hidden=3, proj=2, norm_h=True, norm_c=True, bias=False, zoneout=True, mask=True),
    Case("gru", steps=3, batch=2, hidden=3, lengths=(2, 3)),
    Case("gru", steps=3, batch=2, hidden=3, norm_h=True, bias=False, mask=True, zoneout=True),
    Case("rnn_tanh", steps=3, batch=2, hidden=3, zoneout=True),
    Case("rnn_relu", steps=3, batch=2, hidden=3),
]


def _as_function(case, inputs):
    """(function of the leaves returning (states, cells), the leaves) for gradcheck."""
    keys = [k for k in ("xproj", "weight_hh", "bias_hh", "h0", "c0", "weight_hr", "norm_h", "norm_c")
            if inputs[k] is not None]
    flat = leaves(inputs)

    def fn(*tensors):
        it = iter(tensors)
        args = dict(inputs)
        for k in keys:
            args[k] = (next(it), next(it)) if isinstance(inputs[k], tuple) else next(it)
        states, cells = run(case, args)
        return (states, cells) if cells.numel() else states

    return fn, flat


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=[c.id for c in GRADCHECK_CASES])
def test_gradcheck(target, case):
    device, backend = target
    fn, flat = _as_function(case, make_inputs(case, torch.float64, device))
    with medkern.use_backend(backend):
        assert torch.autograd.gradcheck(fn, flat, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=[c.id for c in GRADCHECK_CASES])
def test_gradgradcheck(target, case):
    device, backend = target
    fn, flat = _as_function(case, make_inputs(case, torch.float64, device))
    with medkern.use_backend(backend):
        assert torch.autograd.gradgradcheck(fn, flat, eps=1e-6, atol=1e-7)


def test_first_order_gradient_comes_from_the_fused_kernel_even_under_create_graph():
    """With create_graph, the gradient values are still the fused backward's (bitwise those of a
    plain backward); only their own derivative goes through the reference."""
    case = Case("lstm", norm_h=True, bias=False)
    inputs = make_inputs(case, torch.float32)
    states, cells = run(case, inputs)
    plain = torch.autograd.grad(states.sum() + cells.sum(), leaves(inputs), retain_graph=True)
    graph = torch.autograd.grad(states.sum() + cells.sum(), leaves(inputs), create_graph=True)
    for a, b in zip(plain, graph):
        assert torch.equal(a, b)
    assert graph[0].requires_grad


OPCHECK_CASES = [Case("lstm", steps=3, batch=2, hidden=3, proj=2, lengths=(3, 2), reverse=True, zoneout=True),
                 Case("gru", steps=2, batch=2, hidden=3, norm_h=True, bias=False, mask=True),
                 Case("lstm", steps=2, batch=2, hidden=3, norm_h=True, norm_c=True, bias=False)]


def _op_args(case, inputs, device):
    nh, nc = inputs["norm_h"] or (None, None), inputs["norm_c"] or (None, None)
    lengths = None if case.lengths is None else torch.tensor(case.lengths, device=device)
    return (inputs["xproj"], inputs["weight_hh"], inputs["bias_hh"], inputs["h0"], inputs["c0"], lengths, case.cell,
            case.reverse, inputs["weight_hr"], nh[0], nh[1], nc[0], nc[1], 1e-5, inputs["zoneout_h"],
            inputs["zoneout_c"], inputs["candidate_mask"])


@pytest.mark.parametrize("target", [t for t in TARGETS if t.values[0][1] != "triton"])
@pytest.mark.parametrize("case", OPCHECK_CASES, ids=[c.id for c in OPCHECK_CASES])
def test_opcheck(target, case):
    device, _ = target
    inputs = make_inputs(case, torch.float64, device)
    torch.library.opcheck(torch.ops.medkern.rnn_sequence.default, _op_args(case, inputs, device))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shape", [(0, 3), (4, 0), (0, 0)], ids=["no-steps", "no-batch", "neither"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_empty(target, shape, cell):
    device, backend = target
    case = Case(cell, steps=shape[0], batch=shape[1])
    inputs = make_inputs(case, torch.float32, device)
    with medkern.use_backend(backend):
        states, cells, grads = outputs_and_grads(case, inputs)
    expected = oracle(case, {k: _to_cpu(v) for k, v in inputs.items()}, torch.float32)
    assert states.shape == expected[0].shape and cells.shape == expected[1].shape
    assert_matches([states.cpu(), cells.cpu(), [g.cpu() for g in grads]], expected, torch.float32, "empty")


@pytest.mark.parametrize("target", TARGETS)
def test_non_contiguous_inputs(target):
    device, backend = target
    case = Case("lstm", proj=4, lengths=(5, 1, 3))
    inputs = make_inputs(case, torch.float64, device)
    strided = dict(inputs)
    strided["xproj"] = inputs["xproj"].detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    strided["weight_hh"] = inputs["weight_hh"].detach().t().contiguous().t().requires_grad_()
    strided["h0"] = inputs["h0"].detach().t().contiguous().t().requires_grad_()
    assert not strided["xproj"].is_contiguous() and not strided["weight_hh"].is_contiguous()
    with medkern.use_backend(backend):
        actual = outputs_and_grads(case, strided)
        expected = outputs_and_grads(case, inputs)
    for a, e in zip([actual[0], actual[1], *actual[2]], [expected[0], expected[1], *expected[2]]):
        tolerances.assert_close(a, e, "rnn", "grad", torch.float64)


# Shapes for medkern's packed GEMMs (csrc/cpu/gemm_kernel.cpp): rows that are not a whole number
# of its row blocks (6 or 8), gate columns that are not a whole number of its panels (16 or 32),
# one input column, a projection (a second fixed weight), and weight_hh's gradient summed over
# more than one block of 256 steps x samples.
GEMM_CASES = [
    Case("lstm", steps=4, batch=13, hidden=20),
    Case("gru", steps=3, batch=17, hidden=70, reverse=True),
    Case("rnn_tanh", steps=6, batch=9, hidden=1),
    Case("lstm", steps=5, batch=8, hidden=40, proj=24, lengths=(5, 2, 4, 1, 5, 3, 0, 5)),
    Case("lstm", steps=40, batch=9, hidden=37, lengths=None),
]


@pytest.mark.parametrize("case", CASES + GEMM_CASES, ids=[c.id for c in CASES + GEMM_CASES])
def test_cpu_gemm_choices_match_the_reference(rnn_cpu_gemm, case):
    inputs = make_inputs(case, torch.float32)
    with medkern.use_backend("cpu"):
        actual = outputs_and_grads(case, inputs)
    assert_matches(actual, oracle(case, inputs, torch.float32), torch.float32, f"{rnn_cpu_gemm} {case.id}")


def test_an_unknown_cpu_gemm_choice_is_refused():
    from medkern import _extension

    if _extension.rnn_cpu_gemm() is None:
        pytest.skip("the compiled extension is not loaded")
    with pytest.raises(ValueError, match="rnn_cpu_gemm: choice must be 'auto', 'library' or 'medkern', got 'fast'"):
        _extension.rnn_cpu_gemm("fast")


def test_results_do_not_depend_on_the_thread_count(rnn_cpu_gemm):
    # per step 32 panels x 8 row blocks of medkern's GEMM: split over threads; weight_hh's gradient sums 320
    case = Case("lstm", steps=5, batch=64, hidden=256, norm_h=True, norm_c=True, bias=False, lengths=None)
    inputs = make_inputs(case, torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = outputs_and_grads(case, inputs)
        torch.set_num_threads(max(2, threads))
        many = outputs_and_grads(case, inputs)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip([one[0], one[1]], [many[0], many[1]]):
        assert torch.equal(a, b)
    if rnn_cpu_gemm == "medkern":  # its GEMMs sum in a fixed order too: xproj's and weight_hh's gradients
        for a, b in zip(one[2][:2], many[2][:2]):
            assert torch.equal(a, b)


def test_torch_compile_traces_forward_and_backward():
    case = Case("gru", lengths=(5, 2, 4), reverse=True)
    inputs = make_inputs(case, torch.float32)
    lengths = torch.tensor(case.lengths)

    def step(xproj, weight_hh, bias_hh, h0):
        states, _ = rnn_ops.rnn_sequence(xproj, weight_hh, bias_hh, h0, cell="gru", lengths=lengths, reverse=True)
        return states.square().sum()

    args = [inputs[k] for k in ("xproj", "weight_hh", "bias_hh", "h0")]
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager_grads = torch.autograd.grad(step(*args), args)
    compiled_grads = torch.autograd.grad(compiled(*args), args)
    for a, b in zip(compiled_grads, eager_grads):
        tolerances.assert_close(a, b, "rnn", "grad", torch.float32)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_autocast_runs_the_sequence_in_the_autocast_dtype(cell):
    """Under CPU autocast (bfloat16) the float32 weights and state meet a bfloat16 projection: the
    op runs exactly as if the caller had cast them, and the float32 leaves get float32 gradients."""
    torch.manual_seed(0)
    T, B, I, H = 5, 3, 4, 6
    G = reference.GATES[cell] * H
    leaves_ = [torch.randn(T, B, I), torch.randn(G, I) / 2, torch.randn(G) / 2, torch.randn(G, H) / 2,
               torch.randn(G) / 2, torch.randn(B, H)]
    leaves_ = [t.requires_grad_() for t in leaves_]
    c0 = torch.randn(B, H) if cell == "lstm" else None

    def layer(x, w_ih, b_ih, w_hh, b_hh, h0):
        return rnn_ops.rnn_layer(x, w_ih, b_ih, w_hh, b_hh, h0, c0, cell=cell)[0]

    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(*leaves_)
    grads = torch.autograd.grad(y.float().square().sum(), leaves_)
    cast = [t.detach().bfloat16().requires_grad_() for t in leaves_]
    y_cast = layer(*cast)
    grads_cast = torch.autograd.grad(y_cast.float().square().sum(), cast)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, y_cast)
    for g, g_cast, leaf in zip(grads, grads_cast, leaves_):
        assert g.dtype == leaf.dtype == torch.float32
        assert torch.equal(g, g_cast.float())


def _bad(case=Case("lstm"), **changes):
    inputs = make_inputs(case, torch.float32)
    inputs.update(changes)
    return inputs


BAD = [
    ("cell", dict(cell="lstmx"), ValueError, "unknown cell"),
    ("xproj-2d", dict(xproj=torch.zeros(3, 24)), ValueError, "xproj must be"),
    ("xproj-int", dict(xproj=torch.zeros(5, 3, 24, dtype=torch.int64)), TypeError, "xproj must be float"),
    ("xproj-width", dict(xproj=torch.zeros(5, 3, 23)), ValueError, "4 \\* hidden_size"),
    ("weight_hh-shape", dict(weight_hh=torch.zeros(24, 5)), ValueError, "weight_hh must be"),
    ("weight_hh-dtype", dict(weight_hh=torch.zeros(24, 6, dtype=torch.float64)), TypeError, "weight_hh must have dtype"),
    ("h0-shape", dict(h0=torch.zeros(2, 6)), ValueError, "h0 must have shape"),
    ("c0-missing", dict(c0=None), ValueError, "c0 is required"),
    ("bias-with-norm", dict(norm_h=(torch.ones(24), torch.zeros(24))), ValueError, "bias_hh must be None"),
    ("norm-pair", dict(norm_c=torch.ones(6)), TypeError, "norm_c must be a \\(weight, bias\\) pair"),
    ("mask-shape", dict(zoneout_h=torch.zeros(5, 3, 5)), ValueError, "zoneout_h must have shape"),
    ("lengths-range", dict(lengths=torch.tensor([6, 1, 1])), ValueError, "lengths must lie in"),
    ("lengths-count", dict(lengths=torch.tensor([1, 1])), ValueError, "lengths must have 3 elements"),
    ("lengths-float", dict(lengths=torch.tensor([1.0, 1.0, 1.0])), TypeError, "lengths must be a 1-d integer"),
    ("proj-gru", dict(cell="gru", weight_hr=torch.zeros(6, 6)), ValueError, "for cell='lstm' only"),
]


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("name,changes,error,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_with_a_clear_message(backend, name, changes, error, match):
    changes = dict(changes)
    cell = changes.pop("cell", "lstm")
    lengths = changes.pop("lengths", None)
    inputs = _bad(**changes)
    if cell == "gru":
        inputs["c0"] = None
    with medkern.use_backend(backend), pytest.raises(error, match=match):
        rnn_ops.rnn_sequence(cell=cell, lengths=lengths, **inputs)


@pytest.mark.parametrize(
    "changes,match",
    [
        (dict(xproj=torch.zeros(5, 3, 22), weight_hh=torch.zeros(22, 6)), "4 \\* hidden_size"),
        (dict(xproj=torch.zeros(5, 3, 23)), "weight_hh must be \\(G, P\\) with G = 23"),
        (dict(h0=torch.zeros(2, 6)), "h0 must have shape"),
        (dict(lengths=torch.tensor([9, 1, 1])), "lengths must lie in"),
        (dict(c0=None), "c0 is required"),
    ],
)
def test_the_compiled_op_checks_its_arguments_too(changes, match):
    case = Case("lstm")
    inputs = make_inputs(case, torch.float32)
    args = list(_op_args(case, inputs, "cpu"))
    names = ["xproj", "weight_hh", "bias_hh", "h0", "c0", "lengths"]
    for key, value in changes.items():
        args[names.index(key)] = value
    with pytest.raises((ValueError, RuntimeError), match=match):
        torch.ops.medkern.rnn_sequence(*args)
