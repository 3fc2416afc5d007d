"""medkern.ops.upfirdn2d and its helpers: every implementation against the reference, gradients
of every order, tracing, layouts, bad input."""

import dataclasses

import pytest
import torch

import medkern
from medkern.ops.upfirdn2d import kernel_op
from medkern.reference.upfirdn2d import upfirdn2d as reference_upfirdn2d
from medkern.testing.upfirdn2d import CASES, Case, assert_matches, make_inputs, oracle, run
from conftest import kernel_targets

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_matches_reference(target, dtype, case):
    """Forward, input gradient and second-order gradient of each kernel equal the reference's."""
    device, backend = target
    x, f = make_inputs(case, dtype, device)
    got = run(backend, x, f, case)
    assert_matches(got, oracle(x, f, case), dtype, f"{backend} {case.name}")
    channels_last = case.layout == "channels_last"
    assert got[0].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_reference_matches_the_definition_by_hand():
    """The reference against a direct loop over the definition (zero insertion, padding, taps)."""
    torch.manual_seed(3)
    x = torch.randn(1, 1, 4, 3, dtype=torch.float64)
    f = torch.randn(3, 2, dtype=torch.float64)
    (ux, uy), (dx, dy), (x0, x1, y0, y1) = (2, 3), (3, 2), (1, 2, 2, -1)
    h, w = x.shape[2] * uy + y0 + y1, x.shape[3] * ux + x0 + x1
    padded = torch.zeros(h, w, dtype=torch.float64)
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            r, c = i * uy + y0, j * ux + x0
            if 0 <= r < h and 0 <= c < w:
                padded[r, c] = x[0, 0, i, j]
    kh, kw = f.shape
    out_h, out_w = (h - kh) // dy + 1, (w - kw) // dx + 1
    want = torch.zeros(out_h, out_w, dtype=torch.float64)
    for o in range(out_h):
        for p in range(out_w):
            window = padded[o * dy: o * dy + kh, p * dx: p * dx + kw]
            want[o, p] = (window * f.flip(0, 1)).sum() * 0.5  # convolution: the flipped filter
    got = reference_upfirdn2d(x, f, (ux, uy), (dx, dy), (x0, x1, y0, y1), False, 0.5)
    torch.testing.assert_close(got[0, 0], want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("up, down", [(1, 1), (2, 1), (1, 2), (3, 2), (2, 3)])
@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (2, -1, 0.5), (1, 2, 3, 4, 5, 6)])
def test_reference_matches_scipy_upfirdn_along_both_axes(up, down, taps):
    """An independent implementation: scipy.signal.upfirdn (upsample, full FIR convolution,
    downsample) along width then height equals the separable reference padded by len(taps) - 1 on
    each side, up to scipy's shorter upsampled length ((size - 1) * up + 1 samples, not size * up)."""
    from scipy import signal  # the test extra installs scipy
    torch.manual_seed(0)
    x = torch.randn(1, 1, 5, 7, dtype=torch.float64)
    f = torch.tensor(taps, dtype=torch.float64)
    pad = len(taps) - 1
    got = reference_upfirdn2d(x, f, (up, up), (down, down), (pad, pad, pad, pad), False, 1.0)[0, 0]
    want = signal.upfirdn(taps, signal.upfirdn(taps, x[0, 0].numpy(), up, down, axis=1), up, down, axis=0)
    torch.testing.assert_close(got[: want.shape[0], : want.shape[1]], torch.from_numpy(want), rtol=1e-12, atol=1e-12)
    assert got.shape[0] - want.shape[0] <= up and got.shape[1] - want.shape[1] <= up


# small planes: gradcheck perturbs every input and output element (Triton's interpreter is slow)
GRADCHECK_CASES = [dataclasses.replace(case, shape=shape) for case, shape in
                   ((CASES[0], (1, 2, 3, 4)), (CASES[2], (1, 1, 4, 3)), (CASES[3], (1, 1, 3, 4)),
                    (CASES[4], (1, 1, 6, 4)), (CASES[7], (1, 3, 3, 2)))]


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=lambda c: c.name)
def test_gradcheck_and_gradgradcheck(target, case):
    device, backend = target
    x, f = make_inputs(case, torch.float64, device)
    x.requires_grad_()
    with medkern.use_backend(backend):
        fn = lambda x: medkern.ops.upfirdn2d(x, f, *case.args())  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
        assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


