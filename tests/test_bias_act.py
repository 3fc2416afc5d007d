"""medkern.ops.bias_act: every implementation against the reference, gradients, tracing, bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import medkern
from medkern import activations, tolerances
from medkern.nn import BiasAct
from medkern.reference.bias_act import bias_act as reference_bias_act

from medkern.testing.bias_act import LAYOUTS, Layout, assert_matches, make_inputs, options_for, oracle, resolve, run
from conftest import kernel_targets, needs_cuda

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
ACTS = list(activations.NAMES)


# --- parity with the reference -------------------------------------------------------------


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda l: l.name)
def test_matches_reference(target, dtype, act, layout):
    """Forward, gradients and second-order gradients of each kernel equal the reference's."""
    device, backend = target
    variant = LAYOUTS.index(layout) % 2  # half the layouts run with alpha, gain and clamp set
    alpha, gain, clamp = options_for(act, variant)
    x, b = make_inputs(layout, dtype, device, act, alpha, gain, clamp)
    got = run(backend, x, b, layout.dim, act, alpha, gain, clamp)
    want = oracle(x, b, layout.dim, act, alpha, gain, clamp)
    assert_matches(got, want, dtype, f"{backend} {act} {layout.name}")
    assert got[0].stride() == torch.empty_like(x).stride(), "the output is laid out as torch.empty_like(x)"
    if layout.make != "sliced":  # dense inputs keep their layout
        assert got[0].stride() == x.stride()


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("variant", [0, 1], ids=["defaults", "alpha_gain_clamp"])
def test_without_bias(target, act, variant):
    device, backend = target
    layout = LAYOUTS[0]
    alpha, gain, clamp = options_for(act, variant)
    x, _ = make_inputs(layout, torch.float64, device, act, alpha, gain, clamp, bias=False)
    got = run(backend, x, None, 1, act, alpha, gain, clamp)
    want = oracle(x, None, 1, act, alpha, gain, clamp)
    assert_matches(got, want, torch.float64, f"{backend} {act} no bias")


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("act", ACTS)
def test_large_values_and_clamp_zero(target, act):
    """Saturating inputs (exp overflow regions, softplus's linear range) and clamp=0."""
    device, backend = target
    x = torch.tensor([-80.0, -30.0, -21.0, -5.5, 5.5, 21.0, 30.0, 80.0], dtype=torch.float32, device=device)
    x = x.reshape(2, 4)
    for clamp in (None, 0.0):
        with medkern.use_backend(backend):
            y = medkern.ops.bias_act(x, None, 1, act, clamp=clamp)
        want = reference_bias_act(x, None, 1, *resolve(act, None, None, clamp)[:3], clamp)
        tolerances.assert_close(y, want, "bias_act", "forward", x.dtype)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("act", ACTS)
def test_nan_propagates_like_torch(target, act):
    device, backend = target
    x = torch.tensor([[float("nan"), 1.0, -1.0], [0.5, float("nan"), -2.0]], device=device)
    with medkern.use_backend(backend):
        y = medkern.ops.bias_act(x, None, 1, act, clamp=3.0)
    want = reference_bias_act(x, None, 1, *resolve(act, None, None, 3.0))
    torch.testing.assert_close(y, want, equal_nan=True)
    if act != "linear":
        assert torch.isnan(y[0, 0]) and torch.isnan(y[1, 1])


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("act", ["relu", "lrelu", "elu", "selu"])
def test_derivative_at_the_kink_follows_torch(target, act):
    """At x + b == 0 exactly the kernels use torch's one-sided derivative (relu'(0) = 0, ...)."""
    device, backend = target
    b = torch.tensor([0.25, -0.5], dtype=torch.float64, device=device)
    x = (-b).repeat(3, 1)  # x + b == 0 everywhere
    got = run(backend, x, b, 1, act, None, None, None)
    want = run("reference", x, b, 1, act, None, None, None)
    assert_matches(got, want, torch.float64, f"{backend} {act} at 0")


