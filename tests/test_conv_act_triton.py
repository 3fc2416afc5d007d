"""The triton backend of medkern.ops.conv_act (medkern::triton_conv_act) against the reference.

On CPU the kernel runs in Triton's interpreter (TRITON_INTERPRET=1, set by conftest.py), so the
shapes are small; the cuda params run the same tests on a GPU where one is present.
"""

import pytest
import torch

import medkern
from medkern import activations, tolerances
from medkern.ops import conv_act
from medkern.reference import conv_act as reference

from conftest import needs_cuda

triton = pytest.importorskip("triton")
from medkern.triton import conv_act as triton_conv_act  # noqa: E402

DEVICES = [
    pytest.param("cpu", id="cpu-triton_interpreter"),
    pytest.param("cuda", id="cuda-triton", marks=needs_cuda),
]

CASES = {  # name -> (x shape, weight shape, conv kwargs)
    "2d": ((2, 3, 5, 6), (4, 3, 3, 3), dict(padding=1)),
    "2d-stride-dilation": ((2, 4, 5, 6), (5, 4, 3, 2), dict(stride=(2, 1), padding=(2, 0), dilation=(1, 2))),
    "2d-groups": ((2, 6, 5, 6), (8, 3, 3, 3), dict(stride=2, padding=1, groups=2)),
    "2d-depthwise": ((2, 4, 5, 6), (4, 1, 3, 3), dict(padding=1, groups=4)),
    "2d-same-even-kernel": ((2, 3, 5, 6), (4, 3, 2, 4), dict(padding="same", dilation=(1, 1))),
    "2d-valid": ((2, 3, 5, 6), (4, 3, 3, 3), dict(padding="valid")),
    "3d": ((2, 3, 4, 4, 3), (5, 3, 3, 3, 3), dict(padding=1)),
    "3d-stride-groups": ((2, 4, 4, 4, 3), (6, 2, 2, 3, 3), dict(stride=(2, 1, 1), padding=(0, 1, 1), groups=2)),
    "1d": ((2, 3, 7), (4, 3, 3), dict(stride=2, padding=1)),
    "2d-unbatched": ((3, 5, 6), (4, 3, 3, 3), dict(padding=1)),
}


def _oracle_dtype(dtype):
    return tolerances.oracle_dtype(dtype)


def _alpha(act, alpha):
    return activations.resolve_alpha(activations.get(act), alpha)


def _check_case(device, dtype, case, act="gelu", alpha=None, bias=True, residual=False, memory_format=None,
                backward=True):
    """Runs conv_act on the triton backend and the reference (in the oracle dtype, on CPU), and
    compares the output and the gradients of x, weight, bias and residual."""
    x_shape, w_shape, kwargs = CASES[case] if isinstance(case, str) else case
    x = torch.randn(x_shape, dtype=dtype, device=device)
    w = (torch.randn(w_shape, dtype=torch.float64) / (w_shape[1] * 3) ** 0.5).to(dtype=dtype, device=device)
    b = torch.randn(w_shape[0], dtype=dtype, device=device) if bias else None
    if memory_format is not None:
        x, w = x.to(memory_format=memory_format), w.to(memory_format=memory_format)
    oracle = _oracle_dtype(dtype)
    with torch.no_grad():
        out_shape = reference.conv_act(x.cpu().to(oracle), w.cpu().to(oracle), None, **kwargs, act="linear").shape
    r = torch.randn(out_shape, dtype=dtype, device=device) if residual else None
    inputs = [t for t in (x, w, b, r) if t is not None]
    for t in inputs:
        t.requires_grad_(backward)
    with medkern.use_backend("triton"):
        got = conv_act(x, w, b, **kwargs, act=act, alpha=alpha, residual=r)
    ref_inputs = [t.detach().cpu().to(oracle).requires_grad_(backward) for t in inputs]
    rx, rw, *rest = ref_inputs
    rb = rest.pop(0) if bias else None
    rr = rest.pop(0) if residual else None
    want = reference.conv_act(rx, rw, rb, **kwargs, act=act, alpha=_alpha(act, alpha), residual=rr)
    label = f"{case} {dtype} {act}"
    assert got.dtype == dtype and got.device.type == device and got.shape == want.shape
    tolerances.assert_close(got.cpu(), want.to(dtype).to(oracle), "conv_act", "forward", dtype, label)
    if not backward:
        return got
    upstream = torch.randn(got.shape, dtype=dtype, device=device)
    grads = torch.autograd.grad(got, inputs, upstream)
    want_grads = torch.autograd.grad(want, ref_inputs, upstream.cpu().to(oracle))
    for name, g, e in zip(("x", "weight", "bias", "residual") if bias else ("x", "weight", "residual"), grads,
                          want_grads):
        assert g.shape == e.shape and g.dtype == dtype
        tolerances.assert_close(g.cpu(), e.to(dtype).to(oracle), "conv_act", "grad", dtype, f"{label} d{name}")
    return got


@pytest.fixture(autouse=True)
def _ieee_fp32_on_gpu():
    """The reference runs on CPU; the backward's library convolution on a GPU must not use TF32."""
    if not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = saved


