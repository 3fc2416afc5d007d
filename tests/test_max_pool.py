"""medkern.ops.max_pool and medkern.nn.MaxPool1d/2d/3d: every implementation against torch's
max_pool, gradients, tracing, memory, bad input, the modules and medkern.swap."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import medkern
from medkern.ops.max_pool import WINDOW_LIMIT, max_pool_with_indices
from medkern.reference.max_pool import NO_ELEMENT
from medkern.testing.max_pool import CASES, argmax, assert_matches, make_inputs, oracle, oracle_argmax, run

from conftest import kernel_targets

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
OPCHECK_ALL = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
OPCHECK_INTERPRETED = OPCHECK_ALL[:3]


def _kernel_ops(backend):
    if backend == "triton":
        import medkern.triton.max_pool as triton_max_pool

        return triton_max_pool.forward_op(), torch.ops.medkern.triton_max_pool_backward.default
    return torch.ops.medkern.max_pool.default, torch.ops.medkern.max_pool_backward.default


# --- parity with torch ----------------------------------------------------------------------


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_matches_torch(target, dtype, case):
    """Values, window positions (ties included), gradients and the gradient's own gradient equal
    torch's; dense inputs keep their layout."""
    device, backend = target
    x = make_inputs(case, dtype, device)
    got = run(backend, case, x)
    assert_matches(got, oracle(case, x), dtype, f"{backend} {case.id}")
    assert torch.equal(argmax(backend, case, x).cpu(), oracle_argmax(case, x))
    torch_layout = F.max_pool2d if len(case.kernel_size) == 2 else None
    if case.layout.make in ("contiguous", "channels_last", "channels_last_3d") and torch_layout is not None:
        assert got[0].stride() == torch_layout(x, *case.args).stride()
    if case.layout.make in ("channels_last", "channels_last_3d"):
        assert got[0].movedim(1, -1).is_contiguous() and got[1].movedim(1, -1).is_contiguous()