# --- gradients -------------------------------------------------------------------------------


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("variant", [0, 1], ids=["defaults", "alpha_gain_clamp"])
@pytest.mark.parametrize("seed", [0, 1])
def test_gradcheck_and_gradgradcheck(target, act, variant, seed):
    device, backend = target
    alpha, gain, clamp = options_for(act, variant)
    layout = Layout("small", (2, 3, 4), 1)
    torch.manual_seed(seed)
    x, b = make_inputs(layout, torch.float64, device, act, alpha, gain, clamp, scale=1.5)
    x.requires_grad_()
    b.requires_grad_()

    def fn(x, b):
        return medkern.ops.bias_act(x, b, 1, act, alpha, gain, clamp)

    with medkern.use_backend(backend):
        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("act", ACTS)
def test_third_order_gradient(target, act):
    """Orders beyond 2 run through PyTorch ops on top of the fused order-2 op; they match autograd."""
    device, backend = target
    alpha, gain, clamp = options_for(act, 1)
    x, b = make_inputs(Layout("small", (2, 3, 4), 1), torch.float64, device, act, alpha, gain, clamp, scale=1.5)

    def third(backend_name):
        xx = x.clone().requires_grad_()
        bb = b.clone().requires_grad_()
        with medkern.use_backend(backend_name):
            y = medkern.ops.bias_act(xx, bb, 1, act, alpha, gain, clamp)
            grad = y
            for _ in range(3):  # autograd drops the graph where a derivative is constant
                if not grad.requires_grad:
                    return torch.zeros_like(xx), torch.zeros_like(bb)
                gx, gb = torch.autograd.grad(grad.sum(), (xx, bb), create_graph=True, materialize_grads=True)
                grad = gx
            return gx, gb

    for got, want in zip(third(backend), third("reference")):
        tolerances.assert_close(got, want, "bias_act", "grad2", torch.float64)


@pytest.mark.parametrize("target", kernel_targets())
def test_gradient_of_bias_only(target):
    """x not requiring grad still gets b's gradient (and the other way round)."""
    device, backend = target
    x, b = make_inputs(LAYOUTS[0], torch.float64, device, "silu", None, None, None)
    with medkern.use_backend(backend):
        bb = b.clone().requires_grad_()
        (gb,) = torch.autograd.grad(medkern.ops.bias_act(x, bb, 1, "silu").sum(), bb)
        xx = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(medkern.ops.bias_act(xx, b, 1, "silu").sum(), xx)
    xr, br = x.clone().requires_grad_(), b.clone().requires_grad_()
    want_gx, want_gb = torch.autograd.grad(reference_bias_act(xr, br, 1, "silu", 0.0, 1.0, None).sum(), (xr, br))
    torch.testing.assert_close(gb, want_gb)
    torch.testing.assert_close(gx, want_gx)


# --- empty, odd and large inputs -------------------------------------------------------------

LARGE_LAYOUTS = [
    Layout("long_rows", (2, 3, 5000), 1),  # rows of several blocks (scalar-bias path)
    Layout("channels_last_many_rows", (3, 5, 61, 47), 1, "channels_last"),  # grouped rows, a short last one
    Layout("long_vector_rows", (1, 3000, 37), 1),  # rows too long to tabulate the bias
    Layout("one_channel", (3, 1, 7000), 1),
]


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("layout", LARGE_LAYOUTS, ids=lambda l: l.name)
def test_large_inputs(target, layout):
    """Sizes past one block: many parallel tasks, row chunks of the bias-gradient sum."""
    device, backend = target
    x, b = make_inputs(layout, torch.float64, device, "silu", None, 1.3, 2.0)
    got = run(backend, x, b, layout.dim, "silu", None, 1.3, 2.0, order=1)
    want = oracle(x, b, layout.dim, "silu", None, 1.3, 2.0, order=1)
    assert_matches(got, want, torch.float64, f"{backend} {layout.name}")


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("make_bias", [lambda c: torch.randn(2 * c)[::2], lambda c: torch.tensor(0.5).expand(c)],
                         ids=["strided", "expanded"])