@pytest.mark.parametrize("target", kernel_targets())
def test_third_order_gradient_runs_the_kernel(target):
    """Each order of the gradient is the op itself: a third-order gradient equals the reference's."""
    device, backend = target
    case = CASES[0]
    x, f = make_inputs(case, torch.float64, device)

    def third(name):
        xx = x.clone().requires_grad_()
        with medkern.use_backend(name):
            y = medkern.ops.upfirdn2d(xx, f, *case.args())
            g = torch.ones_like(y, requires_grad=True)
            (dx,) = torch.autograd.grad(y, xx, g, create_graph=True)
            h = torch.ones_like(dx, requires_grad=True)
            (dg,) = torch.autograd.grad(dx, g, h, create_graph=True)
            (dh,) = torch.autograd.grad(dg.square().sum(), h)
        return dh

    torch.testing.assert_close(third(backend), third("reference"), rtol=1e-12, atol=1e-12)


def test_filter_gradient_runs_through_the_reference():
    """A filter that requires grad gets its gradient (the kernels take f as a constant)."""
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    f = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, f: medkern.ops.upfirdn2d(x, f, up=2, padding=1), (x, f), fast_mode=True)


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 0, 4, 4), (2, 3, 0, 4), (2, 3, 4, 0)])
def test_empty(target, shape):
    """Empty batch or channels give an empty output; an empty plane with enough padding gives zeros."""
    device, backend = target
    x = torch.randn(shape, device=device, requires_grad=True)
    f = torch.ones(3, device=device)
    with medkern.use_backend(backend):
        y = medkern.ops.upfirdn2d(x, f, up=2, padding=2)
        want = reference_upfirdn2d(x.detach(), f, (2, 2), (1, 1), (2, 2, 2, 2), False, 1.0)
        assert y.shape == want.shape
        assert torch.equal(y.detach(), want)
        (dx,) = torch.autograd.grad(y.sum(), x)
    assert dx.shape == x.shape and not dx.any()


@pytest.mark.parametrize("target", kernel_targets())
def test_large_input_matches_reference(target):
    """Many planes and rows: the CPU kernel's task split (rows per task, buffers) is exercised."""
    device, backend = target
    if backend == "triton" and device == "cpu":
        pytest.skip("too large for Triton's interpreter; the small cases cover its math")
    case = Case("large", (3, 5, 70, 300), (4,), up=(2, 2), padding=(2, 1, 2, 1), gain=4.0)
    x, f = make_inputs(case, torch.float32, device)
    got = run(backend, x, f, case)
    assert_matches(got, oracle(x, f, case), torch.float32, "large")


def test_results_do_not_depend_on_the_thread_count():
    x = torch.randn(4, 8, 33, 40)
    f = medkern.ops.fir_filter([1, 3, 3, 1])
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(medkern.ops.upsample2d(x, f))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1])


# --- helpers -------------------------------------------------------------------------------------


# (taps, factor) whose polyphase components each sum to 1 / factor: they upsample a constant to a constant
@pytest.mark.parametrize("taps,factor", [([1], 1), ([1, 4, 6, 4, 1], 1), ([1, 1], 2), ([1, 3, 3, 1], 2),
                                         ([1, 1, 1], 3), ([1, 2, 3, 2, 1], 3)])
