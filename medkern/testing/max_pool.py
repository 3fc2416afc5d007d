"""max_pool under test: shapes, windows and layouts, a run of forward and gradients, and the oracle."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import ops, tolerances
from .. import backend as backend_module
from ..ops.max_pool import check_args, kernel_op
from ..reference.max_pool import max_pool_with_argmax
from .bias_act import Layout
from .judging import Judge, seeded_noise


@dataclass(frozen=True)
class Case:
    """x's layout (shape (N, C, *spatial), memory order) and the pool's arguments, one entry per
    spatial dim; ``ties`` draws x from a few values, so windows hold equal maxima."""

    layout: Layout
    kernel_size: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    ceil_mode: bool = False
    ties: bool = False

    @property
    def id(self) -> str:
        return f"{self.layout.name}-k{'x'.join(map(str, self.kernel_size))}"

    @property
    def args(self) -> tuple:
        return self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode


CASES = [
    Case(Layout("nchw", (2, 3, 9, 11), 1), (3, 3), (2, 2), (1, 1), (1, 1)),  # ResNet's stem pool
    Case(Layout("channels_last", (2, 5, 8, 7), 1, "channels_last"), (3, 2), (2, 1), (1, 0), (2, 1), True),
    Case(Layout("conv1d", (3, 4, 17), 1), (3,), (2,), (1,), (2,), True),
    Case(Layout("channels_last_3d", (2, 3, 5, 6, 7), 1, "channels_last_3d"), (2, 3, 2), (2, 2, 1), (1, 1, 0),
         (1, 1, 2)),
    Case(Layout("overlapping", (2, 4, 6, 5), 1), (3, 3), (1, 1), (1, 1), (1, 1)),  # an input in up to 9 windows
    Case(Layout("ties", (2, 3, 7, 7), 1), (3, 3), (2, 2), (1, 1), (1, 1), ties=True),
    Case(Layout("global", (3, 2, 4, 5), 1), (4, 5), (4, 5), (0, 0), (1, 1)),
    Case(Layout("transposed", (3, 4, 6, 5), 1, "transposed"), (2, 2), (2, 2), (0, 0), (1, 1), True),
    Case(Layout("sliced", (2, 3, 5, 8), 1, "sliced"), (2, 3), (1, 2), (1, 1), (1, 1)),
    Case(Layout("empty_batch", (0, 3, 5, 5), 1), (2, 2), (2, 2), (0, 0), (1, 1)),
]


def make_inputs(case: Case, dtype, device, scale: float = 2.0) -> torch.Tensor:
    x = torch.randn(case.layout.shape, dtype=torch.float64) * scale
    if case.ties:
        x = x.round().clamp(-2, 2)
    return case.layout.tensor(x.to(dtype).to(device))


def run(backend: str, case: Case, x, order: int = 2, seed: int = 1, noise_dtype=None):
    """(y, gx, ggrad): max_pool under ``backend``, its gradient for a random upstream g, and the
    gradient of <gx, h> w.r.t. g for a random h (the gradient is linear in g and locally constant
    in x). Inputs are detached copies; ``argmax`` gives the window positions."""
    noise = seeded_noise(seed, noise_dtype)

    x = x.detach().clone().requires_grad_()
    with backend_module.use_backend(backend):
        y = ops.max_pool(x, *case.args)
        g = noise(y).requires_grad_()
        (gx,) = torch.autograd.grad(y, x, g, create_graph=order >= 2)
        out = [y, gx]
        if order >= 2:
            (ggrad,) = torch.autograd.grad((gx * noise(gx)).sum(), g)
            out.append(ggrad)
    return [t.detach() for t in out]


def oracle(case: Case, x, order: int = 2, seed: int = 1):
    xr = x.detach().to(tolerances.oracle_dtype(x.dtype))
    return run("reference", case, xr, order, seed, noise_dtype=x.dtype)


def argmax(backend: str, case: Case, x) -> torch.Tensor:
    """The window positions the kernel op of ``backend`` returns."""
    return kernel_op(backend)(x, *check_args(x, *case.args), case.ceil_mode)[1]


def oracle_argmax(case: Case, x) -> torch.Tensor:
    return max_pool_with_argmax(x.detach().cpu().to(tolerances.oracle_dtype(x.dtype)), *case.args)[1]


OUTPUTS = (("y", "forward"), ("grad x", "grad"), ("grad2 upstream", "grad2"))


_JUDGE = Judge("max_pool", OUTPUTS)
worst, assert_matches = _JUDGE.worst, _JUDGE.assert_matches
