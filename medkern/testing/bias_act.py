"""bias_act under test: shapes and layouts, kink-free data, a run of forward and gradients, and the oracle."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import activations, ops, tolerances
from .. import backend as backend_module
from ..reference.bias_act import bias_act as reference_bias_act
from ..reference.bias_act import broadcast_along
from .judging import Judge, seeded_noise


@dataclass(frozen=True)
class Layout:
    """A shape, the dim the bias runs along, and how x is laid out in memory."""

    name: str
    shape: tuple
    dim: int
    make: str = "contiguous"  # contiguous | channels_last | channels_last_3d | transposed | sliced

    def tensor(self, data: torch.Tensor) -> torch.Tensor:
        """``data`` (of ``shape``, contiguous) re-laid out as this layout says, same values."""
        if self.make == "channels_last":
            return data.contiguous(memory_format=torch.channels_last)
        if self.make == "channels_last_3d":
            return data.contiguous(memory_format=torch.channels_last_3d)
        if self.make == "transposed":  # non-contiguous, but dense
            return data.transpose(0, -1).contiguous().transpose(0, -1)
        if self.make == "sliced":  # non-contiguous and not dense
            wide = torch.zeros(*data.shape[:-1], data.shape[-1] * 2, dtype=data.dtype, device=data.device)
            wide[..., ::2] = data
            return wide[..., ::2]
        return data


LAYOUTS = [
    Layout("nchw", (2, 5, 7, 9), 1),
    Layout("channels_last", (2, 6, 5, 3), 1, "channels_last"),
    Layout("channels_last_3d", (2, 4, 3, 5, 2), 1, "channels_last_3d"),
    Layout("transposed", (3, 4, 5), 1, "transposed"),
    Layout("sliced", (3, 4, 6), 2, "sliced"),
    Layout("rank1", (11,), 0),
    Layout("linear_2d_odd", (7, 13), 1),
    Layout("last_dim", (3, 2, 300), -1),
    Layout("long_inner", (2, 3, 300), 1),  # inner >= 256: the scalar-bias path of the CPU kernel
    Layout("one_channel", (4, 1, 5), 1),
]

KINKED = ("relu", "lrelu", "elu", "selu")
KINK_MARGIN = 1e-2


def _push_off(values: torch.Tensor, bad: torch.Tensor, step: float) -> torch.Tensor:
    return torch.where(bad, values + step, values)


def make_inputs(layout: Layout, dtype, device, act: str, alpha, gain, clamp, bias: bool = True, scale: float = 2.0):
    """x (in the layout) and b with every x + b and act(x + b) * gain at least KINK_MARGIN away from
    a point where the op is not differentiable (act's kink at 0, the clamp bounds), in the oracle's
    precision, so that kernels, reference and finite differences agree on which side they are."""
    x = torch.randn(layout.shape, dtype=torch.float64) * scale
    dim = layout.dim % len(layout.shape)
    b = torch.randn(layout.shape[dim], dtype=torch.float64) if bias else None
    spec = activations.get(act)
    alpha_value = activations.resolve_alpha(spec, alpha)
    for _ in range(20):
        x = x.to(dtype).double()  # values representable in dtype
        z = x if b is None else x + broadcast_along(b.to(dtype).double(), x.dim(), dim)
        bad = torch.zeros_like(z, dtype=torch.bool)
        if spec.name in KINKED:
            bad |= z.abs() < KINK_MARGIN
        if clamp is not None:
            v = reference_bias_act(z, None, dim, spec.name, alpha_value, 1.0 if gain is None else gain, None)
            bad |= (v.abs() - clamp).abs() < KINK_MARGIN * max(1.0, clamp)
        if not bad.any():
            break
        x = _push_off(x, bad, 3 * KINK_MARGIN)
    else:
        raise AssertionError("could not move the test inputs off the kinks")
    x = layout.tensor(x.to(dtype).to(device))
    if b is not None:
        b = b.to(dtype).to(device)
    return x, b


def resolve(act, alpha, gain, clamp):
    spec = activations.get(act)
    return spec.name, activations.resolve_alpha(spec, alpha), 1.0 if gain is None else float(gain), clamp


def run(backend: str, x, b, dim, act, alpha, gain, clamp, order: int = 2, seed: int = 1, noise_dtype=None):
    """(y, gx, gb, ggx, ggb): bias_act under ``backend``, its gradient for a random upstream g, and
    the gradient of <gx, h> + <gb, k> w.r.t. x and b (second order) for random h, k.
    Inputs are detached copies; the randomness depends on ``seed`` only, its values are
    representable in ``noise_dtype`` (default: x's dtype)."""
    noise = seeded_noise(seed, noise_dtype)

    x = x.detach().clone().requires_grad_()
    b = b.detach().clone().requires_grad_() if b is not None else None
    inputs = (x,) if b is None else (x, b)
    with backend_module.use_backend(backend):
        y = ops.bias_act(x, b, dim, act, alpha, gain, clamp)
        g = noise(y)
        grads = torch.autograd.grad(y, inputs, g, create_graph=order >= 2)
        out = [y, *grads] + ([None] if b is None else [])
        if order >= 2:
            h = [noise(t) for t in grads]
            total = sum((t * w).sum() for t, w in zip(grads, h))
            second = torch.autograd.grad(total, inputs, allow_unused=True, materialize_grads=True) \
                if total.requires_grad else tuple(torch.zeros_like(t) for t in inputs)
            out += list(second) + ([None] if b is None else [])
    return [t.detach() if t is not None else None for t in out]


def oracle(x, b, dim, act, alpha, gain, clamp, order: int = 2, seed: int = 1):
    """``run`` of the reference in the oracle dtype of x (medkern.tolerances), on the same values."""
    dtype = tolerances.oracle_dtype(x.dtype)
    xr = x.detach().to(dtype)
    br = b.detach().to(dtype) if b is not None else None
    return run("reference", xr, br, dim, act, alpha, gain, clamp, order, seed, noise_dtype=x.dtype)


# What ``run`` returns, in order: (name, kind in the tolerance table).
OUTPUTS = (("y", "forward"), ("grad x", "grad"), ("grad b", "grad"), ("grad2 x", "grad2"), ("grad2 b", "grad2"))


def options_for(act: str, variant: int):
    """(alpha, gain, clamp): defaults (variant 0), or a non-default alpha where the act takes one,
    with gain and clamp (variant 1)."""
    if variant == 0:
        return None, None, None
    alpha = 0.3 if activations.get(act).takes_alpha else None
    return alpha, 1.7, 1.5


_JUDGE = Judge("bias_act", OUTPUTS)
worst, assert_matches = _JUDGE.worst, _JUDGE.assert_matches