def test_helpers_keep_the_grid_and_the_magnitude(factor, taps):
    """upsample2d/downsample2d give exactly factor times/1/factor the size; a constant image stays
    constant (away from the borders) with a normalized filter; filter2d keeps the size."""
    f = medkern.ops.fir_filter(taps)
    x = torch.full((1, 2, 12, 12), 3.0, dtype=torch.float64)
    up = medkern.ops.upsample2d(x, f.double(), up=factor)
    assert up.shape[2:] == (12 * factor, 12 * factor)
    inner = up[:, :, 4 * factor: -4 * factor, 4 * factor: -4 * factor]
    torch.testing.assert_close(inner, torch.full_like(inner, 3.0))
    down = medkern.ops.downsample2d(x, f.double(), down=factor)
    assert down.shape[2:] == (12 // factor, 12 // factor)
    torch.testing.assert_close(down[:, :, 2:-2, 2:-2], torch.full_like(down[:, :, 2:-2, 2:-2], 3.0))
    blurred = medkern.ops.filter2d(x, f.double())
    assert blurred.shape == x.shape
    torch.testing.assert_close(blurred[:, :, 3:-3, 3:-3], x[:, :, 3:-3, 3:-3])


def test_fir_filter():
    f = medkern.ops.fir_filter([1, 3, 3, 1])
    torch.testing.assert_close(f, torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8)
    f2 = medkern.ops.fir_filter([1, 2, 1], separable=False)
    assert f2.shape == (3, 3)
    torch.testing.assert_close(f2.sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="fir_filter: taps must be a non-empty 1-d"):
        medkern.ops.fir_filter([])


def test_upsample_is_the_transpose_of_downsample():
    """<upsample(a), b> = <a, downsample(b)> * up**2 for the same filter: the two alignments agree."""
    f = medkern.ops.fir_filter([1, 3, 3, 1]).double()
    a = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    b = torch.randn(2, 3, 12, 10, dtype=torch.float64)
    lhs = (medkern.ops.upsample2d(a, f) * b).sum()
    rhs = (a * medkern.ops.downsample2d(b, f)).sum() * 4
    torch.testing.assert_close(lhs, rhs)


# --- tracing and opcheck -------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_torch_compile_fullgraph_forward_and_backward(backend):
    f = medkern.ops.fir_filter([1, 3, 3, 1])

    def block(x):
        return medkern.ops.downsample2d(medkern.ops.upsample2d(x, f).relu(), f).square().mean()

    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    with medkern.use_backend(backend):
        torch._dynamo.reset()
        loss = torch.compile(block, fullgraph=True)(x)
        (gx,) = torch.autograd.grad(loss, x)
        want = block(x)
        (want_gx,) = torch.autograd.grad(want, x)
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(gx, want_gx)


def test_triton_interpreter_refuses_torch_compile():
    with medkern.use_backend("triton"):
        torch._dynamo.reset()
        with pytest.raises(Exception, match="cannot be traced by torch.compile"):
            torch.compile(lambda x: medkern.ops.upfirdn2d(x, None, up=2), fullgraph=True)(torch.randn(1, 1, 3, 3))


OPCHECK_ALL = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[8]], ids=lambda c: c.name)
def test_opcheck(target, case):
    device, backend = target
    x, f = make_inputs(case, torch.float32, device)
    x.requires_grad_()
    utils = OPCHECK_ALL[:3] if (backend == "triton" and device == "cpu") else OPCHECK_ALL
    up, down, padding, flip_filter, gain = case.args()
    torch.library.opcheck(kernel_op(backend), (x, f, list(up), list(down), list(padding), flip_filter, gain),
                          test_utils=utils)


# --- bad input -----------------------------------------------------------------------------------

BAD_CALLS = [
    (dict(x=torch.randn(2, 3, 4)), ValueError, r"x must be 4-d \(N, C, H, W\)"),
    (dict(x=torch.ones(1, 1, 4, 4, dtype=torch.int64)), TypeError, "x must be float32"),
    (dict(f=torch.ones(2, 2, 2)), ValueError, "f must be a non-empty 1-d"),
    (dict(f=torch.ones(0)), ValueError, "f must be a non-empty 1-d"),
    (dict(f=[1.0, 2.0]), TypeError, "f must be a torch.Tensor or None"),
    (dict(f=torch.ones(2, dtype=torch.int32)), TypeError, "f must be float32"),
    (dict(up=0), ValueError, "up must be >= 1"),
    (dict(down=(1, 2, 3)), ValueError, r"down must be an int or an \(x, y\) pair"),
    (dict(up=1.5), TypeError, "up must be an int"),
    (dict(padding=(1, 2, 3)), ValueError, "padding must be an int"),
    (dict(padding=-3), ValueError, "the output would be empty"),
    (dict(flip_filter="yes"), TypeError, "flip_filter must be a bool"),
    (dict(gain=float("inf")), TypeError, "gain must be a finite real number"),
]