# --- parity with the reference --------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")  # the reference's
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case,act,alpha,residual", [
    ("2d", "gelu", None, True),
    ("2d-stride-dilation", "relu", None, False),
    ("2d-groups", "lrelu", 0.2, True),
    ("2d-depthwise", "silu", None, False),
    ("2d-same-even-kernel", "elu", 0.5, True),
    ("2d-valid", "linear", None, True),
    ("3d", "relu", None, True),
    ("3d-stride-groups", "tanh", None, False),
    ("1d", "sigmoid", None, True),
    ("2d-unbatched", "lrelu", None, True),
], ids=lambda v: v if isinstance(v, str) else None)
def test_matches_reference_float64(device, case, act, alpha, residual):
    """Geometry (stride, padding incl. 'same' with an even kernel, dilation, groups, 1d/2d/3d,
    unbatched) in float64, where the kernel's sum differs from torch's only by rounding."""
    _check_case(device, torch.float64, case, act, alpha, residual=residual)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case,act", [("2d-groups", "gelu"), ("3d", "relu")])
def test_matches_reference_dtypes(device, dtype, case, act):
    """float32 (IEEE products), float16 and bfloat16 (float32 accumulation); relu's backward reads
    y, gelu's recomputes z."""
    _check_case(device, dtype, case, act, residual=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("act", activations.NAMES)
def test_every_activation(device, act):
    alpha = {"lrelu": -0.3, "elu": 0.7}.get(act)  # a negative slope: backward recomputes z
    _check_case(device, torch.float32, "2d", act, alpha, residual=act in ("relu", "gelu", "lrelu"))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["2d", "3d", "1d"])
def test_channels_last(device, case):
    """Channels-last x and weight are read through their strides; y and dx stay channels-last."""
    rank = len(CASES[case][1]) - 2
    fmt = {2: torch.channels_last, 3: torch.channels_last_3d}.get(rank)
    if fmt is None:  # 1d: (N, L, C) in memory
        x_shape, w_shape, kwargs = CASES[case]
        x = torch.randn(x_shape[0], x_shape[2], x_shape[1], dtype=torch.float64, device=device).transpose(1, 2)
        w = torch.randn(w_shape, dtype=torch.float64, device=device)
        with medkern.use_backend("triton"):
            got = conv_act(x, w, None, **kwargs, act="relu")
        want = reference.conv_act(x.cpu(), w.cpu(), None, **kwargs, act="relu")
        tolerances.assert_close(got.cpu(), want, "conv_act", "forward", torch.float64)
        assert got.transpose(1, 2).is_contiguous()
        return
    got = _check_case(device, torch.float32, case, "silu", residual=True, memory_format=fmt)
    assert got.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_layouts_and_strided_views(device):
    """A channels-last x with a contiguous weight, a sliced (non-dense) x and a transposed residual."""
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64, device=device)[:, 1:4, 1:, :]  # sliced view
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=device)
    r = torch.randn(2, 4, 6, 6, dtype=torch.float64, device=device).transpose(2, 3)
    b = torch.randn(4, dtype=torch.float64, device=device)
    with medkern.use_backend("triton"):
        got = conv_act(x, w, b, padding=1, act="elu", residual=r)
        got_cl = conv_act(x.contiguous(memory_format=torch.channels_last), w, b, padding=1, act="elu", residual=r)
    want = reference.conv_act(x.cpu(), w.cpu(), b.cpu(), padding=1, act="elu", alpha=1.0, residual=r.cpu())
    tolerances.assert_close(got.cpu(), want, "conv_act", "forward", torch.float64)
    tolerances.assert_close(got_cl.cpu(), want, "conv_act", "forward", torch.float64)
    assert got_cl.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
def test_without_bias_and_broadcast_residual(device):
    _check_case(device, torch.float64, "2d", "silu", bias=False, residual=True)
    # a residual broadcast along the batch and width (the reference's z + residual broadcasts)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=device, requires_grad=True)
    r = torch.randn(1, 4, 5, 1, dtype=torch.float64, device=device, requires_grad=True)
    with medkern.use_backend("triton"):
        got = conv_act(x, w, None, padding=1, act="gelu", residual=r)
    want = reference.conv_act(x, w, None, padding=1, act="gelu", alpha=0.0, residual=r)
    tolerances.assert_close(got, want, "conv_act", "forward", torch.float64)
    g = torch.randn_like(want)
    for a, e in zip(torch.autograd.grad(got, (x, w, r), g), torch.autograd.grad(want, (x, w, r), g)):
        tolerances.assert_close(a, e, "conv_act", "grad", torch.float64)


def test_gradcheck():
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    r = torch.randn(1, 3, 2, 4, dtype=torch.float64, requires_grad=True)

    def fn(x, w, b, r):
        return triton_conv_act.forward_op()(x, w, b, [1, 1], [0, 0], [1, 1], 1, "softplus", 0.0, r)

    assert torch.autograd.gradcheck(fn, (x, w, b, r), fast_mode=True)


