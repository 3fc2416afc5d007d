"""minibatch_stddev under test: shapes, groups and layouts, a run of forward and gradients, and the oracle."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import ops, tolerances
from .. import backend as backend_module
from .bias_act import Layout
from .judging import Judge, seeded_noise


@dataclass(frozen=True)
class Case:
    """x's layout (shape (N, C, H, W) and memory order), group_size and num_channels."""

    layout: Layout
    group_size: int = 4
    num_channels: int = 1

    @property
    def id(self) -> str:
        return f"{self.layout.name}-g{self.group_size}-f{self.num_channels}"


CASES = [
    Case(Layout("nchw", (8, 6, 3, 5), 1), 4, 2),
    Case(Layout("channels_last", (4, 4, 3, 3), 1, "channels_last"), 2, 1),
    Case(Layout("group_above_n", (3, 4, 2, 2), 1), 4, 1),  # G = min(4, 3) = 3
    Case(Layout("group_of_one", (5, 3, 2, 1), 1), 1, 3),  # variance 0: s = sqrt(1e-8)
    Case(Layout("transposed", (4, 3, 5, 2), 1, "transposed"), 2, 1),  # dense, neither layout
    Case(Layout("sliced", (6, 3, 7, 4), 1, "sliced"), 2, 3),  # not dense
    Case(Layout("one_pixel", (6, 8, 1, 1), 1), 3, 4),
]


def make_inputs(case: Case, dtype, device, scale: float = 2.0) -> torch.Tensor:
    x = torch.randn(case.layout.shape, dtype=torch.float64) * scale
    return case.layout.tensor(x.to(dtype).to(device))


def run(backend: str, case: Case, x, order: int = 2, seed: int = 1, noise_dtype=None):
    """(y, gx, ggx): minibatch_stddev under ``backend``, its gradient for a random upstream g and
    the gradient of <gx, h> w.r.t. x for a random h (as medkern.testing.pixel_norm.run)."""
    noise = seeded_noise(seed, noise_dtype)

    x = x.detach().clone().requires_grad_()
    with backend_module.use_backend(backend):
        y = ops.minibatch_stddev(x, case.group_size, case.num_channels)
        (gx,) = torch.autograd.grad(y, x, noise(y), create_graph=order >= 2)
        out = [y, gx]
        if order >= 2:
            (ggx,) = torch.autograd.grad((gx * noise(gx)).sum(), x)
            out.append(ggx)
    return [t.detach() for t in out]


def oracle(case: Case, x, order: int = 2, seed: int = 1):
    xr = x.detach().to(tolerances.oracle_dtype(x.dtype))
    return run("reference", case, xr, order, seed, noise_dtype=x.dtype)


OUTPUTS = (("y", "forward"), ("grad x", "grad"), ("grad2 x", "grad2"))


_JUDGE = Judge("minibatch_stddev", OUTPUTS)
worst, assert_matches = _JUDGE.worst, _JUDGE.assert_matches