@pytest.mark.parametrize("change,error,match", BAD_CALLS, ids=[m for _, _, m in BAD_CALLS])
@pytest.mark.parametrize("backend", ["cpu", "triton", "reference"])
def test_bad_input_is_a_clear_error(change, error, match, backend):
    args = dict(x=torch.randn(1, 2, 4, 4), f=torch.ones(3), up=1, down=1, padding=0, flip_filter=False, gain=1.0)
    args.update(change)
    with medkern.use_backend(backend), pytest.raises(error, match=f"medkern.ops.upfirdn2d: {match}"):
        medkern.ops.upfirdn2d(**args)


C_BAD_CALLS = [
    (lambda x, f: (x[0], f, [1, 1], [1, 1], [0] * 4, False, 1.0), "x must be 4-d"),
    (lambda x, f: (x, f.reshape(1, 1, 3), [1, 1], [1, 1], [0] * 4, False, 1.0), "f must be a non-empty 1-d"),
    (lambda x, f: (x, f, [0, 1], [1, 1], [0] * 4, False, 1.0), "up must be"),
    (lambda x, f: (x, f, [1, 1], [1, -2], [0] * 4, False, 1.0), "down must be"),
    (lambda x, f: (x, f, [1, 1], [1, 1], [-3] * 4, False, 1.0), "the output would be empty"),
    (lambda x, f: (x, f, [1, 1], [1, 1], [0] * 4, False, float("nan")), "gain must be finite"),
    (lambda x, f: (x.long(), f, [1, 1], [1, 1], [0] * 4, False, 1.0), "x must be float32"),
]


@pytest.mark.parametrize("make,match", C_BAD_CALLS, ids=[m for _, m in C_BAD_CALLS])
def test_compiled_op_checks_its_arguments(make, match):
    """Direct torch.ops.medkern.upfirdn2d calls get the same clear errors from C++."""
    x, f = torch.randn(1, 2, 4, 4), torch.ones(3)
    with pytest.raises((ValueError, TypeError), match=f"medkern::upfirdn2d: {match}"):
        torch.ops.medkern.upfirdn2d(*make(x, f))


# --- modules -------------------------------------------------------------------------------------


def test_modules_run_their_op_with_a_saved_filter():
    x = torch.randn(2, 3, 8, 8)
    f = medkern.ops.fir_filter([1, 3, 3, 1])
    assert torch.equal(medkern.nn.Upsample2d(2)(x), medkern.ops.upsample2d(x, f))
    assert torch.equal(medkern.nn.Downsample2d(2)(x), medkern.ops.downsample2d(x, f))
    assert torch.equal(medkern.nn.Blur()(x), medkern.ops.filter2d(x, f))
    module = medkern.nn.Upfirdn2d([1, 2, 1], up=(2, 1), down=(1, 2), padding=(1, 0, 1, 1), gain=2.0)
    want = medkern.ops.upfirdn2d(x, medkern.ops.fir_filter([1, 2, 1]), (2, 1), (1, 2), (1, 0, 1, 1), gain=2.0)
    assert torch.equal(module(x), want)
    assert list(module.state_dict()) == ["filter"]
    restored = medkern.nn.Upfirdn2d([1], up=(2, 1), down=(1, 2), padding=(1, 0, 1, 1), gain=2.0)
    with pytest.raises(RuntimeError, match="size mismatch"):  # a filter of another length is not silently taken
        restored.load_state_dict(module.state_dict())
    assert "up=(2, 1), down=(1, 2)" in repr(module)
    assert medkern.nn.Upsample2d(2).double()(x.double()).dtype == torch.float64


def test_module_arguments_are_checked_at_construction():
    with pytest.raises(ValueError, match="medkern.nn.Upsample2d: factor must be >= 1"):
        medkern.nn.Upsample2d(0)
    with pytest.raises(ValueError, match="medkern.nn.Blur: f must be a non-empty 1-d"):
        medkern.nn.Blur(torch.ones(2, 2, 2))
