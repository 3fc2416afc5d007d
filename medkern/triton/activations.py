"""The activation table in Triton: value and first and second derivatives.

The Triton twin of csrc/common/activations.h, with the same conventions (kinks as torch's
autograd, NaN propagating) and the ids of medkern/activations.py, given as constexprs so each
kernel is specialized to one activation and one order.

Triton makes float literals and float arguments float32. So that float64 kernels keep double
precision, each real constant is passed as a pair (hi, lo) of float32 values with hi + lo equal
to it within 2**-48 (``split``), and ``exact`` adds them in the computation's dtype.
"""

import math

import numpy as np
import triton
import triton.language as tl

from ..activations import ACTIVATIONS, SELU_ALPHA, SELU_SCALE, SOFTPLUS_THRESHOLD

LINEAR: tl.constexpr = tl.constexpr(ACTIVATIONS["linear"].id)
RELU: tl.constexpr = tl.constexpr(ACTIVATIONS["relu"].id)
LRELU: tl.constexpr = tl.constexpr(ACTIVATIONS["lrelu"].id)
TANH: tl.constexpr = tl.constexpr(ACTIVATIONS["tanh"].id)
SIGMOID: tl.constexpr = tl.constexpr(ACTIVATIONS["sigmoid"].id)
ELU: tl.constexpr = tl.constexpr(ACTIVATIONS["elu"].id)
SELU: tl.constexpr = tl.constexpr(ACTIVATIONS["selu"].id)
SOFTPLUS: tl.constexpr = tl.constexpr(ACTIVATIONS["softplus"].id)
SILU: tl.constexpr = tl.constexpr(ACTIVATIONS["silu"].id)
GELU: tl.constexpr = tl.constexpr(ACTIVATIONS["gelu"].id)



def split(value: float) -> tuple[float, float]:
    """(hi, lo): float32 values whose sum is ``value`` to about 2**-48 relative (for values in
    float32's normal range). Outside float32's range hi is +-inf and lo 0, as a C++ float cast gives."""
    with np.errstate(over="ignore"):
        hi = float(np.float32(value))
    if not math.isfinite(hi):
        return hi, 0.0
    return hi, float(np.float32(value - hi))


def fits_float32(value: float) -> bool:
    """Whether ``value`` is within float32's finite range (what ``split`` can carry exactly)."""
    return abs(value) <= float(np.finfo(np.float32).max)


_SELU_ALPHA_HI: tl.constexpr = tl.constexpr(split(SELU_ALPHA)[0])
_SELU_ALPHA_LO: tl.constexpr = tl.constexpr(split(SELU_ALPHA)[1])
_SELU_SCALE_HI: tl.constexpr = tl.constexpr(split(SELU_SCALE)[0])
_SELU_SCALE_LO: tl.constexpr = tl.constexpr(split(SELU_SCALE)[1])
_INV_SQRT2_HI: tl.constexpr = tl.constexpr(split(0.70710678118654752440084436210485)[0])
_INV_SQRT2_LO: tl.constexpr = tl.constexpr(split(0.70710678118654752440084436210485)[1])
_INV_SQRT_2PI_HI: tl.constexpr = tl.constexpr(split(0.39894228040143267793994605993438)[0])
_INV_SQRT_2PI_LO: tl.constexpr = tl.constexpr(split(0.39894228040143267793994605993438)[1])
_SOFTPLUS_THRESHOLD: tl.constexpr = tl.constexpr(SOFTPLUS_THRESHOLD)  # 20: exact in float32


@triton.jit
def expm1(x):
    """exp(x) - 1 without cancellation near 0 (Kahan's trick: the rounding of u cancels out)."""
    u = tl.exp(x)
    um1 = u - 1
    r = um1 * x / tl.log(u)
    r = tl.where(um1 == -1, um1, r)  # x very negative: u == 0
    r = tl.where(u == float("inf"), u, r)
    return tl.where(u == 1, x, r)  # x tiny (or 0)


@triton.jit
def log1p(x):
    """log(1 + x) without cancellation near 0 (Kahan's trick)."""
    u = 1 + x
    r = tl.log(u) * x / (u - 1)
    r = tl.where(u == float("inf"), u, r)
    return tl.where(u == 1, x, r)


@triton.jit
def tanh(z):
    """tanh through expm1 of -2|z|, accurate near 0 and saturating without overflow."""
    e = expm1(-2 * tl.abs(z))
    t = -e / (2 + e)
    return tl.where(z < 0, -t, t)


# Triton's libdevice functions (tanh, expm1, log1p) do not run in the interpreter, which the
# tests use; the versions above are written with tl.exp and tl.log, which run in both.


@triton.jit
def exact(like, hi, lo):
    """hi + lo in the dtype of ``like`` (a tensor of ones of the computation's dtype and shape)."""
    return like * hi + like * lo


