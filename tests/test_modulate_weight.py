"""medkern.ops.modulate_weight: every implementation against the reference, gradients, tracing, bad input."""

import pytest
import torch

import medkern
from medkern import tolerances
from medkern.ops._fused_autograd import kernel_ops
from medkern.reference.modulate_weight import modulate_weight as reference_modulate_weight
from medkern.testing.modulate_weight import CASES, Case, assert_matches, make_inputs, oracle, run

from conftest import kernel_targets

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
EPS = 1e-8


def _interpreted(target):
    return target == ("cpu", "triton")


# --- parity with the reference -------------------------------------------------------------


def _parity_params():
    """Every (target, dtype, case); the Triton interpreter (slow to launch) runs the half types on
    a few cases only, the float types on all."""
    params = []
    for target in kernel_targets():
        for dtype in DTYPES:
            cases = CASES if dtype in (torch.float32, torch.float64) or target.id != "cpu-triton_interpreter" else \
                [c for c in CASES if c.id in HALF_CASES_INTERPRETED]
            params += [pytest.param(target.values[0], dtype, case, marks=target.marks,
                                    id=f"{target.id}-{dtype}-{case.id}".replace("torch.", "")) for case in cases]
    return params


HALF_CASES_INTERPRETED = ("conv3x3", "rank3_plain", "sliced_inputs", "long_rows")


@pytest.mark.parametrize("target,dtype,case", _parity_params())
def test_matches_reference(target, dtype, case):
    """Forward, gradients and second-order gradients of each kernel equal the reference's, for
    kernel ranks 0 to 3, both demodulate values, odd sizes and non-contiguous inputs."""
    device, backend = target
    weight, styles = make_inputs(case, dtype, device)
    got = run(backend, case, weight, styles)
    assert_matches(got, oracle(case, weight, styles), dtype, f"{backend} {case.id}")
    assert got[0].is_contiguous() and got[1].is_contiguous() and got[2].is_contiguous()


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("weight_shape,samples", [((4, 3, 3, 3), 0), ((0, 3, 3, 3), 2), ((4, 0, 3), 2),
                                                  ((4, 3, 0, 2), 2), ((0, 0), 0)],
                         ids=["N=0", "O=0", "I=0", "kernel_0", "all_0"])
@pytest.mark.parametrize("demodulate", [True, False])
def test_empty(target, weight_shape, samples, demodulate):
    """Empty outputs; the gradients of the non-empty inputs are zeros."""
    device, backend = target
    weight = torch.randn(weight_shape, device=device, requires_grad=True)
    styles = torch.randn(samples, weight_shape[1], device=device, requires_grad=True)
    with medkern.use_backend(backend):
        y = medkern.ops.modulate_weight(weight, styles, demodulate)
        assert y.shape == (samples, *weight_shape)
        gw, gs = torch.autograd.grad(y, (weight, styles), torch.ones_like(y))
    assert gw.shape == weight.shape and gs.shape == styles.shape
    assert not gw.any() and not gs.any()


def test_results_do_not_depend_on_the_thread_count():
    case = Case("big", (48, 40, 3, 3), 6)
    weight, styles = make_inputs(case, torch.float32, "cpu")
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            results.append(run("cpu", case, weight, styles, order=1))
    finally:
        torch.set_num_threads(threads)
    for one, many in zip(*results):
        assert torch.equal(one, many)


@pytest.mark.parametrize("target", kernel_targets())
def test_expanded_upstream_gradient(target):
    """y.sum().backward() hands the backward an expanded (stride 0) gradient."""
    device, backend = target
    weight, styles = make_inputs(CASES[0], torch.float32, device)
    got, want = [], []
    for name, out in ((backend, got), ("reference", want)):
        w, s = weight.clone().requires_grad_(), styles.clone().requires_grad_()
        with medkern.use_backend(name):
            medkern.ops.modulate_weight(w, s).sum().backward()
        out += [w.grad, s.grad]
    for g, r in zip(got, want):
        tolerances.assert_close(g, r, "modulate_weight", "grad", torch.float32)


# --- gradients -------------------------------------------------------------------------------


