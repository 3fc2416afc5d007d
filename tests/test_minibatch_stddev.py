"""medkern.ops.minibatch_stddev: every implementation against the reference, gradients, tracing, bad input."""

import pytest
import torch

import medkern
from medkern import tolerances
from medkern.nn import MinibatchStdDev
from medkern.reference.minibatch_stddev import memory_format
from medkern.reference.minibatch_stddev import minibatch_stddev as reference_minibatch_stddev
from medkern.testing.bias_act import Layout
from medkern.testing.minibatch_stddev import CASES, Case, assert_matches, make_inputs, oracle, run

from conftest import kernel_targets

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _op_pair(backend):
    if backend == "triton":
        import medkern.triton.minibatch_stddev as triton_minibatch_stddev

        return triton_minibatch_stddev.forward_op(), triton_minibatch_stddev.backward_op()
    return torch.ops.medkern.minibatch_stddev.default, torch.ops.medkern.minibatch_stddev_backward.default


def stylegan2(x, group_size, num_channels):
    """StyleGAN2's layer as published (training/networks.py, MinibatchStdLayer), for the semantics."""
    N, C, H, W = x.shape
    G = min(group_size, N)
    F = num_channels
    c = C // F
    y = x.reshape(G, -1, F, c, H, W)
    y = y - y.mean(dim=0)
    y = y.square().mean(dim=0)
    y = (y + 1e-8).sqrt()
    y = y.mean(dim=[2, 3, 4])
    y = y.reshape(-1, F, 1, 1)
    y = y.repeat(G, 1, H, W)
    return torch.cat([x, y], dim=1)


# --- parity with the reference -------------------------------------------------------------


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_reference(target, dtype, case):
    """Forward, gradient and second-order gradient of each kernel equal the reference's."""
    device, backend = target
    x = make_inputs(case, dtype, device)
    got = run(backend, case, x)
    want = oracle(case, x)
    assert_matches(got, want, dtype, f"{backend} {case.id}")
    assert got[0].is_contiguous(memory_format=memory_format(x))
    assert got[1].is_contiguous(memory_format=memory_format(x))


def test_reference_is_stylegan2():
    for case in CASES:
        x = make_inputs(case, torch.float64, "cpu")
        torch.testing.assert_close(reference_minibatch_stddev(x, case.group_size, case.num_channels),
                                   stylegan2(x, case.group_size, case.num_channels), rtol=0, atol=0)


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("case", [Case(Layout("many_chunks", (8, 64, 16, 16), 1), 4, 1),
                                  Case(Layout("many_chunks_cl", (4, 32, 16, 17), 1, "channels_last"), 2, 2)],
                         ids=lambda c: c.id)
def test_large_inputs(target, case):
    """Statistics over more than one chunk of the CPU kernel (4096 items), many tasks."""
    device, backend = target
    if backend == "triton" and device == "cpu" and case.layout.name == "many_chunks":
        pytest.skip("the CPU kernel's chunks; slow in Triton's interpreter (many_chunks_cl covers Triton)")
    x = make_inputs(case, torch.float32, device)
    got = run(backend, case, x, order=1)
    assert_matches(got, oracle(case, x, order=1), torch.float32, f"{backend} {case.id}")


def test_results_do_not_depend_on_the_thread_count():
    case = Case(Layout("big", (8, 64, 16, 16), 1), 4, 2)
    x = make_inputs(case, torch.float32, "cpu")
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            results.append(run("cpu", case, x, order=1))
    finally:
        torch.set_num_threads(threads)
    for one, many in zip(*results):
        assert torch.equal(one, many)


# --- gradients -------------------------------------------------------------------------------


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("shape,group_size,num_channels,channels_last",
                         [((4, 2, 2, 1), 2, 1, False), ((3, 4, 1, 2), 4, 2, True)], ids=["g2f1", "g3f2_cl"])
def test_gradcheck_and_gradgradcheck(target, shape, group_size, num_channels, channels_last):
    device, backend = target
    x = torch.randn(shape, dtype=torch.float64, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()

    def fn(x):
        return medkern.ops.minibatch_stddev(x, group_size, num_channels)

    fast = backend == "triton" and device == "cpu"  # the interpreter launches slowly: one random direction
    with medkern.use_backend(backend):
        assert torch.autograd.gradcheck(fn, (x,), fast_mode=fast)
        assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=fast)


