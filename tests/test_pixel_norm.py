"""medkern.ops.pixel_norm: every implementation against the reference, gradients, tracing, bad input."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import medkern
from medkern import tolerances
from medkern.nn import PixelNorm
from medkern.reference.pixel_norm import pixel_norm as reference_pixel_norm
from medkern.testing.bias_act import Layout
from medkern.testing.pixel_norm import LAYOUTS, assert_matches, make_inputs, oracle, run

from conftest import kernel_targets

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
EPS = 1e-8


def _op_pair(backend):
    if backend == "triton":
        import medkern.triton.pixel_norm as triton_pixel_norm

        return triton_pixel_norm.forward_op(), triton_pixel_norm.backward_op()
    return torch.ops.medkern.pixel_norm.default, torch.ops.medkern.pixel_norm_backward.default


# --- parity with the reference -------------------------------------------------------------


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda l: l.name)
def test_matches_reference(target, dtype, layout):
    """Forward, gradient and second-order gradient of each kernel equal the reference's."""
    device, backend = target
    eps = EPS if LAYOUTS.index(layout) % 2 == 0 else 0.5  # half the layouts with a large eps
    x = make_inputs(layout, dtype, device)
    got = run(backend, x, layout.dim, eps)
    want = oracle(x, layout.dim, eps)
    assert_matches(got, want, dtype, f"{backend} {layout.name}")
    assert got[0].stride() == torch.empty_like(x).stride(), "the output is laid out as torch.empty_like(x)"
    if layout.make != "sliced":  # dense inputs keep their layout
        assert got[0].stride() == x.stride() and got[1].stride() == x.stride()


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("layout", [Layout("many_positions", (3, 7, 40, 37), 1),
                                    Layout("many_channels_last", (2, 300, 9, 11), 1, "channels_last")],
                         ids=lambda l: l.name)
def test_large_inputs(target, layout):
    """Sizes past one task: many parallel tasks and runs."""
    device, backend = target
    x = make_inputs(layout, torch.float32, device)
    got = run(backend, x, layout.dim, EPS, order=1)
    assert_matches(got, oracle(x, layout.dim, EPS, order=1), torch.float32, f"{backend} {layout.name}")


def test_results_do_not_depend_on_the_thread_count():
    x = make_inputs(Layout("big", (4, 33, 50, 41), 1), torch.float32, "cpu")
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            results.append(run("cpu", x, 1, EPS, order=1))
    finally:
        torch.set_num_threads(threads)
    for one, many in zip(*results):
        assert torch.equal(one, many)


@pytest.mark.parametrize("target", kernel_targets())
def test_zeros_and_nan(target):
    """All-zero positions give 0 (eps > 0); a NaN spreads over its position only, as in torch."""
    device, backend = target
    x = torch.zeros(2, 3, 4, device=device)
    x[1, 1, 2] = float("nan")
    with medkern.use_backend(backend):
        y = medkern.ops.pixel_norm(x)
    torch.testing.assert_close(y, reference_pixel_norm(x, 1, EPS), equal_nan=True)
    assert torch.isnan(y[1, :, 2]).all() and (y[0] == 0).all()


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=5),
    data=st.data(),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_any_shape_stride_and_dim(shape, data, dtype):
    """Random ranks, sizes (0 included), dims and memory orders (permutations), C++ CPU kernel."""
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    order = data.draw(st.permutations(range(len(shape))))
    base = torch.randn([shape[i] for i in order], dtype=dtype) * 2
    x = base.permute([order.index(i) for i in range(len(shape))])  # dense, memory order `order`
    with medkern.use_backend("cpu"):
        y = medkern.ops.pixel_norm(x, dim)
    tolerances.assert_close(y, reference_pixel_norm(x, dim % len(shape), EPS), "pixel_norm", "forward", dtype)
    assert y.stride() == x.stride() or x.numel() == 0