def test_non_contiguous_bias(target, make_bias):
    device, backend = target
    x = torch.randn(2, 4, 3, dtype=torch.float64, device=device)
    b = make_bias(4).double().to(device)
    got = run(backend, x, b, 1, "tanh", None, None, None, order=1)
    want = oracle(x, b.contiguous(), 1, "tanh", None, None, None, order=1)
    assert_matches(got, want, torch.float64, f"{backend} non-contiguous bias")


@pytest.mark.parametrize("layout", [LAYOUTS[0], LAYOUTS[1], LARGE_LAYOUTS[0], LARGE_LAYOUTS[1]], ids=lambda l: l.name)
def test_results_do_not_depend_on_the_thread_count(layout):
    x, b = make_inputs(layout, torch.float32, "cpu", "gelu", None, 1.3, 2.0)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            results.append(run("cpu", x, b, layout.dim, "gelu", None, 1.3, 2.0, order=1))
    finally:
        torch.set_num_threads(threads)
    for one, many in zip(*results):
        assert torch.equal(one, many)


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("act", ACTS)
def test_gradient_at_nan_follows_torch(target, act):
    device, backend = target
    x = torch.tensor([[float("nan"), 1.0, -1.0]], dtype=torch.float64, device=device)
    got = run(backend, x, None, 1, act, None, None, None, order=1)
    want = run("reference", x, None, 1, act, None, None, None, order=1)
    torch.testing.assert_close(got[1], want[1], equal_nan=True)


def test_triton_float64_needs_scalars_in_float32_range():
    with medkern.use_backend("triton"), pytest.raises(ValueError, match="within float32's range"):
        medkern.ops.bias_act(torch.randn(2, 3, dtype=torch.float64), None, 1, "tanh", clamp=1e300)


@pytest.mark.parametrize("target", kernel_targets())
def test_float32_clamp_beyond_float32_range_is_no_clamp(target):
    device, backend = target
    x = torch.randn(2, 3, device=device) * 10
    with medkern.use_backend(backend):
        y = medkern.ops.bias_act(x, None, 1, "linear", clamp=1e300)
    torch.testing.assert_close(y, x)


@pytest.mark.parametrize("target", kernel_targets())
def test_negative_dim_through_third_order(target):
    """Direct op callers may pass a negative dim; every gradient order handles it."""
    device, backend = target
    forward, _ = _op_pair(backend)
    x = torch.randn(2, 3, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, device=device, requires_grad=True)
    y = forward(x, b, -1, "tanh", 0.0, 1.0, None)
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (ggx,) = torch.autograd.grad(gx.sum(), x, create_graph=True)
    gggb = torch.autograd.grad(ggx.sum(), b)[0]
    xr, br = x.detach().requires_grad_(), b.detach().requires_grad_()
    yr = torch.tanh(xr + br)
    (gxr,) = torch.autograd.grad(yr.sum(), xr, create_graph=True)
    (ggxr,) = torch.autograd.grad(gxr.sum(), xr, create_graph=True)
    tolerances.assert_close(gggb, torch.autograd.grad(ggxr.sum(), br)[0], "bias_act", "grad2", torch.float64)



@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("shape,dim", [((0, 3, 4), 1), ((2, 0, 5), 1), ((0,), 0), ((3, 4, 0), 1)])
def test_empty(target, shape, dim):
    device, backend = target
    x = torch.randn(shape, device=device, requires_grad=True)
    b = torch.randn(shape[dim], device=device, requires_grad=True)
    with medkern.use_backend(backend):
        y = medkern.ops.bias_act(x, b, dim, "lrelu", gain=2.0, clamp=1.0)
        assert y.shape == x.shape
        gx, gb = torch.autograd.grad(y, (x, b), torch.ones_like(y))
    assert gx.shape == x.shape and gb.shape == b.shape
    assert (gb == 0).all()


