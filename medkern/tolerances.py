"""The one tolerance table: how close a kernel must come to the reference.

The oracle for float16 and bfloat16 inputs is the reference computed in float32 on the same
(upcast) inputs and rounded to the input dtype, since the kernels compute in float32 inside;
for float32 and float64 it is the reference in the same dtype.

Tolerances start from torch.testing.assert_close's defaults (float32: rtol 1.3e-6,
atol 1e-5; float16: 1e-3, 1e-5; bfloat16: 1.6e-2, 1e-5), tightened for float64, where the
kernels and torch evaluate the same formulas. ``atol`` is relative to the largest finite magnitude
in the expected tensor (at least 1): sums over many elements (bias gradients) carry rounding
error in proportion to their size, not to each element.

``grad2`` (second-order gradients) is looser for half types: the upstream product of two
gradients is rounded to the input dtype before the kernel sees it, as autograd does.
"""

from __future__ import annotations

import torch

# (family, kind) -> dtype -> (rtol, atol)
TOLERANCES = {
    ("bias_act", "forward"): {
        torch.float64: (1e-12, 1e-12),
        torch.float32: (1.3e-6, 1e-5),
        torch.float16: (1e-3, 1e-5),
        torch.bfloat16: (1.6e-2, 1e-5),
    },
    ("bias_act", "grad"): {
        torch.float64: (1e-12, 1e-12),
        torch.float32: (1.3e-6, 1e-5),
        torch.float16: (2e-3, 1e-3),
        torch.bfloat16: (1.6e-2, 8e-3),
    },
    ("bias_act", "grad2"): {
        torch.float64: (1e-11, 1e-11),
        torch.float32: (1e-5, 1e-5),
        torch.float16: (4e-3, 4e-3),
        torch.bfloat16: (3.2e-2, 3.2e-2),
    },
    # norm_act: statistics are sums over whole channels/groups, and the input gradient subtracts
    # two group means from dpre (cancellation), so errors scale with the group's magnitude; the
    # kernels accumulate per 4096-element segment in the op-math type and combine in float64.
    ("norm_act", "forward"): {
        torch.float64: (1e-10, 1e-10),
        torch.float32: (1e-5, 1e-5),
        torch.float16: (2e-3, 2e-3),
        torch.bfloat16: (1.6e-2, 1.6e-2),
    },
    ("norm_act", "grad"): {
        torch.float64: (1e-9, 1e-9),
        torch.float32: (1e-4, 1e-4),
        torch.float16: (1e-2, 1e-2),
        torch.bfloat16: (6e-2, 6e-2),
    },
    # medkern::triton_conv_act (the triton backend of medkern.ops.conv_act) against the reference
    # (torch's convolution, then the epilogue). The kernel sums the K = C_in/groups * prod(kernel)
    # products in its own order (tiles of input channels per kernel tap, on tl.dot), the library
    # in another: their sums differ by rounding that grows with K, about sqrt(K) * eps of the sum
    # of |products| and at worst K * eps, which can exceed the output's largest magnitude (the
    # scale of atol) where terms cancel. float32 is therefore looser than a one-pass op's, 1e-5
    # covering K up to a few hundred (the tests' largest is 216). float16 and bfloat16 keep
    # bias_act's forward tolerances: the products are exact and summed in float32, so the
    # result is at most one rounding of the output dtype (one ulp: 2**-10, 2**-7) from the
    # oracle's.
    ("conv_act", "forward"): {
        torch.float64: (1e-12, 1e-12),
        torch.float32: (1e-5, 1e-5),
        torch.float16: (1e-3, 1e-5),
        torch.bfloat16: (1.6e-2, 1e-5),
    },
    # Gradients: dz = grad * act'(z) is evaluated at the kernel's z (its rounding above, scaled by
    # act'' / act'), then the library's convolution backward sums dz against x or the weight over
    # N * out_spatial (weight) or C_out * prod(kernel) (input) terms. For float16 and bfloat16
    # dz is rounded to the input dtype before those sums (as autograd through the library
    # convolution does) while the oracle runs in float32 throughout: a relative error of one
    # rounding per term (2**-11, 2**-8), which after summing terms of either sign is bounded
    # against the largest gradient (the scale of atol), not against each element.
    ("conv_act", "grad"): {
        torch.float64: (1e-11, 1e-11),
        torch.float32: (1e-5, 2e-5),
        torch.float16: (2e-3, 2e-3),
        torch.bfloat16: (1.6e-2, 1.6e-2),
    },
}


def tolerance(family: str, kind: str, dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing ``family``'s ``kind`` outputs of ``dtype``."""
    try:
        return TOLERANCES[(family, kind)][dtype]
    except KeyError:
        raise KeyError(f"no tolerance for {family} {kind} {dtype}; add it to medkern/tolerances.py") from None


def oracle_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the reference runs in to judge a kernel of ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """The largest absolute difference, in float64."""
    if actual.numel() == 0:
        return 0.0
    return (actual.double() - expected.double()).abs().max().item()


def bounds(expected: torch.Tensor, family: str, kind: str, dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing with ``expected``: the table's, atol scaled as described above."""
    rtol, atol = tolerance(family, kind, dtype)
    finite = expected[torch.isfinite(expected)]
    scale = max(1.0, finite.abs().max().item()) if finite.numel() else 1.0
    return rtol, atol * scale


def assert_close(actual: torch.Tensor, expected: torch.Tensor, family: str, kind: str, dtype: torch.dtype, msg=""):
    """torch.testing.assert_close with the table's tolerances (atol scaled as described above)."""
    rtol, atol = bounds(expected, family, kind, dtype)
    torch.testing.assert_close(
        actual.to(expected.dtype), expected, rtol=rtol, atol=atol, equal_nan=True,
        msg=lambda default: f"{msg}: {default}" if msg else default,
    )


def within(actual: torch.Tensor, expected: torch.Tensor, family: str, kind: str, dtype: torch.dtype):
    """(largest error as a fraction of what is allowed, ok): assert_close's test as values.

    A fraction above 1 fails; NaN where both are NaN, and equal infinities, count as equal.
    """
    rtol, atol = bounds(expected, family, kind, dtype)
    a, e = actual.to(expected.dtype).double(), expected.double()
    same = (a == e) | (torch.isnan(a) & torch.isnan(e))
    ratio = torch.where(same, torch.zeros_like(a), (a - e).abs() / (atol + rtol * e.abs()))
    worst = ratio.max().item() if ratio.numel() else 0.0
    return worst, bool(worst <= 1.0)