@pytest.mark.parametrize("target", kernel_targets())
def test_r1_penalty(target):
    """A GAN R1 penalty through the layer: the gradient of |d score / d x|^2 w.r.t. a weight."""
    device, backend = target
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(3, 3, dtype=torch.float64, device=device, requires_grad=True)

    def penalty(name):
        with medkern.use_backend(name):
            score = medkern.ops.minibatch_stddev(torch.einsum("nchw,dc->ndhw", x, w), 2, 1).square().sum()
            (gx,) = torch.autograd.grad(score, x, create_graph=True)
            return torch.autograd.grad(gx.square().sum(), w)[0]

    tolerances.assert_close(penalty(backend), penalty("reference"), "minibatch_stddev", "grad2", torch.float64)


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (4, 2, 0, 3), (2, 2, 3, 0)])
def test_empty(target, shape):
    device, backend = target
    x = torch.randn(shape, device=device, requires_grad=True)
    with medkern.use_backend(backend):
        y = medkern.ops.minibatch_stddev(x, 2, 2)
        assert y.shape == (shape[0], shape[1] + 2, shape[2], shape[3])
        (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert gx.shape == x.shape


@pytest.mark.parametrize("target", kernel_targets())
def test_expanded_upstream_gradient(target):
    """y.sum().backward() hands the backward an expanded (stride 0) gradient."""
    device, backend = target
    case = CASES[1]
    x = make_inputs(case, torch.float32, device)
    with medkern.use_backend(backend):
        xx = x.clone().requires_grad_()
        (medkern.ops.minibatch_stddev(xx, 2, 1) * 1.0).sum().backward()
    xr = x.clone().requires_grad_()
    reference_minibatch_stddev(xr, 2, 1).sum().backward()
    tolerances.assert_close(xx.grad, xr.grad, "minibatch_stddev", "grad", torch.float32)


# --- torch.compile, opcheck -----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_torch_compile_fullgraph_forward_and_backward(backend):
    def block(x):
        return medkern.ops.minibatch_stddev(x * 2.0, 2, 2).square().mean()

    x = torch.randn(4, 4, 5, 5, requires_grad=True)
    with medkern.use_backend(backend):
        torch._dynamo.reset()
        compiled = torch.compile(block, fullgraph=True)
        loss = compiled(x)
        (gx,) = torch.autograd.grad(loss, x)
        want_loss = block(x)
        (want_gx,) = torch.autograd.grad(want_loss, x)
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(gx, want_gx)


def test_triton_interpreter_refuses_torch_compile():
    with medkern.use_backend("triton"):
        torch._dynamo.reset()
        with pytest.raises(Exception, match="cannot be traced by torch.compile"):
            torch.compile(lambda x: medkern.ops.minibatch_stddev(x), fullgraph=True)(torch.randn(4, 3, 2, 2))


OPCHECK_ALL = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
OPCHECK_INTERPRETED = OPCHECK_ALL[:3]


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("case", [CASES[0], CASES[1]], ids=lambda c: c.id)
def test_opcheck(target, case):
    """torch.library.opcheck: schema, autograd registration, fake kernel, AOT dispatch (dynamic)."""
    device, backend = target
    forward, backward = _op_pair(backend)
    x = make_inputs(case, torch.float32, device).requires_grad_()
    utils = OPCHECK_INTERPRETED if (backend == "triton" and device == "cpu") else OPCHECK_ALL
    options = (case.group_size, case.num_channels)
    torch.library.opcheck(forward, (x, *options), test_utils=utils)
    n, c, h, w = x.shape
    grad = torch.randn(n, c + case.num_channels, h, w, device=device)
    torch.library.opcheck(backward, (grad, x, *options), test_utils=utils)


# --- bad input --------------------------------------------------------------------------------

BAD_CALLS = [
    (dict(x=torch.randint(0, 3, (4, 2, 3, 3))), TypeError, "x must be float32"),
    (dict(x=torch.randn(4, 2, 3)), ValueError, r"x must be 4-d \(N, C, H, W\)"),
    (dict(x=[1.0]), TypeError, "x must be a torch.Tensor"),
    (dict(x=torch.randn(6, 2, 3, 3)), ValueError, r"x.shape\[0\] \(N = 6\) must be divisible by the group size "
                                                  r"min\(group_size, N\) = 4"),
    (dict(num_channels=3), ValueError, r"x.shape\[1\] \(C = 2\) must be a positive multiple of num_channels = 3"),
    (dict(x=torch.randn(4, 0, 3, 3)), ValueError, r"C = 0\) must be a positive multiple"),
    (dict(group_size=0), ValueError, "group_size must be >= 1"),
    (dict(group_size=2.0), TypeError, "group_size must be an int"),
    (dict(num_channels=0), ValueError, "num_channels must be >= 1"),
    (dict(num_channels=True), TypeError, "num_channels must be an int"),
]


@pytest.mark.parametrize("backend", ["cpu", "triton", "reference"])
@pytest.mark.parametrize("kwargs,error,message", BAD_CALLS, ids=[c[2][:24] for c in BAD_CALLS])
def test_bad_input_names_the_argument(backend, kwargs, error, message):
    args = dict(x=torch.randn(4, 2, 3, 3), group_size=4, num_channels=1)
    args.update(kwargs)
    with medkern.use_backend(backend), pytest.raises(error, match=message) as info:
        medkern.ops.minibatch_stddev(**args)
    assert "medkern.ops.minibatch_stddev" in str(info.value)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda op: op(torch.randn(6, 2, 3, 3), 4, 1), r"N = 6\) must be divisible by the group size"),
        (lambda op: op(torch.randn(4, 2, 3, 3), 4, 3), r"C = 2\) must be a positive multiple of num_channels = 3"),
        (lambda op: op(torch.randn(4, 2, 3), 4, 1), "x must be 4-d"),
        (lambda op: op(torch.randn(4, 2, 3, 3), 0, 1), "group_size must be >= 1"),
        (lambda op: op(torch.randn(4, 2, 3, 3), 4, 0), "num_channels must be >= 1"),
        (lambda op: op(torch.randint(0, 2, (4, 2, 3, 3)), 4, 1), "x must be float32"),
    ],
    ids=["group", "channels", "rank", "group_size", "num_channels", "x_dtype"],
)
def test_cpp_op_checks_its_arguments(call, message):
    """Direct torch.ops.medkern calls are checked in C++ too, with the op and argument named."""
    with pytest.raises((ValueError, TypeError, RuntimeError), match=message) as info:
        call(torch.ops.medkern.minibatch_stddev)
    assert "medkern::minibatch_stddev" in str(info.value)