@pytest.mark.parametrize("target", kernel_targets())
def test_expanded_upstream_gradient(target):
    """y.sum().backward() hands the backward an expanded (stride 0) gradient."""
    device, backend = target
    x, b = make_inputs(LAYOUTS[1], torch.float32, device, "gelu", None, None, None)
    with medkern.use_backend(backend):
        xx = x.clone().requires_grad_()
        medkern.ops.bias_act(xx, b, 1, "gelu").sum().backward()
    xr = x.clone().requires_grad_()
    reference_bias_act(xr, b, 1, "gelu", 0.0, 1.0, None).sum().backward()
    torch.testing.assert_close(xx.grad, xr.grad)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=5),
    data=st.data(),
    act=st.sampled_from(ACTS),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_any_shape_stride_and_dim(shape, data, act, dtype):
    """Random ranks, sizes (0 included), dims and memory orders (permutations), C++ CPU kernel."""
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    order = data.draw(st.permutations(range(len(shape))))
    base = torch.randn([shape[i] for i in order], dtype=dtype) * 2
    x = base.permute([order.index(i) for i in range(len(shape))])  # dense, memory order `order`
    b = torch.randn(shape[dim], dtype=dtype)
    clamp = data.draw(st.sampled_from([None, 1.0]))
    with medkern.use_backend("cpu"):
        y = medkern.ops.bias_act(x, b, dim, act, clamp=clamp)
    want = reference_bias_act(x, b, dim % len(shape), *resolve(act, None, None, clamp)[:3], clamp)
    tolerances.assert_close(y, want, "bias_act", "forward", dtype)
    assert y.stride() == x.stride() or x.numel() == 0


# --- autocast, torch.compile, opcheck --------------------------------------------------------


def test_autocast_casts_the_bias_to_x():
    """Under autocast a float32 bias meets a bfloat16 activation: the op runs in bfloat16."""
    conv = torch.nn.Conv2d(3, 8, 3, bias=False)
    b = torch.randn(8, requires_grad=True)
    x = torch.randn(2, 3, 10, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x)
        assert h.dtype == torch.bfloat16
        y = medkern.ops.bias_act(h, b, 1, "lrelu", gain=math.sqrt(2))
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert b.grad is not None and b.grad.dtype == torch.float32
    want = reference_bias_act(h.detach().float(), b.detach().bfloat16().float(), 1, "lrelu", 0.01, math.sqrt(2), None)
    torch.testing.assert_close(y.float(), want.bfloat16().float())


def test_mismatched_bias_dtype_outside_autocast_is_an_error():
    with pytest.raises(TypeError, match="b must have dtype torch.float16"):
        medkern.ops.bias_act(torch.randn(2, 3).half(), torch.randn(3), 1, "relu")


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_torch_compile_fullgraph_forward_and_backward(backend):
    def block(x, b):
        return medkern.ops.bias_act(x, b, 1, "lrelu", alpha=0.2, gain=math.sqrt(2), clamp=4.0).square().mean()

    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    with medkern.use_backend(backend):
        torch._dynamo.reset()
        compiled = torch.compile(block, fullgraph=True)
        loss = compiled(x, b)
        gx, gb = torch.autograd.grad(loss, (x, b))
        want_loss = block(x, b)
        want_gx, want_gb = torch.autograd.grad(want_loss, (x, b))
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(gx, want_gx)
    torch.testing.assert_close(gb, want_gb)


OPCHECK_ALL = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
OPCHECK_INTERPRETED = OPCHECK_ALL[:3]


def test_triton_interpreter_refuses_torch_compile():
    """Compiling the interpreter would trace no kernel; medkern says so instead of computing garbage."""
    def fn(x):
        return medkern.ops.bias_act(x, None, 1, "relu")

    with medkern.use_backend("triton"):
        torch._dynamo.reset()
        with pytest.raises(Exception, match="cannot be traced by torch.compile"):
            torch.compile(fn, fullgraph=True)(torch.randn(2, 3))


