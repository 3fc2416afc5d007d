"""medkern.ops.modulated_conv2d and medkern.nn.ModulatedConv2d against the reference composition."""

import itertools

import pytest
import torch

import medkern
from medkern.nn import ModulatedConv2d
from medkern.ops import modulated_conv2d
from medkern.ops.upfirdn2d import fir_filter
from medkern.reference.modulated_conv2d import modulated_conv2d as reference_modulated_conv2d
from medkern.tolerances import assert_close, oracle_dtype

RESAMPLING = [(1, 1), (2, 1), (1, 2)]  # (up, down)
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


def _inputs(dtype, n=3, c_in=5, c_out=7, h=9, w=6, k=3, channels_last=False, strided_weight=False):
    x = torch.randn(n, c_in, h, w, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = torch.randn(c_out, c_in, k, k, dtype=dtype)
    if strided_weight:  # a transposed view: not contiguous
        weight = torch.randn(c_in, c_out, k, k, dtype=dtype).transpose(0, 1)
    styles = torch.randn(n, c_in, dtype=dtype)
    return [t.requires_grad_() for t in (x, weight, styles)]


def _oracle(inputs, demodulate, up, down, padding, dtype):
    od = oracle_dtype(dtype)
    args = [t.detach().to(od).requires_grad_() for t in inputs]
    f = fir_filter((1, 3, 3, 1), dtype=od)
    return args, reference_modulated_conv2d(*args, demodulate, up, down, padding, f, 1e-8)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("up,down", RESAMPLING)
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided_weight", "kernel_1"])
def test_matches_reference_forward_and_backward(dtype, up, down, demodulate, layout):
    k = 1 if layout == "kernel_1" else 3
    inputs = _inputs(dtype, k=k, channels_last=layout == "channels_last", strided_weight=layout == "strided_weight")
    padding = (k // 2, k // 2)
    y = modulated_conv2d(*inputs, demodulate=demodulate, up=up, down=down, padding=padding)
    oracle_inputs, want = _oracle(inputs, demodulate, up, down, padding, dtype)
    assert y.shape == want.shape and y.dtype == dtype
    assert_close(y, want, "modulated_conv2d", "forward", dtype)
    grad = torch.randn_like(want)
    got = torch.autograd.grad(y, inputs, grad.to(dtype))
    wanted = torch.autograd.grad(want, oracle_inputs, grad)
    for name, a, b in zip(("x", "weight", "styles"), got, wanted):
        assert_close(a, b, "modulated_conv2d", "grad", dtype, msg=name)


def test_output_sizes_follow_the_resampling():
    x, weight, styles = _inputs(torch.float32, h=8, w=8)
    assert modulated_conv2d(x, weight, styles, padding=1).shape == (3, 7, 8, 8)
    assert modulated_conv2d(x, weight, styles, up=2, padding=1).shape == (3, 7, 16, 16)
    assert modulated_conv2d(x, weight, styles, down=2, padding=1).shape == (3, 7, 4, 4)
    assert modulated_conv2d(x, weight, styles, padding=(0, 1)).shape == (3, 7, 6, 8)


@pytest.mark.parametrize("up,down", RESAMPLING)
def test_gradcheck_and_gradgradcheck_float64(up, down):
    inputs = _inputs(torch.float64, n=2, c_in=2, c_out=2, h=3, w=4)
    for demodulate in (True, False):
        def fn(*args):
            return modulated_conv2d(*args, demodulate=demodulate, up=up, down=down, padding=1)
        assert torch.autograd.gradcheck(fn, inputs)
        assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)


@pytest.mark.parametrize("n,c_out", [(0, 7), (3, 0)])
def test_empty_batch_or_channels(n, c_out):
    x, weight, styles = _inputs(torch.float32, n=n, c_out=c_out)
    y = modulated_conv2d(x, weight, styles, padding=1)
    assert y.shape == (n, c_out, 9, 6)
    y.sum().backward()
    for t in (x, weight, styles):
        assert t.grad is not None and t.grad.shape == t.shape and not t.grad.any()


def test_per_sample_weight_is_saved_once():
    """The modulated weight (N, O, I, k, k) is kept for backward once (by the convolution): the
    modulation's backward recomputes what it needs from weight and styles."""
    if medkern.backend.select("modulate_weight", torch.device("cpu")) == "reference":
        pytest.skip("the reference's autograd keeps its intermediates; this is the kernels' property")
    x, weight, styles = _inputs(torch.float32, n=4, c_in=6, c_out=8, h=10)  # no other tensor of that size
    per_sample = 4 * 8 * 6 * 9
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        modulated_conv2d(x, weight, styles, padding=1)
    assert saved.count(per_sample) == 1, saved


def test_compiles_fullgraph():
    inputs = _inputs(torch.float32, n=2)
    compiled = torch.compile(lambda *a: modulated_conv2d(*a, up=2, padding=1), fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(*inputs), modulated_conv2d(*inputs, up=2, padding=1))


def test_module_runs_the_op_with_an_equalized_style_affine():
    torch.manual_seed(0)
    layer = ModulatedConv2d(5, 7, 3, w_dim=4, up=2).double()
    x, w = torch.randn(2, 5, 6, 6, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    styles = torch.nn.functional.linear(w, layer.affine.weight / 2) + layer.affine.bias  # 1/sqrt(w_dim) = 1/2
    want = modulated_conv2d(x, layer.weight, styles, up=2, padding=1)
    torch.testing.assert_close(layer(x, w), want, rtol=1e-12, atol=1e-12)
    assert set(layer.state_dict()) == {"weight", "affine.weight", "affine.bias"}  # the filter is a constant
    to_rgb = ModulatedConv2d(5, 3, 1, w_dim=4, demodulate=False).double()
    styles = (torch.nn.functional.linear(w, to_rgb.affine.weight / 2) + to_rgb.affine.bias) / 5 ** 0.5
    torch.testing.assert_close(to_rgb(x, w), modulated_conv2d(x, to_rgb.weight, styles, demodulate=False),
                               rtol=1e-12, atol=1e-12)


def test_bad_arguments_are_clear_errors():
    x, weight, styles = _inputs(torch.float32)
    op = "medkern.ops.modulated_conv2d"
    cases = [
        (dict(x=x[0]), ValueError, rf"{op}: x must be \(N, in_channels, H, W\)"),
        (dict(styles=styles[:2]), ValueError, rf"{op}: x must be \(N, in_channels, H, W\) with N = styles.shape\[0\] = 2"),
        (dict(styles=styles[:, :4]), ValueError, rf"{op}: styles must be \(N, in_channels\)"),
        (dict(weight=weight[..., 0]), ValueError, rf"{op}: weight must be 4-d"),
        (dict(x=x.double()), TypeError, rf"{op}: x must have dtype torch.float32 \(that of weight\)"),
        (dict(styles=styles.double()), TypeError, rf"{op}: styles must have dtype torch.float32"),
        (dict(x=x.int()), TypeError, rf"{op}: x must be float32, float64, float16 or bfloat16"),
        (dict(up=2, down=2), ValueError, rf"{op}: up and down cannot both be > 1"),
        (dict(up=0), ValueError, rf"{op}: up must be an int >= 1"),
        (dict(padding=-1), ValueError, rf"{op}: padding must be an int >= 0"),
        (dict(demodulate=1), TypeError, rf"{op}: demodulate must be a bool"),
        (dict(eps=-1.0), ValueError, rf"{op}: eps must be finite and >= 0"),
        (dict(up=2, resample_filter=torch.ones(2, 2, 2)), ValueError, rf"{op}: resample_filter must be a non-empty 1-d"),
    ]
    for change, error, message in cases:
        kwargs = dict(x=x, weight=weight, styles=styles, padding=1) | change
        with pytest.raises(error, match=message):
            modulated_conv2d(**kwargs)


@pytest.mark.parametrize("up", [2, 3])
@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (2, 4), (5, 3)])
@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2), (1, 2, 5), (2, -1, 4, 3, 1)])
def test_upsampling_on_the_input_grid_gives_the_definitions_sums(up, kernel, taps):
    """fast_resampled_conv2d (transposed convolution, then the filter) against the reference (zero
    insertion, filter, convolution): odd, even and non-square kernels, asymmetric filters and paddings,
    grouped weights, float64 forward and gradients."""
    from medkern.ops.modulated_conv2d import fast_resampled_conv2d
    from medkern.reference.modulated_conv2d import resampled_conv2d

    torch.manual_seed(0)
    groups, x = 2, torch.randn(2, 6, 5, 7, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, *kernel, dtype=torch.float64, requires_grad=True)
    for f in (fir_filter(taps, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)):  # separable, 2-D
        for padding in ((0, 0), (1, 2), (kernel[0] // 2, kernel[1] // 2)):
            want = resampled_conv2d(x, weight, f, up, 1, padding, groups)
            got = fast_resampled_conv2d(x, weight, f, up, 1, padding, groups)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
            grad = torch.randn_like(want)
            for a, b in zip(torch.autograd.grad(got, (x, weight), grad), torch.autograd.grad(want, (x, weight), grad)):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