def test_opcheck():
    """torch.library.opcheck: schema, autograd registration, fake kernel (the interpreter cannot
    be traced by AOT dispatch; on a GPU it is checked too)."""
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    device = "cpu"
    if torch.cuda.is_available():
        device, utils = "cuda", utils + ("test_aot_dispatch_dynamic",)
    x = torch.randn(2, 3, 5, 6, device=device).to(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    b = torch.randn(4, device=device, requires_grad=True)
    r = torch.randn(2, 4, 3, 6, device=device, requires_grad=True)
    op = triton_conv_act.forward_op()
    torch.library.opcheck(op, (x, w, b, [2, 1], [1, 1], [1, 1], 1, "lrelu", 0.1, r), test_utils=utils)
    torch.library.opcheck(op, (x.detach(), w.detach(), None, [1, 1], [0, 0], [1, 1], 1, "gelu", 0.0, None),
                          test_utils=utils)


def test_empty_batch():
    x = torch.randn(0, 3, 5, 6)
    w = torch.randn(4, 3, 3, 3)
    with medkern.use_backend("triton"):
        y = conv_act(x, w, torch.randn(4), padding=1)
    assert y.shape == (0, 4, 5, 6)


def test_conv_transpose_act_runs_on_triton_backend():
    """conv_transpose_act keeps the library's transposed convolution on the triton backend."""
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    w = torch.randn(4, 3, 4, 4, dtype=torch.float64)
    with medkern.use_backend("triton"):
        got = medkern.ops.conv_transpose_act(x, w, None, stride=2, padding=1, act="relu")
    want = reference.conv_transpose_act(x, w, None, stride=2, padding=1, act="relu", alpha=0.0)
    tolerances.assert_close(got, want, "bias_act", "forward", torch.float64)


# --- bad input -------------------------------------------------------------------------------------

OP_CALLS = [  # arguments of medkern::triton_conv_act replaced -> (error, message)
    (dict(x=torch.randn(2, 3, 5)), ValueError, "must both be 3-d, 4-d or 5-d"),
    (dict(x=torch.randint(0, 3, (2, 3, 5, 6))), TypeError, "x must be float32, float64, float16 or bfloat16"),
    (dict(weight=torch.randn(4, 3, 3, 3).double()), TypeError, "weight must have x's dtype"),
    (dict(bias=torch.randn(5)), ValueError, "bias must be 1-d with weight.shape"),
    (dict(residual=torch.randn(2, 4, 5, 5)), ValueError, "residual must have the output's shape"),
    (dict(groups=2), ValueError, "must split into 2 groups"),
    (dict(groups=0), ValueError, "groups must be a positive int"),
    (dict(stride=[1]), ValueError, "stride must be 2 ints >= 1"),
    (dict(stride=[0, 1]), ValueError, "stride must be 2 ints >= 1"),
    (dict(padding=[-1, 0]), ValueError, "padding must be 2 ints >= 0"),
    (dict(weight=torch.randn(4, 3, 9, 3)), ValueError, "does not fit the padded input"),
    (dict(act="swishy"), ValueError, "unknown activation"),
    (dict(x=torch.randn(2, 3, 5, 6).double(), weight=torch.randn(4, 3, 3, 3).double(), bias=None,
          act="lrelu", alpha=1e300), ValueError, "within float32's range"),
]


@pytest.mark.parametrize("kwargs,error,message", OP_CALLS, ids=[c[2][:28] for c in OP_CALLS])
def test_op_bad_input_names_op_and_argument(kwargs, error, message):
    args = dict(x=torch.randn(2, 3, 5, 6), weight=torch.randn(4, 3, 3, 3), bias=torch.randn(4), stride=[1, 1],
                padding=[1, 1], dilation=[1, 1], groups=1, act="relu", alpha=0.0, residual=None)
    args.update(kwargs)
    with pytest.raises(error, match=message) as info:
        triton_conv_act.forward_op()(**args)
    assert "medkern::triton_conv_act" in str(info.value)


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(residual=torch.randn(3, 5, 6)), ValueError, "does not broadcast to the output's shape"),
    (dict(padding="same", stride=2), ValueError, "padding='same' is not supported for strided"),
    (dict(padding="full"), ValueError, "padding must be an int, a sequence of ints, 'same' or 'valid'"),
    (dict(act="relu", alpha=0.1), ValueError, "takes no alpha"),
], ids=["residual", "same-strided", "padding-str", "alpha"])
def test_ops_bad_input_on_triton_backend(kwargs, error, message):
    args = dict(x=torch.randn(2, 3, 5, 6), weight=torch.randn(4, 3, 3, 3), bias=None, act="relu")
    args.update(kwargs)
    with medkern.use_backend("triton"), pytest.raises(error, match=message) as info:
        conv_act(**args)
    assert "medkern.ops.conv_act" in str(info.value)


def test_interpreter_refuses_torch_compile():
    if torch.cuda.is_available():
        pytest.skip("Triton runs compiled on this machine")
    x, w = torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3, 3)
    with medkern.use_backend("triton"):
        torch._dynamo.reset()
        with pytest.raises(Exception, match="cannot be traced by torch.compile"):
            torch.compile(lambda x: conv_act(x, w, None, padding=1), fullgraph=True)(x)