def _op_pair(backend):
    if backend == "triton":
        import medkern.triton.bias_act as triton_bias_act

        return triton_bias_act.forward_op(), triton_bias_act.backward_op()
    return torch.ops.medkern.bias_act.default, torch.ops.medkern.bias_act_backward.default


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize(
    "layout,act,clamp",
    [(LAYOUTS[0], "lrelu", 1.5), (LAYOUTS[1], "gelu", None), (LAYOUTS[5], "tanh", None), (LAYOUTS[3], "elu", 2.0)],
    ids=["nchw-lrelu-clamp", "channels_last-gelu", "rank1-tanh", "transposed-elu-clamp"],
)
def test_opcheck(target, layout, act, clamp):
    """torch.library.opcheck: schema, autograd registration, fake kernel, AOT dispatch (dynamic)."""
    device, backend = target
    forward, backward = _op_pair(backend)
    name, alpha, gain, _ = resolve(act, None, 1.3, clamp)
    x, b = make_inputs(layout, torch.float32, device, act, None, gain, clamp)
    dim = layout.dim % x.dim()
    x.requires_grad_()
    b.requires_grad_()
    # Triton's interpreter cannot be traced (AOT dispatch); it runs for real kernels on a GPU
    utils = OPCHECK_INTERPRETED if (backend == "triton" and device == "cpu") else OPCHECK_ALL
    torch.library.opcheck(forward, (x, b, dim, name, alpha, gain, clamp), test_utils=utils)
    torch.library.opcheck(forward, (x.detach(), None, dim, name, alpha, gain, clamp), test_utils=utils)
    g = torch.randn_like(x)
    for order in (1, 2):
        for bias_grad in (True, False):
            torch.library.opcheck(backward, (g, x, b, dim, name, alpha, gain, clamp, order, bias_grad), test_utils=utils)


# --- bad input --------------------------------------------------------------------------------

BAD_CALLS = [
    (dict(x=torch.randint(0, 3, (2, 3))), TypeError, "x must be float32"),
    (dict(x=torch.tensor(1.0)), ValueError, "at least one dimension"),
    (dict(b=torch.randn(4)), ValueError, r"b must be 1-d with x.shape\[1\] = 3"),
    (dict(b=torch.randn(3, 1)), ValueError, "b must be 1-d"),
    (dict(b=torch.randn(3).double()), TypeError, "b must have dtype torch.float32"),
    (dict(b=[1.0, 2.0, 3.0]), TypeError, "b must be a torch.Tensor"),
    (dict(dim=2), ValueError, r"dim must be in \[-2, 1\]"),
    (dict(dim=1.0), TypeError, "dim must be an int"),
    (dict(act="swishy"), ValueError, "unknown activation act='swishy'"),
    (dict(act=3), TypeError, "act must be a string"),
    (dict(act="relu", alpha=0.1), ValueError, "act='relu' takes no alpha"),
    (dict(act="lrelu", alpha="0.1"), TypeError, "alpha must be a real number"),
    (dict(clamp=-1.0), ValueError, "clamp must be >= 0"),
    (dict(clamp=float("nan")), TypeError, "clamp must be a real number"),
    (dict(gain=float("inf")), ValueError, "gain must be finite"),
    (dict(act="lrelu", alpha=float("nan")), ValueError, "alpha must be finite"),
]


@pytest.mark.parametrize("backend", ["cpu", "triton", "reference"])
@pytest.mark.parametrize("kwargs,error,message", BAD_CALLS, ids=[c[2][:24] for c in BAD_CALLS])
def test_bad_input_names_the_argument(backend, kwargs, error, message):
    args = dict(x=torch.randn(2, 3), b=torch.randn(3), dim=1, act="linear")
    args.update(kwargs)
    with medkern.use_backend(backend), pytest.raises(error, match=message) as info:
        medkern.ops.bias_act(**args)
    assert "medkern.ops.bias_act" in str(info.value)


@needs_cuda
def test_bias_on_another_device_is_an_error():
    with pytest.raises(ValueError, match="b must be on cpu"):
        medkern.ops.bias_act(torch.randn(2, 3), torch.randn(3, device="cuda"), 1, "relu")