@pytest.mark.parametrize("target", kernel_targets())
def test_nan_and_minus_infinity_as_torch(target):
    """A NaN wins its window (a later NaN over an earlier one) and gets the gradient; a window of
    only -inf gives -inf with its first position, as torch's."""
    device, backend = target
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    x[0, 0, 1, 1] = x[0, 0, 1, 2] = float("nan")
    x[0, 1, :3, :3] = float("-inf")
    x = x.to(device).requires_grad_()
    with medkern.use_backend(backend):
        y = medkern.ops.max_pool(x, 3, 2, 1)
        (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    xr = x.detach().cpu().requires_grad_()
    yr = F.max_pool2d(xr, 3, 2, 1)
    (gr,) = torch.autograd.grad(yr, xr, torch.ones_like(yr))
    torch.testing.assert_close(y.cpu(), yr, equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(gx.cpu(), gr, rtol=0, atol=0)


@pytest.mark.parametrize("target", kernel_targets())
def test_a_window_that_holds_no_input_element(target):
    """Dilation can step over a whole input (torch allows it): the output is -inf as torch's, its
    position NO_ELEMENT, and its gradient goes nowhere; torch's index for it is given back."""
    device, backend = target
    x = torch.randn(2, 3, 4, dtype=torch.float64, device=device, requires_grad=True)
    with medkern.use_backend(backend):
        y, indices = max_pool_with_indices(x, 2, 1, 1, 5)
        (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    want, want_indices = F.max_pool1d(x.detach().cpu(), 2, 1, 1, 5, return_indices=True)
    assert torch.equal(y.cpu(), want) and bool((want == float("-inf")).all())
    assert torch.equal(indices.cpu(), want_indices)
    assert not gx.any()
    assert bool((_kernel_ops(backend)[0](x.detach(), [2], [1], [1], [5], False)[1] == NO_ELEMENT).all())


def test_arguments_as_torch_takes_them():
    """One-entry lists stand for every spatial dim; padding is at most half the (undilated) kernel."""
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(medkern.ops.max_pool(x, [3], [2], [1]), F.max_pool2d(x, [3], [2], [1]), rtol=0, atol=0)
    torch.testing.assert_close(medkern.nn.MaxPool2d((3,))(x), nn.MaxPool2d((3,))(x), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="pad should be"):
        F.max_pool2d(x, 3, 1, 2, 2)
    with pytest.raises(ValueError, match="medkern.ops.max_pool: padding must be at most half the kernel size"):
        medkern.ops.max_pool(x, 3, 1, 2, 2)
    with pytest.raises(ValueError, match="medkern::max_pool: padding must be >= 0 and at most half the kernel"):
        torch.ops.medkern.max_pool(x, [3, 3], [1, 1], [2, 2], [2, 2], False)


@pytest.mark.parametrize("target", kernel_targets())
def test_ceil_mode_outputs_past_the_floor_size(target):
    """ceil_mode can make an output floor mode would not have (1 -> 1 with a 2-window): forward
    and backward both take it."""
    device, backend = target
    x = torch.randn(2, 3, 1, 5, device=device, requires_grad=True)
    with medkern.use_backend(backend):
        y = medkern.ops.max_pool(x, 2, 2, 0, 1, True)
        (gx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    xr = x.detach().cpu().requires_grad_()
    yr = F.max_pool2d(xr, 2, 2, 0, 1, True)
    torch.testing.assert_close(y.cpu(), yr, rtol=0, atol=0)
    torch.testing.assert_close(gx.cpu(), torch.autograd.grad(yr, xr, torch.ones_like(yr))[0], rtol=0, atol=0)


@pytest.mark.parametrize("target", kernel_targets())
def test_large_inputs(target):
    """Past one CPU task and one run of 256 outputs, both layouts."""
    device, backend = target
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, 300, 9, 13, device=device).contiguous(memory_format=layout)
        xw = torch.randn(2, 3, 5, 600, device=device).contiguous(memory_format=layout)
        for inputs, args in ((x, (3, 2, 1)), (xw, ((1, 3), (1, 2), (0, 1)))):
            with medkern.use_backend(backend):
                y = medkern.ops.max_pool(inputs, *args)
            torch.testing.assert_close(y, F.max_pool2d(inputs, *args), rtol=0, atol=0)


def test_results_do_not_depend_on_the_thread_count():
    x = torch.randn(4, 33, 20, 21).contiguous(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            xg = x.clone().requires_grad_()
            y = medkern.ops.max_pool(xg, 3, 1, 1)
            results.append((y, torch.autograd.grad(y, xg, torch.ones_like(y))[0]))
    finally:
        torch.set_num_threads(threads)
    for one, many in zip(*results):
        assert torch.equal(one, many)


@pytest.mark.parametrize("target", kernel_targets())
def test_gradcheck_and_gradgradcheck(target):
    device, backend = target
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, device=device, requires_grad=True)
    with medkern.use_backend(backend):
        pool = lambda t: medkern.ops.max_pool(t, (3, 2), (2, 1), (1, 1), (1, 2), True)  # noqa: E731
        assert torch.autograd.gradcheck(pool, (x,))
        assert torch.autograd.gradgradcheck(pool, (x,))


def test_saves_one_byte_per_output_for_backward():
    """Autograd keeps argmax (uint8) only: not x, nor torch's int64 indices."""
    saved = []
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = medkern.ops.max_pool(x, 2)
    assert [(t.dtype, tuple(t.shape)) for t in saved] == [(torch.uint8, tuple(y.shape))]


def test_large_windows_run_torch():
    """A window of more than 255 positions (its argmax would not fit a byte) runs the reference."""
    x = torch.randn(1, 2, 20, 20, requires_grad=True)
    y = medkern.ops.max_pool(x, 16)
    assert y.grad_fn.name() == F.max_pool2d(x, 16).grad_fn.name()
    torch.testing.assert_close(y, F.max_pool2d(x, 16), rtol=0, atol=0)
    for kernel in ([16, 16], [2**32, 2**32]):  # (the product must not wrap around)
        with pytest.raises(ValueError, match=f"medkern::max_pool: the window must have at most {WINDOW_LIMIT}"):
            torch.ops.medkern.max_pool(x, kernel, [1, 1], [0, 0], [1, 1], False)


# --- torch.compile, opcheck -----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_torch_compile_fullgraph_forward_and_backward(backend):
    def block(x):
        return medkern.ops.max_pool(x * 2.0, 3, 2, 1).square().mean()

    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    with medkern.use_backend(backend):
        torch._dynamo.reset()
        loss = torch.compile(block, fullgraph=True)(x)
        (gx,) = torch.autograd.grad(loss, x)
        want_loss = block(x)
        (want_gx,) = torch.autograd.grad(want_loss, x)
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(gx, want_gx)


@pytest.mark.parametrize("target", kernel_targets())
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_opcheck(target, memory_format):
    """torch.library.opcheck: schema, autograd registration, fake kernel, AOT dispatch (dynamic)."""
    device, backend = target
    forward, backward = _kernel_ops(backend)
    x = torch.randn(2, 3, 7, 8, device=device).contiguous(memory_format=memory_format).requires_grad_()
    args = ([3, 3], [2, 2], [1, 1], [1, 1], False)
    utils = OPCHECK_INTERPRETED if (backend == "triton" and device == "cpu") else OPCHECK_ALL
    torch.library.opcheck(forward, (x, *args), test_utils=utils)
    y, positions = forward(x.detach(), *args)
    torch.library.opcheck(backward, (torch.randn_like(y), positions, list(x.shape), *args[:4]), test_utils=utils)


# --- bad input --------------------------------------------------------------------------------

BAD_CALLS = [
    (dict(x=torch.randint(0, 3, (2, 3, 4, 4))), TypeError, "x must be float32"),
    (dict(x=torch.randn(2, 3)), ValueError, "1 to 3 spatial dims"),
    (dict(kernel_size=0), ValueError, "kernel_size must be an int >= 1"),
    (dict(kernel_size=(2, 2, 2)), ValueError, "kernel_size must be an int >= 1 or 2 of them"),
    (dict(stride=0), ValueError, "stride must be an int >= 1"),
    (dict(padding=2), ValueError, "padding must be at most half"),
    (dict(padding=-1), ValueError, "padding must be an int >= 0"),
    (dict(dilation=(1, 0)), ValueError, "dilation must be an int >= 1"),
    (dict(ceil_mode=1), TypeError, "ceil_mode must be a bool"),
    (dict(kernel_size=7), ValueError, "the output would be empty"),
    (dict(x=torch.randn(2, 0, 4, 4)), ValueError, "x may be empty only along dim 0"),
    (dict(kernel_size=True), ValueError, "kernel_size must be an int"),
]


@pytest.mark.parametrize("backend", ["cpu", "triton", "reference"])
@pytest.mark.parametrize("kwargs,error,message", BAD_CALLS, ids=[c[2][:24] for c in BAD_CALLS])
def test_bad_input_names_the_argument(backend, kwargs, error, message):
    args = dict(x=torch.randn(2, 3, 4, 4), kernel_size=3, stride=1, padding=1, dilation=1, ceil_mode=False)
    args.update(kwargs)
    with medkern.use_backend(backend), pytest.raises(error, match=message) as info:
        medkern.ops.max_pool(**args)
    assert "medkern.ops.max_pool" in str(info.value)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda op: op(torch.randn(2, 3, 4, 4), [3], [1], [1], [1], False), "kernel_size must have 2 entries"),
        (lambda op: op(torch.randn(2, 3, 4, 4), [3, 3], [1, 1], [2, 2], [1, 1], False), "padding must be >= 0 and"),
        (lambda op: op(torch.randn(2, 3, 4, 4), [3, 3], [0, 1], [1, 1], [1, 1], False), "stride and dilation"),
        (lambda op: op(torch.randn(2, 3), [1], [1], [0], [1], False), "1 to 3 spatial dims"),
        (lambda op: op(torch.randint(0, 2, (2, 3, 4)), [1], [1], [0], [1], False), "x must be float32"),
        (lambda op: op(torch.randn(2, 3, 2, 2), [3, 3], [1, 1], [0, 0], [1, 1], False), "the output would be empty"),
    ],
    ids=["list_length", "padding", "stride", "rank", "dtype", "too_small"],
)
def test_cpp_op_checks_its_arguments(call, message):
    """Direct torch.ops.medkern calls are checked in C++ too, with the op and argument named."""
    with pytest.raises((ValueError, TypeError), match=message) as info:
        call(torch.ops.medkern.max_pool)
    assert "medkern::max_pool" in str(info.value)