KERNELS = [pytest.param((), id="rank0"), pytest.param((2,), id="rank1"), pytest.param((2, 1), id="rank2"),
           pytest.param((1, 2, 1), id="rank3")]


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("kernel", KERNELS)
def test_gradcheck_and_gradgradcheck(target, demodulate, kernel):
    device, backend = target
    if _interpreted(target) and len(kernel) not in (0, 2):
        pytest.skip("the interpreter is slow: ranks 0 and 2 stand for the others (all run on the cpu backend)")
    weight = torch.randn(2, 3, *kernel, dtype=torch.float64, device=device, requires_grad=True)
    styles = (torch.randn(2, 3, dtype=torch.float64, device=device) + 1).requires_grad_()

    def fn(w, s):
        return medkern.ops.modulate_weight(w, s, demodulate, 0.1)

    fast = _interpreted(target)  # the interpreter launches slowly: one random direction
    with medkern.use_backend(backend):
        assert torch.autograd.gradcheck(fn, (weight, styles), fast_mode=fast)
        assert torch.autograd.gradgradcheck(fn, (weight, styles), fast_mode=fast)


@pytest.mark.parametrize("target", kernel_targets())
def test_r1_penalty(target):
    """A GAN R1 penalty through a modulated convolution: the gradient of |d out / d x|^2 w.r.t.
    the weight and the styles' source."""
    device, backend = target
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, device=device, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    latent = torch.randn(2, 3, dtype=torch.float64, device=device, requires_grad=True)

    def penalty(name):
        with medkern.use_backend(name):
            w = medkern.ops.modulate_weight(weight, latent + 1)
            out = torch.nn.functional.conv2d(x.reshape(1, 6, 4, 4), w.reshape(8, 3, 3, 3), groups=2)
            (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
            return torch.autograd.grad(gx.square().sum(), (weight, latent))

    for got, want in zip(penalty(backend), penalty("reference")):
        tolerances.assert_close(got, want, "modulate_weight", "grad2", torch.float64)


# --- torch.compile, opcheck -----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["cpu"])  # (the reference path compiles as plain torch ops)
def test_torch_compile_fullgraph_forward_and_backward(backend):
    def block(w, s):
        return medkern.ops.modulate_weight(w * 2.0, s, True, 1e-8).square().mean()

    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    styles = torch.randn(2, 3, requires_grad=True)
    with medkern.use_backend(backend):
        torch._dynamo.reset()
        compiled = torch.compile(block, fullgraph=True)
        loss = compiled(weight, styles)
        got = torch.autograd.grad(loss, (weight, styles))
        want_loss = block(weight, styles)
        want = torch.autograd.grad(want_loss, (weight, styles))
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(got, want)


def test_triton_interpreter_refuses_torch_compile():
    with medkern.use_backend("triton"):
        torch._dynamo.reset()
        with pytest.raises(Exception, match="cannot be traced by torch.compile"):
            torch.compile(lambda w, s: medkern.ops.modulate_weight(w, s), fullgraph=True)(
                torch.randn(2, 3), torch.randn(1, 3))


OPCHECK_ALL = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
OPCHECK_INTERPRETED = OPCHECK_ALL[:3]


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("case", [CASES[2], CASES[5], CASES[9]], ids=lambda c: c.id)
def test_opcheck(target, case):
    """torch.library.opcheck of both ops: schema, autograd registration, fake kernel, AOT dispatch."""
    device, backend = target
    forward, backward = kernel_ops("modulate_weight", backend)
    weight, styles = make_inputs(case, torch.float32, device)
    weight.requires_grad_(), styles.requires_grad_()
    utils = OPCHECK_INTERPRETED if _interpreted(target) else OPCHECK_ALL
    options = (case.demodulate, case.eps)
    torch.library.opcheck(forward, (weight, styles, *options), test_utils=utils)
    grad = torch.randn(styles.shape[0], *weight.shape, device=device)
    torch.library.opcheck(backward, (grad, weight, styles, *options), test_utils=utils)


# --- bad input --------------------------------------------------------------------------------

BAD_CALLS = [
    (dict(weight=torch.randint(0, 3, (2, 3))), TypeError, "weight must be float32"),
    (dict(weight=[1.0, 2.0]), TypeError, "weight must be a torch.Tensor"),
    (dict(styles=torch.randn(2, 3).double()), TypeError, "styles must have dtype torch.float32"),
    (dict(weight=torch.randn(3)), ValueError, r"weight must be \(out_channels, in_channels, \*kernel\)"),
    (dict(styles=torch.randn(2, 4)), ValueError, r"styles must be \(N, in_channels\) with in_channels = "),
    (dict(styles=torch.randn(3)), ValueError, r"styles must be \(N, in_channels\)"),
    (dict(styles=torch.randn(2, 3).to("meta")), ValueError, "styles must be on cpu"),
    (dict(demodulate=1), TypeError, "demodulate must be a bool"),
    (dict(eps=-1.0), ValueError, "eps must be finite and >= 0"),
    (dict(eps=float("inf")), ValueError, "eps must be finite and >= 0"),
    (dict(eps="1e-8"), TypeError, "eps must be a real number"),
]


@pytest.mark.parametrize("backend", ["cpu", "triton", "reference"])
@pytest.mark.parametrize("kwargs,error,message", BAD_CALLS, ids=[c[2][:28] for c in BAD_CALLS])
def test_bad_input_names_the_argument(backend, kwargs, error, message):
    args = dict(weight=torch.randn(4, 3, 3), styles=torch.randn(2, 3), demodulate=True, eps=EPS)
    args.update(kwargs)
    with medkern.use_backend(backend), pytest.raises(error, match=message) as info:
        medkern.ops.modulate_weight(**args)
    assert "medkern.ops.modulate_weight" in str(info.value)


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda op: op(torch.randn(3), torch.randn(2, 3), True, EPS), ValueError, "weight must be"),
        (lambda op: op(torch.randn(4, 3), torch.randn(2, 5), True, EPS), ValueError, "styles must be"),
        (lambda op: op(torch.randn(4, 3), torch.randn(2, 3).double(), True, EPS), TypeError, "styles must have dtype"),
        (lambda op: op(torch.randint(0, 2, (4, 3)), torch.randn(2, 3), True, EPS), TypeError, "weight must be float32"),
        (lambda op: op(torch.randn(4, 3), torch.randn(2, 3), True, -1.0), ValueError, "eps must be finite and >= 0"),
    ],
    ids=["weight_rank", "styles_shape", "styles_dtype", "weight_dtype", "eps"],
)
def test_cpp_op_checks_its_arguments(call, error, message):
    """Direct torch.ops.medkern calls are checked in C++ too, with the op and argument named."""
    with pytest.raises(error, match=message) as info:
        call(torch.ops.medkern.modulate_weight)
    assert "medkern::modulate_weight" in str(info.value)