def test_cpp_backward_op_checks_grad():
    x = torch.randn(4, 2, 3, 3)
    with pytest.raises(ValueError, match=r"medkern::minibatch_stddev_backward: grad must have shape \(N, C \+ "
                                         r"num_channels, H, W\) = \(4, 3, 3, 3\)"):
        torch.ops.medkern.minibatch_stddev_backward(torch.randn(4, 2, 3, 3), x, 4, 1)
    with pytest.raises(TypeError, match="grad must have dtype"):
        torch.ops.medkern.minibatch_stddev_backward(torch.randn(4, 3, 3, 3).double(), x, 4, 1)


# --- the module --------------------------------------------------------------------------------


def test_minibatch_stddev_module():
    m = MinibatchStdDev()
    assert list(m.state_dict()) == [] and "group_size=4, num_channels=1" in repr(m)
    x = torch.randn(8, 6, 4, 4, requires_grad=True)
    y = m(x)
    torch.testing.assert_close(y, stylegan2(x, 4, 1))
    y.sum().backward()
    assert x.grad.shape == x.shape
    torch.testing.assert_close(MinibatchStdDev(2, 3)(x), stylegan2(x, 2, 3))
    with pytest.raises(ValueError, match="medkern.nn.MinibatchStdDev: group_size must be >= 1"):
        MinibatchStdDev(group_size=0)
    with pytest.raises(TypeError, match="medkern.nn.MinibatchStdDev: num_channels must be an int"):
        MinibatchStdDev(num_channels=1.5)