def test_bias_on_another_device_is_an_error_meta():
    """The same check without a GPU: a bias on the meta device."""
    with pytest.raises(ValueError, match=r"medkern.ops.bias_act: b must be on cpu \(the device of x\), got meta"):
        medkern.ops.bias_act(torch.randn(2, 3), torch.randn(3, device="meta"), 1, "relu")


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda op: op(torch.randn(2, 3), torch.randn(4), 1, "relu", 0.0, 1.0, None), "b must be 1-d"),
        (lambda op: op(torch.randn(2, 3), None, 5, "relu", 0.0, 1.0, None), "dim must be in"),
        (lambda op: op(torch.randn(2, 3), None, 1, "nope", 0.0, 1.0, None), "unknown activation act='nope'"),
        (lambda op: op(torch.randn(2, 3), None, 1, "relu", 0.0, 1.0, -2.0), "clamp must be >= 0"),
        (lambda op: op(torch.randn(2, 3), torch.randn(3).double(), 1, "relu", 0.0, 1.0, None), "b must have dtype"),
        (lambda op: op(torch.randint(0, 2, (2, 3)), None, 1, "relu", 0.0, 1.0, None), "x must be float32"),
    ],
    ids=["bias_length", "dim", "act", "clamp", "bias_dtype", "x_dtype"],
)
def test_cpp_op_checks_its_arguments(call, message):
    """Direct torch.ops.medkern calls are checked in C++ too, with the op and argument named."""
    with pytest.raises((ValueError, TypeError, RuntimeError), match=message) as info:
        call(torch.ops.medkern.bias_act)
    assert "medkern::bias_act" in str(info.value)


def test_cpp_backward_op_checks_order_and_grad():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        torch.ops.medkern.bias_act_backward(x, x, None, 1, "relu", 0.0, 1.0, None, 3, False)
    with pytest.raises(ValueError, match="grad must have the shape of x"):
        torch.ops.medkern.bias_act_backward(x[:1], x, None, 1, "relu", 0.0, 1.0, None, 1, False)


# --- the module --------------------------------------------------------------------------------


def test_bias_act_module():
    m = BiasAct(6, act="lrelu", alpha=0.2, gain=math.sqrt(2), clamp=256.0)
    assert list(m.state_dict()) == ["bias"]
    with torch.no_grad():
        m.bias.copy_(torch.randn(6))
    x = torch.randn(2, 6, 5, 5, requires_grad=True)
    y = m(x)
    want = reference_bias_act(x, m.bias, 1, "lrelu", 0.2, math.sqrt(2), 256.0)
    torch.testing.assert_close(y, want)
    y.sum().backward()
    assert m.bias.grad.shape == (6,)
    assert "act='lrelu'" in repr(m) and "clamp=256.0" in repr(m)
    no_bias = BiasAct(6, act="gelu", bias=False)
    assert no_bias.bias is None and list(no_bias.state_dict()) == []
    torch.testing.assert_close(no_bias(x), torch.nn.functional.gelu(x))


def test_bias_act_module_rejects_bad_arguments_at_construction():
    with pytest.raises(ValueError, match="unknown activation"):
        BiasAct(4, act="nope")
    with pytest.raises(ValueError, match="takes no alpha"):
        BiasAct(4, act="relu", alpha=0.1)
    with pytest.raises(ValueError, match="clamp must be >= 0"):
        BiasAct(4, clamp=-1.0)
    with pytest.raises(ValueError, match="num_features"):
        BiasAct(-1)
    with pytest.raises(TypeError, match="medkern.nn.BiasAct: clamp must be a real number"):
        BiasAct(3, clamp="1")


def test_aliases_name_the_same_activation():
    x = torch.randn(3, 4)
    for alias, name in activations.ALIASES.items():
        torch.testing.assert_close(medkern.ops.bias_act(x, None, 1, alias), medkern.ops.bias_act(x, None, 1, name))
