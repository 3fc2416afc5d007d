"""The activations in plain PyTorch, and their third derivatives.

``activation`` uses torch's own functions, so autograd of the reference gives torch's
derivatives (including its conventions at kinks: relu'(0) = 0, lrelu'(0) = alpha).
``third_derivative`` serves gradients of order three and above of the fused ops: the kernels
compute orders 0 to 2, and the order-2 gradient op differentiates into this function, which
autograd can differentiate further.
"""

import math

import torch
import torch.nn.functional as F

from .. import activations
from ..activations import SELU_ALPHA, SELU_SCALE, SOFTPLUS_THRESHOLD

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def activation(z: torch.Tensor, act: str, alpha: float) -> torch.Tensor:
    if act == "linear":
        return z
    if act == "relu":
        return F.relu(z)
    if act == "lrelu":
        return F.leaky_relu(z, alpha)
    if act == "tanh":
        return torch.tanh(z)
    if act == "sigmoid":
        return torch.sigmoid(z)
    if act == "elu":
        return F.elu(z, alpha)
    if act == "selu":
        return F.selu(z)
    if act == "softplus":
        return F.softplus(z, beta=1.0, threshold=SOFTPLUS_THRESHOLD)
    if act == "silu":
        return F.silu(z)
    if act == "gelu":
        return F.gelu(z, approximate="none")
    raise ValueError(f"unknown activation {act!r}")


def activation_as_given(z: torch.Tensor, act: str, alpha=None) -> torch.Tensor:
    """``activation`` for a name as users give it (aliases: "swish") and an optional alpha (the
    activation's default if None), as the fused ops take them."""
    spec = activations.get(act)
    return activation(z, spec.name, activations.resolve_alpha(spec, alpha))


def third_derivative(z: torch.Tensor, act: str, alpha: float) -> torch.Tensor:
    zero = torch.zeros_like(z)
    if act in ("linear", "relu", "lrelu"):
        return zero
    if act == "tanh":
        t = torch.tanh(z)
        return (1 - t * t) * (6 * t * t - 2)
    if act in ("sigmoid", "softplus", "silu"):
        s = torch.sigmoid(z)
        d1 = s * (1 - s)
        d2 = d1 * (1 - 2 * s)
        d3 = d2 * (1 - 2 * s) - 2 * d1 * d1
        if act == "sigmoid":
            return d3
        if act == "softplus":  # softplus''' = sigmoid'', zero where softplus is linear
            return torch.where(z > SOFTPLUS_THRESHOLD, zero, d2)
        return 3 * d2 + z * d3  # silu = z * sigmoid(z)
    if act == "elu":
        return torch.where(z < 0, alpha * torch.exp(z), zero)
    if act == "selu":
        return torch.where(z < 0, SELU_SCALE * SELU_ALPHA * torch.exp(z), zero)
    if act == "gelu":  # d/dz of phi(z) * (2 - z^2), phi the standard normal density
        phi = torch.exp(-0.5 * z * z) * _INV_SQRT_2PI
        return phi * (z * z * z - 4 * z)
    raise ValueError(f"unknown activation {act!r}")