def test_cpp_backward_op_checks_its_arguments():
    x = torch.randn(2, 3, 6, 6)
    y, positions = torch.ops.medkern.max_pool(x, [2, 2], [2, 2], [0, 0], [1, 1], False)
    backward = torch.ops.medkern.max_pool_backward
    args = ([2, 2], [2, 2], [0, 0], [1, 1])
    with pytest.raises(ValueError, match="medkern::max_pool_backward: grad must have the shape of argmax"):
        backward(y[:1], positions, list(x.shape), *args)
    with pytest.raises(TypeError, match="argmax must be uint8"):
        backward(y, positions.long(), list(x.shape), *args)
    with pytest.raises(ValueError, match="input_size must be x's shape"):
        backward(y, positions, [2, 4, 6, 6], *args)
    with pytest.raises(ValueError, match="is not max_pool's output for input_size"):
        backward(y, positions, [2, 3, 9, 6], *args)
    with pytest.raises(ValueError, match=r"argmax must be \(N, C, \*spatial\) with 1 to 3 spatial dims"):
        backward(y[0, 0], positions[0, 0], [6, 6], *args)
    # positions that name no window element (an empty window's, or garbage) get no gradient
    assert not backward(y, torch.full_like(positions, 255), list(x.shape), *args).any()
    backward(y, torch.full_like(positions, 7), list(x.shape), *args)  # out of the window: in bounds, no crash