@triton.jit
def activation(z, alpha, ACT: tl.constexpr, ORDER: tl.constexpr):
    """The ORDER-th derivative (0: the value) of activation ACT at z.

    alpha (lrelu's slope, elu's alpha) is a tensor of z's dtype; see ``exact``.
    """
    zero = tl.zeros_like(z)
    one = zero + 1
    if ACT == LINEAR:
        if ORDER == 0:
            r = z
        elif ORDER == 1:
            r = one
        else:
            r = zero
    elif ACT == RELU:
        if ORDER == 0:
            r = tl.where(z < 0, zero, z)
        elif ORDER == 1:
            r = tl.where(z <= 0, zero, one)  # 1 at NaN, as torch
        else:
            r = zero
    elif ACT == LRELU:
        if ORDER == 0:
            r = tl.where(z > 0, z, z * alpha)
        elif ORDER == 1:
            r = tl.where(z > 0, one, zero + alpha)
        else:
            r = zero
    elif ACT == TANH:
        t = tanh(z)
        if ORDER == 0:
            r = t
        elif ORDER == 1:
            r = 1 - t * t
        else:
            r = t * (t * t - 1) * 2
    elif ACT == SIGMOID or ACT == SOFTPLUS or ACT == SILU:
        s = 1 / (1 + tl.exp(-z))
        ds = s * (1 - s)
        if ACT == SIGMOID:
            if ORDER == 0:
                r = s
            elif ORDER == 1:
                r = ds
            else:
                r = ds * (1 - 2 * s)
        elif ACT == SOFTPLUS:
            linear = z > _SOFTPLUS_THRESHOLD
            if ORDER == 0:
                r = tl.where(linear, z, log1p(tl.exp(z)))
            elif ORDER == 1:
                r = tl.where(linear, one, s)
            else:
                r = tl.where(linear, zero, ds)
        else:  # silu(z) = z * sigmoid(z)
            if ORDER == 0:
                r = z * s
            elif ORDER == 1:
                r = s + z * ds
            else:
                r = ds * (2 + z * (1 - 2 * s))
    elif ACT == ELU or ACT == SELU:
        if ACT == ELU:
            a = zero + alpha
            scale = one
        else:
            a = exact(one, _SELU_ALPHA_HI, _SELU_ALPHA_LO)
            scale = exact(one, _SELU_SCALE_HI, _SELU_SCALE_LO)
        if ORDER == 0:
            r = tl.where(z > 0, z, a * expm1(z)) * scale
        elif ORDER == 1:
            r = tl.where(z <= 0, a * tl.exp(z), one) * scale  # 1 at NaN, as torch
        else:
            r = tl.where(z < 0, a * tl.exp(z), zero) * scale  # 0 at z = 0, as torch
    else:  # GELU, the exact erf form
        cdf = (1 + tl.erf(z * exact(one, _INV_SQRT2_HI, _INV_SQRT2_LO))) * 0.5
        if ORDER == 0:
            r = z * cdf
        else:
            pdf = tl.exp(z * z * -0.5) * exact(one, _INV_SQRT_2PI_HI, _INV_SQRT_2PI_LO)
            if ORDER == 1:
                r = cdf + z * pdf
            else:
                r = pdf * (2 - z * z)
    return r


# For the activations whose value determines their argument (linear; lrelu and elu with
# alpha > 0), the argument and the first derivative recovered from the value y = act(z), so a
# backward can keep y alone (InPlace-ABN); the twins of activation_inverse and
# activation_derivative_from_output in csrc/common/activations.h.
RECOVERABLE_FROM_OUTPUT = ("linear", "lrelu", "elu")


@triton.jit
def activation_inverse(y, alpha, ACT: tl.constexpr):
    """z with y = act(z), for ACT in RECOVERABLE_FROM_OUTPUT; alpha as for ``activation``."""
    tl.static_assert(ACT == LINEAR or ACT == LRELU or ACT == ELU, "activation_inverse: act is not invertible")
    if ACT == LINEAR:
        r = y
    elif ACT == LRELU:
        r = tl.where(y < 0, y / alpha, y)
    else:
        r = tl.where(y > 0, y, log1p(y / alpha))
    return r


@triton.jit
def activation_derivative_from_output(y, alpha, ACT: tl.constexpr):
    """act'(z) in terms of y = act(z), with torch's values at the kink: z > 0 exactly where y > 0."""
    tl.static_assert(ACT == LINEAR or ACT == LRELU or ACT == ELU, "activation_derivative_from_output: act is not invertible")
    one = tl.zeros_like(y) + 1
    if ACT == LINEAR:
        r = one
    elif ACT == LRELU:
        r = tl.where(y > 0, one, one * alpha)
    else:
        r = tl.where(y > 0, one, y + alpha)  # alpha * exp(z) = y + alpha where z <= 0
    return r
