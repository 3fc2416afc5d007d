"""pixel_norm under test: shapes and layouts, a run of forward and gradients, and the oracle."""

from __future__ import annotations

import torch

from .. import ops, tolerances
from .. import backend as backend_module
from .bias_act import Layout
from .judging import Judge, seeded_noise

LAYOUTS = [
    Layout("nchw", (2, 5, 7, 9), 1),
    Layout("channels_last", (2, 6, 5, 3), 1, "channels_last"),
    Layout("channels_last_3d", (2, 4, 3, 5, 2), 1, "channels_last_3d"),
    Layout("transposed", (3, 4, 5), 1, "transposed"),
    Layout("sliced", (3, 4, 6), 2, "sliced"),
    Layout("rank1", (11,), 0),
    Layout("linear_2d_odd", (7, 13), 1),
    Layout("last_dim", (3, 2, 30), -1),
    Layout("long_inner", (2, 3, 300), 1),  # more positions per outer index than a CPU run (256)
    Layout("one_channel", (4, 1, 5), 1),
]


def make_inputs(layout: Layout, dtype, device, scale: float = 2.0) -> torch.Tensor:
    """x of the layout's shape with values representable in dtype, laid out as the layout says."""
    x = torch.randn(layout.shape, dtype=torch.float64) * scale
    return layout.tensor(x.to(dtype).to(device))


def run(backend: str, x, dim, eps, order: int = 2, seed: int = 1, noise_dtype=None):
    """(y, gx, ggx): pixel_norm under ``backend``, its gradient for a random upstream g, and the
    gradient of <gx, h> w.r.t. x for a random h. Inputs are detached copies; the randomness
    depends on ``seed`` only, its values representable in ``noise_dtype`` (default: x's dtype)."""
    noise = seeded_noise(seed, noise_dtype)

    x = x.detach().clone().requires_grad_()
    with backend_module.use_backend(backend):
        y = ops.pixel_norm(x, dim, eps)
        (gx,) = torch.autograd.grad(y, x, noise(y), create_graph=order >= 2)
        out = [y, gx]
        if order >= 2:
            (ggx,) = torch.autograd.grad((gx * noise(gx)).sum(), x)
            out.append(ggx)
    return [t.detach() for t in out]


def oracle(x, dim, eps, order: int = 2, seed: int = 1):
    """``run`` of the reference in the oracle dtype of x (medkern.tolerances), on the same values."""
    xr = x.detach().to(tolerances.oracle_dtype(x.dtype))
    return run("reference", xr, dim, eps, order, seed, noise_dtype=x.dtype)


# What ``run`` returns, in order: (name, kind in the tolerance table).
OUTPUTS = (("y", "forward"), ("grad x", "grad"), ("grad2 x", "grad2"))


_JUDGE = Judge("pixel_norm", OUTPUTS)
worst, assert_matches = _JUDGE.worst, _JUDGE.assert_matches
