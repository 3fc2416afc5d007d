"""medkern.ops.conv_act / conv_transpose_act against the reference (torch's convolution + epilogue)."""

import pytest
import torch

import medkern
from medkern import tolerances
from medkern.ops import conv_act, conv_transpose_act
from medkern.reference import conv_act as reference

CASES = [  # (x shape, weight shape, kwargs)
    ((2, 3, 11), (4, 3, 3), dict(padding=1)),
    ((2, 4, 9, 8), (6, 4, 3, 3), dict(padding="same", dilation=2)),
    ((2, 4, 9, 8), (6, 2, 3, 3), dict(stride=2, padding=1, groups=2)),
    ((1, 2, 5, 6, 4), (3, 2, 3, 3, 3), dict(padding=(1, 0, 1))),
    ((3, 9, 9), (5, 3, 3, 3), dict(padding=1)),  # unbatched 2d
]
ACTS = [("relu", None), ("lrelu", 0.2), ("gelu", None), ("silu", None), ("elu", 0.5), ("tanh", None), ("linear", None)]


def _inputs(x_shape, w_shape, dtype=torch.float64, requires_grad=True, out_channels=None):
    x = torch.randn(x_shape, dtype=dtype)
    w = torch.randn(w_shape, dtype=dtype) / w_shape[1]
    b = torch.randn(w_shape[0] if out_channels is None else out_channels, dtype=dtype)
    return [t.requires_grad_(requires_grad) for t in (x, w, b)]


def _output_shape(x, w, kwargs):
    with torch.no_grad():
        return reference.conv_act(x, w, None, **kwargs, act="linear").shape


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{len(c[1]) - 2}d-{c[0]}")
@pytest.mark.parametrize("act,alpha", ACTS, ids=[a for a, _ in ACTS])
@pytest.mark.parametrize("with_residual", [False, True], ids=["", "residual"])
def test_matches_reference_forward_and_backward(case, act, alpha, with_residual):
    x_shape, w_shape, kwargs = case
    x, w, b = _inputs(x_shape, w_shape)
    residual = torch.randn(_output_shape(x, w, kwargs), dtype=x.dtype, requires_grad=True) if with_residual else None
    ref_alpha = medkern.activations.resolve_alpha(medkern.activations.get(act), alpha)
    expected = reference.conv_act(x, w, b, **kwargs, act=act, alpha=ref_alpha, residual=residual)
    got = conv_act(x, w, b, **kwargs, act=act, alpha=alpha, residual=residual)
    tolerances.assert_close(got, expected, "bias_act", "forward", torch.float64)
    wrt = [x, w, b] + ([residual] if with_residual else [])
    upstream = torch.randn_like(expected)
    for g_got, g_exp in zip(torch.autograd.grad(got, wrt, upstream), torch.autograd.grad(expected, wrt, upstream)):
        tolerances.assert_close(g_got, g_exp, "bias_act", "grad", torch.float64)


@pytest.mark.parametrize("case", CASES[:4], ids=lambda c: f"{len(c[1]) - 2}d")
def test_gradcheck(case):
    x_shape, w_shape, kwargs = case
    x, w, b = _inputs(x_shape, w_shape)
    assert torch.autograd.gradcheck(lambda x, w, b: conv_act(x, w, b, **kwargs, act="silu"), (x, w, b))


@pytest.mark.parametrize("act,alpha", [("relu", None), ("lrelu", 0.2), ("gelu", None), ("silu", None), ("linear", None)])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_inference_path_matches_reference(act, alpha, memory_format):
    """Without autograd, float32 CPU convolutions take oneDNN's fused post-op path."""
    x, w, b = (t.detach().float() for t in _inputs((2, 8, 10, 9), (16, 8, 3, 3)))
    x, w = x.to(memory_format=memory_format), w.to(memory_format=memory_format)
    ref_alpha = medkern.activations.resolve_alpha(medkern.activations.get(act), alpha)
    with torch.no_grad():
        got = conv_act(x, w, b, padding=1, act=act, alpha=alpha)
        expected = reference.conv_act(x, w, b, padding=1, act=act, alpha=ref_alpha)
    tolerances.assert_close(got, expected, "bias_act", "forward", torch.float32)
    if memory_format == torch.channels_last:
        assert got.is_contiguous(memory_format=torch.channels_last)


def test_channels_last_stays_channels_last_in_training():
    x, w, b = (t.detach().float() for t in _inputs((2, 8, 10, 9), (16, 8, 3, 3)))
    x = x.to(memory_format=torch.channels_last).requires_grad_()
    w = w.to(memory_format=torch.channels_last).requires_grad_()
    y = conv_act(x, w, b, padding=1, act="relu")
    assert y.is_contiguous(memory_format=torch.channels_last)
    (gx,) = torch.autograd.grad(y, x, torch.randn_like(y))
    assert gx.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_conv_transpose_act(rank):
    x, w, b = _inputs((2, 4) + (5,) * rank, (4, 3) + (4,) * rank, out_channels=3)
    kwargs = dict(stride=2, padding=1, output_padding=1)
    expected = reference.conv_transpose_act(x, w, b, **kwargs, act="lrelu", alpha=0.2)
    got = conv_transpose_act(x, w, b, **kwargs, act="lrelu", alpha=0.2)
    tolerances.assert_close(got, expected, "bias_act", "forward", torch.float64)
    upstream = torch.randn_like(expected)
    for g_got, g_exp in zip(torch.autograd.grad(got, (x, w, b), upstream),
                            torch.autograd.grad(expected, (x, w, b), upstream)):
        tolerances.assert_close(g_got, g_exp, "bias_act", "grad", torch.float64)


@pytest.mark.parametrize("bad,error,match", [
    (dict(weight=torch.randn(4, 3)), ValueError, "weight must be 3-d, 4-d or 5-d"),
    (dict(x=torch.randn(2, 3, 4, 5, 6)), ValueError, "x must be 4-d"),
    (dict(groups=0), ValueError, "groups must be a positive int"),
    (dict(bias=torch.randn(4, dtype=torch.float64)), TypeError, "bias must have x's dtype"),
    (dict(x=torch.ones(2, 3, 5, 5, dtype=torch.int64)), TypeError, "x must be a floating-point tensor"),
    (dict(act="nope"), ValueError, "unknown activation"),
    (dict(act="relu", alpha=0.1), ValueError, "takes no alpha"),
])
def test_bad_input_names_op_and_argument(bad, error, match):
    args = dict(x=torch.randn(2, 3, 5, 5), weight=torch.randn(4, 3, 3, 3), bias=None, act="relu")
    args.update(bad)
    with pytest.raises(error, match=match) as info:
        conv_act(**args)
    assert "medkern.ops.conv_act" in str(info.value)