# --- gradients -------------------------------------------------------------------------------


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("shape,dim,eps", [((2, 3, 4), 1, EPS), ((3, 5), -1, 0.1), ((2, 3, 2, 2), 1, EPS)],
                         ids=["nchw", "last_dim", "4d"])
def test_gradcheck_and_gradgradcheck(target, shape, dim, eps):
    device, backend = target
    x = torch.randn(shape, dtype=torch.float64, device=device, requires_grad=True)
    if len(shape) == 4:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()

    def fn(x):
        return medkern.ops.pixel_norm(x, dim, eps)

    fast = backend == "triton" and device == "cpu"  # the interpreter launches slowly: one random direction
    with medkern.use_backend(backend):
        assert torch.autograd.gradcheck(fn, (x,), fast_mode=fast)
        assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=fast)


@pytest.mark.parametrize("target", kernel_targets())
def test_third_order_gradient(target):
    """The backward's derivative runs through the reference, which autograd differentiates again."""
    device, backend = target
    x = torch.randn(2, 3, 4, dtype=torch.float64, device=device)

    def third(name):
        xx = x.clone().requires_grad_()
        with medkern.use_backend(name):
            grad = medkern.ops.pixel_norm(xx).pow(3)
            for _ in range(3):
                (grad,) = torch.autograd.grad(grad.sum(), xx, create_graph=True)
        return grad

    tolerances.assert_close(third(backend), third("reference"), "pixel_norm", "grad2", torch.float64)


