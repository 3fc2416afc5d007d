"""medkern.ops.projection: an RNN layer's input projection, through oneDNN's linear where the
CPU's RNN GEMMs are medkern's (MKL's generic code path), else F.linear."""

import pytest
import torch
import torch.nn.functional as F

from medkern import tolerances
from medkern.ops import projection

from conftest import needs_cuda


def _args(shape=(7, 5, 12), out=40, bias=True, dtype=torch.float32):
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    w = (torch.randn(out, shape[-1], dtype=dtype) / 3).requires_grad_()
    b = torch.randn(out, dtype=dtype, requires_grad=True) if bias else None
    return x, w, b


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("shape", [(7, 5, 12), (1, 1, 1), (3, 33, 17)], ids=str)
def test_matches_f_linear_forward_and_backward(rnn_cpu_gemm, shape, bias):
    x, w, b = _args(shape, bias=bias)
    assert projection.uses_onednn(x, w, b) == (rnn_cpu_gemm == "medkern" and torch.backends.mkldnn.is_available())
    leaves = [t for t in (x, w, b) if t is not None]
    y = projection.project(x, w, b)
    upstream = torch.randn_like(y)
    got = torch.autograd.grad(y, leaves, upstream)
    y_ref = F.linear(x, w, b)
    want = torch.autograd.grad(y_ref, leaves, upstream)
    tolerances.assert_close(y, y_ref, "rnn", "forward", torch.float32)
    for g, e in zip(got, want):
        tolerances.assert_close(g, e, "rnn", "grad", torch.float32)


def test_non_contiguous_input(rnn_cpu_gemm):
    x, w, b = _args((5, 7, 12))
    xt = x.transpose(0, 1)  # (7, 5, 12), not contiguous
    y = projection.project(xt, w, b)
    tolerances.assert_close(y, F.linear(xt, w, b), "rnn", "forward", torch.float32)
    g = torch.autograd.grad(y.square().sum(), x)[0]
    tolerances.assert_close(g, torch.autograd.grad(F.linear(xt, w, b).square().sum(), x)[0], "rnn", "grad",
                            torch.float32)


def test_second_order_gradients(rnn_cpu_gemm):
    x, w, b = _args()
    results = []
    for fn in (projection.project, F.linear):
        (gx,) = torch.autograd.grad(fn(x, w, b).square().sum(), x, create_graph=True)
        results.append(torch.autograd.grad(gx.square().sum(), (x, w, b)))
    for g, e in zip(*results):
        tolerances.assert_close(g, e, "rnn", "grad", torch.float32)


def test_f_linear_runs_where_onednn_would_not(rnn_cpu_gemm):
    x, w, b = _args()
    assert not projection.uses_onednn(x.double(), w.double(), b.double())  # float32 only
    assert not projection.uses_onednn(x[:0], w, b)  # empty
    torch.backends.mkldnn.enabled = False  # (flags() would warn about Intel GPUs' TF32)
    try:
        assert not projection.uses_onednn(x, w, b)
    finally:
        torch.backends.mkldnn.enabled = True
    point = x[0].detach()  # under torch.func: F.linear
    jac = torch.func.jacrev(lambda t: projection.project(t, w.detach(), b.detach()))(point)
    want = torch.func.jacrev(lambda t: F.linear(t, w.detach(), b.detach()))(point)
    assert jac.shape == (5, 40, 5, 12) and torch.equal(jac, want)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not projection.uses_onednn(x, w, b)
        assert projection.project(x, w, b).dtype == torch.bfloat16  # autocast's F.linear


# medkern::transposed_product: a.T @ b. Shapes: row blocks and panels with tails, K over more than
# one block of 256, K = 1, and nothing to sum (K = 0: zeros).
PRODUCT_SHAPES = [(300, 13, 40), (5, 8, 32), (1, 3, 70), (513, 17, 9), (0, 4, 6), (4, 3, 0), (4, 0, 5)]


@pytest.mark.parametrize("k,m,n", PRODUCT_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_transposed_product_matches_mm(rnn_cpu_gemm, k, m, n, dtype):
    a, b = torch.randn(k, m, dtype=dtype), torch.randn(k, n, dtype=dtype)
    got = torch.ops.medkern.transposed_product(a, b)
    assert got.shape == (m, n) and got.dtype == dtype
    tolerances.assert_close(got, a.t() @ b, "rnn", "grad", dtype)


@pytest.mark.parametrize("a,b", [
    (torch.randn(300, 50)[:, 3:33], torch.randn(300, 60)[:, 5:42]),  # rows longer than their width: read in place
    (torch.randn(40, 30)[:, ::2], torch.randn(40, 50)[:, 3:40]),  # a column stride of 2: the library's product
], ids=["row-strides", "column-stride"])
def test_transposed_product_reads_strided_inputs(rnn_cpu_gemm, a, b):
    tolerances.assert_close(torch.ops.medkern.transposed_product(a, b), a.t() @ b, "rnn", "grad", torch.float32)


def test_transposed_product_opcheck(rnn_cpu_gemm):
    a, b = torch.randn(300, 9, requires_grad=True), torch.randn(300, 21, requires_grad=True)
    torch.library.opcheck(torch.ops.medkern.transposed_product.default, (a, b))


def test_transposed_product_gradcheck():
    a, b = torch.randn(7, 4, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    leaves = (a.requires_grad_(), b.requires_grad_())
    assert torch.autograd.gradcheck(torch.ops.medkern.transposed_product, leaves)
    assert torch.autograd.gradgradcheck(torch.ops.medkern.transposed_product, leaves)


@pytest.mark.parametrize("a,b,error,match", [
    (torch.randn(3), torch.randn(3, 2), ValueError, "a and b must be 2-d"),
    (torch.randn(3, 2), torch.randn(4, 2), ValueError, "must have as many rows, got 3 and 4"),
    (torch.randn(3, 2), torch.randn(3, 2, dtype=torch.float64), TypeError, "floating point of one dtype"),
    (torch.ones(3, 2, dtype=torch.int64), torch.ones(3, 2, dtype=torch.int64), TypeError, "floating point"),
], ids=["not-2d", "rows", "dtypes", "integer"])
def test_transposed_product_refuses_bad_input(a, b, error, match):
    with pytest.raises(error, match=f"medkern::transposed_product: .*{match}"):
        torch.ops.medkern.transposed_product(a, b)


@needs_cuda
def test_transposed_product_on_cuda():
    a, b = torch.randn(300, 13, device="cuda"), torch.randn(300, 40, device="cuda")
    tolerances.assert_close(torch.ops.medkern.transposed_product(a, b), a.t() @ b, "rnn", "grad", torch.float32)