# --- the modules and medkern.swap ---------------------------------------------------------------

MODULES = [
    (nn.MaxPool1d, medkern.nn.MaxPool1d, dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True),
     (2, 3, 15)),
    (nn.MaxPool2d, medkern.nn.MaxPool2d, dict(kernel_size=3, stride=2, padding=1), (2, 3, 9, 10)),
    (nn.MaxPool3d, medkern.nn.MaxPool3d, dict(kernel_size=(2, 3, 2), stride=(1, 2, 2)), (2, 3, 5, 6, 7)),
]


@pytest.mark.parametrize("torch_class,medkern_class,kwargs,shape", MODULES, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("return_indices", [False, True])
@pytest.mark.parametrize("batched", [True, False])
def test_module_is_a_drop_in(torch_class, medkern_class, kwargs, shape, return_indices, batched):
    """Same constructor, repr and (empty) state as torch's module; same outputs, gradients and
    indices, for batched and unbatched inputs."""
    original = torch_class(**kwargs, return_indices=return_indices)
    ours = medkern_class(**kwargs, return_indices=return_indices)
    assert isinstance(ours, torch_class) and repr(ours) == repr(original)
    assert ours.state_dict() == original.state_dict() == {}
    x = torch.randn(shape if batched else shape[1:], dtype=torch.float64, requires_grad=True)
    got, want = ours(x), original(x)
    if return_indices:
        assert torch.equal(got[1], want[1]) and got[1].dtype == torch.int64
        got, want = got[0], want[0]
    assert torch.equal(got, want)
    g = torch.randn_like(want)
    assert torch.equal(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0])


def test_module_rejects_the_wrong_rank():
    with pytest.raises(ValueError, match=r"medkern.nn.MaxPool2d: input must be \(N, C, \*spatial\) or \(C, "):
        medkern.nn.MaxPool2d(2)(torch.randn(2, 3, 4, 4, 4))


def test_swap_replaces_max_pools_in_place():
    """nn.MaxPool1d/2d/3d become medkern's subclasses: same object, no state change; verified."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(3, 2, 1), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    swapped = medkern.swap(model)
    assert type(swapped[1]) is medkern.nn.MaxPool2d and type(model[1]) is nn.MaxPool2d
    assert [entry.block for entry in medkern.swap_report(swapped).swapped] == ["medkern.nn.MaxPool2d"]
    assert swapped.state_dict().keys() == model.state_dict().keys()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    medkern.verify(model.double(), swapped.double(), x, train=True)
    left = medkern.swap(model, exclude="MaxPool2d")
    assert type(left[1]) is nn.MaxPool2d


def test_swap_replaces_functional_max_pools_of_a_traced_forward():
    """F.max_pool2d and torch.max_pool2d calls run medkern's max_pool2d; return_indices calls
    (another function) are left as they are; exclude works by block name."""

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.conv(x)
            pooled, _ = F.max_pool2d(y, 2, return_indices=True)
            return F.max_pool2d(y, 3, 2, 1).sum() + torch.max_pool2d(y, 3, 2, 1).sum() + pooled.sum()

    model = Functional().double()
    swapped = medkern.swap(model)
    assert [(e.modules, e.block) for e in medkern.swap_report(swapped).swapped] == [
        (("max_pool2d (functional)",), "medkern.nn.max_pool2d"),
        (("max_pool2d_1 (functional)",), "medkern.nn.max_pool2d")]
    medkern.verify(model, swapped, torch.randn(2, 3, 9, 9, dtype=torch.float64), train=True)
    assert not medkern.swap_report(medkern.swap(model, exclude="MaxPool2d")).swapped