def test_cpp_backward_op_checks_grad():
    weight, styles = torch.randn(4, 3, 2), torch.randn(2, 3)
    op = torch.ops.medkern.modulate_weight_backward
    shape_message = r"medkern::modulate_weight_backward: grad must have shape \(N, \*weight.shape\)"
    with pytest.raises(ValueError, match=shape_message):
        op(torch.randn(2, 4, 3), weight, styles, True, EPS)
    with pytest.raises(TypeError, match="medkern::modulate_weight_backward: grad must have dtype"):
        op(torch.randn(2, 4, 3, 2).double(), weight, styles, True, EPS)


def test_triton_backward_op_checks_grad():
    import medkern.triton.modulate_weight  # noqa: F401  (registers the op)

    with pytest.raises(ValueError, match=r"medkern::triton_modulate_weight_backward: grad must have shape"):
        torch.ops.medkern.triton_modulate_weight_backward(torch.randn(2, 4, 3), torch.randn(4, 3, 2),
                                                          torch.randn(2, 3), True, EPS)


def test_reference_agrees_with_the_definition():
    """The reference against StyleGAN2's modulated_conv2d weight computation, written out."""
    weight, styles = torch.randn(5, 4, 3, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    w = weight[None] * styles[:, None, :, None, None]
    w = w * (w.square().sum(dim=[2, 3, 4]) + EPS).rsqrt()[:, :, None, None, None]
    torch.testing.assert_close(reference_modulate_weight(weight, styles, True, EPS), w)