@pytest.mark.parametrize("target", kernel_targets())
def test_r1_penalty(target):
    """A GAN R1 penalty: the gradient of |d out / d x|^2 w.r.t. a weight before the op."""
    device, backend = target
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(4, 4, dtype=torch.float64, device=device, requires_grad=True)

    def penalty(name):
        with medkern.use_backend(name):
            out = medkern.ops.pixel_norm(torch.einsum("nchw,dc->ndhw", x, w)).square().sum()
            (gx,) = torch.autograd.grad(out, x, create_graph=True)
            return torch.autograd.grad(gx.square().sum(), w)[0]

    tolerances.assert_close(penalty(backend), penalty("reference"), "pixel_norm", "grad2", torch.float64)


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("shape,dim", [((0, 3, 4), 1), ((2, 0, 5), 1), ((0,), 0), ((3, 4, 0), 1)])
def test_empty(target, shape, dim):
    device, backend = target
    x = torch.randn(shape, device=device, requires_grad=True)
    with medkern.use_backend(backend):
        y = medkern.ops.pixel_norm(x, dim)
        assert y.shape == x.shape
        (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert gx.shape == x.shape


@pytest.mark.parametrize("target", kernel_targets())
def test_expanded_upstream_gradient(target):
    """y.sum().backward() hands the backward an expanded (stride 0) gradient."""
    device, backend = target
    x = make_inputs(LAYOUTS[1], torch.float32, device)
    with medkern.use_backend(backend):
        xx = x.clone().requires_grad_()
        medkern.ops.pixel_norm(xx).sum().backward()
    xr = x.clone().requires_grad_()
    reference_pixel_norm(xr, 1, EPS).sum().backward()
    tolerances.assert_close(xx.grad, xr.grad, "pixel_norm", "grad", torch.float32)


# --- torch.compile, opcheck -----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_torch_compile_fullgraph_forward_and_backward(backend):
    def block(x):
        return medkern.ops.pixel_norm(x * 2.0, 1, 1e-8).square().mean()

    x = torch.randn(2, 4, 6, 6, requires_grad=True)
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
            torch.compile(lambda x: medkern.ops.pixel_norm(x), fullgraph=True)(torch.randn(2, 3))


OPCHECK_ALL = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
OPCHECK_INTERPRETED = OPCHECK_ALL[:3]


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("layout", [LAYOUTS[0], LAYOUTS[1], LAYOUTS[4], LAYOUTS[5]], ids=lambda l: l.name)
def test_opcheck(target, layout):
    """torch.library.opcheck: schema, autograd registration, fake kernel, AOT dispatch (dynamic)."""
    device, backend = target
    forward, backward = _op_pair(backend)
    x = make_inputs(layout, torch.float32, device).requires_grad_()
    dim = layout.dim % x.dim()
    utils = OPCHECK_INTERPRETED if (backend == "triton" and device == "cpu") else OPCHECK_ALL
    torch.library.opcheck(forward, (x, dim, EPS), test_utils=utils)
    torch.library.opcheck(backward, (torch.randn_like(x), x, dim, EPS), test_utils=utils)


# --- bad input --------------------------------------------------------------------------------

BAD_CALLS = [
    (dict(x=torch.randint(0, 3, (2, 3))), TypeError, "x must be float32"),
    (dict(x=torch.tensor(1.0)), ValueError, "at least one dimension"),
    (dict(x=[1.0, 2.0]), TypeError, "x must be a torch.Tensor"),
    (dict(dim=2), ValueError, r"dim must be in \[-2, 1\]"),
    (dict(dim=1.0), TypeError, "dim must be an int"),
    (dict(eps=-1.0), ValueError, "eps must be finite and >= 0"),
    (dict(eps=float("nan")), ValueError, "eps must be finite and >= 0"),
    (dict(eps="1e-8"), TypeError, "eps must be a real number"),
]


@pytest.mark.parametrize("backend", ["cpu", "triton", "reference"])
@pytest.mark.parametrize("kwargs,error,message", BAD_CALLS, ids=[c[2][:24] for c in BAD_CALLS])
def test_bad_input_names_the_argument(backend, kwargs, error, message):
    args = dict(x=torch.randn(2, 3), dim=1, eps=EPS)
    args.update(kwargs)
    with medkern.use_backend(backend), pytest.raises(error, match=message) as info:
        medkern.ops.pixel_norm(**args)
    assert "medkern.ops.pixel_norm" in str(info.value)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda op: op(torch.randn(2, 3), 5, EPS), "dim must be in"),
        (lambda op: op(torch.tensor(1.0), 0, EPS), "at least one dimension"),
        (lambda op: op(torch.randn(2, 3), 1, -1.0), "eps must be finite and >= 0"),
        (lambda op: op(torch.randint(0, 2, (2, 3)), 1, EPS), "x must be float32"),
    ],
    ids=["dim", "0-d", "eps", "x_dtype"],
)
def test_cpp_op_checks_its_arguments(call, message):
    """Direct torch.ops.medkern calls are checked in C++ too, with the op and argument named."""
    with pytest.raises((ValueError, TypeError, RuntimeError), match=message) as info:
        call(torch.ops.medkern.pixel_norm)
    assert "medkern::pixel_norm" in str(info.value)


def test_cpp_backward_op_checks_grad():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="medkern::pixel_norm_backward: grad must have the shape of x"):
        torch.ops.medkern.pixel_norm_backward(x[:1], x, 1, EPS)
    with pytest.raises(TypeError, match="grad must have dtype"):
        torch.ops.medkern.pixel_norm_backward(x.double(), x, 1, EPS)


# --- the module --------------------------------------------------------------------------------


def test_pixel_norm_module():
    m = PixelNorm()
    assert list(m.state_dict()) == [] and "dim=1, eps=1e-08" in repr(m)
    x = torch.randn(2, 6, 5, 5, requires_grad=True)
    y = m(x)
    torch.testing.assert_close(y, x / (x.square().mean(1, keepdim=True) + 1e-8).sqrt())
    y.sum().backward()
    assert x.grad.shape == x.shape
    torch.testing.assert_close(PixelNorm(dim=-1, eps=0.5)(x), reference_pixel_norm(x, 3, 0.5))
    with pytest.raises(ValueError, match="medkern.nn.PixelNorm: eps must be finite"):
        PixelNorm(eps=-1.0)
    with pytest.raises(TypeError, match="medkern.nn.PixelNorm: dim must be an int"):
        PixelNorm(dim="1")
