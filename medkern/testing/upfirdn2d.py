"""upfirdn2d under test: cases covering the geometry, a run of forward and gradients, and the oracle.

The op is linear in x, so its second-order term is the derivative of the input gradient w.r.t.
the upstream gradient (what an R1 penalty differentiates): ``run`` returns y, the gradient of
<y, g> w.r.t. x, and the gradient of <that, h> w.r.t. g.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import ops, tolerances
from .. import backend as backend_module
from .judging import Judge, seeded_noise


@dataclass(frozen=True)
class Case:
    name: str
    shape: tuple  # x (N, C, H, W)
    filter_shape: tuple  # (k,) separable or (kh, kw)
    up: tuple = (1, 1)
    down: tuple = (1, 1)
    padding: tuple = (0, 0, 0, 0)
    flip_filter: bool = False
    gain: float = 1.0
    layout: str = "contiguous"  # contiguous | channels_last | sliced

    def args(self):
        return self.up, self.down, self.padding, self.flip_filter, self.gain

    def tensor(self, data: torch.Tensor) -> torch.Tensor:
        """``data`` re-laid out as this case says, same values."""
        if self.layout == "channels_last":
            return data.contiguous(memory_format=torch.channels_last)
        if self.layout == "sliced":  # not dense: every other column of a wider tensor
            wide = torch.zeros(*data.shape[:-1], data.shape[-1] * 2, dtype=data.dtype, device=data.device)
            wide[..., ::2] = data
            return wide[..., ::2]
        return data


CASES = [
    Case("upsample2x_4tap", (2, 3, 5, 6), (4,), up=(2, 2), padding=(2, 1, 2, 1), gain=4.0),
    Case("downsample2x_4tap", (2, 3, 8, 7), (4,), down=(2, 2), padding=(1, 1, 1, 1)),
    Case("blur_3x2_flipped", (1, 4, 6, 5), (3, 2), padding=(1, 0, 1, 1), flip_filter=True),
    Case("up3_down2_odd", (2, 2, 5, 7), (5,), up=(3, 3), down=(2, 2), padding=(2, 2, 2, 2), gain=1.7),
    Case("anisotropic_crop", (1, 3, 9, 6), (3, 4), up=(2, 1), down=(1, 3), padding=(-1, 3, 2, -2)),
    Case("identity", (3, 2, 4, 5), (1,)),
    Case("big_padding", (1, 2, 3, 3), (2,), up=(2, 2), padding=(5, 4, 6, 3)),
    Case("channels_last_up", (2, 5, 4, 3), (4,), up=(2, 2), padding=(2, 1, 2, 1), layout="channels_last"),
    Case("channels_last_down", (2, 6, 6, 8), (2, 3), down=(2, 2), layout="channels_last"),
    Case("sliced", (2, 3, 5, 4), (3,), up=(2, 2), padding=(1, 1, 1, 1), layout="sliced"),
]


def make_inputs(case: Case, dtype, device):
    """x (in the case's layout, values representable in dtype) and the float32 filter."""
    x = torch.randn(case.shape, dtype=torch.float64).to(dtype)
    f = torch.randn(case.filter_shape, dtype=torch.float64).to(torch.float32)
    return case.tensor(x.to(device)), f.to(device)


def run(backend: str, x, f, case: Case, seed: int = 1, noise_dtype=None):
    """(y, dx, dg): upfirdn2d under ``backend``; the gradient for a random upstream g; and the
    gradient of <dx, h> w.r.t. g for a random h (second order). Randomness depends on ``seed``
    only, with values representable in ``noise_dtype`` (default x's dtype)."""
    noise = seeded_noise(seed, noise_dtype)

    x = x.detach().clone().requires_grad_()
    with backend_module.use_backend(backend):
        y = ops.upfirdn2d(x, f, *case.args())
        g = noise(y).requires_grad_()
        (dx,) = torch.autograd.grad(y, x, g, create_graph=True)
        (dg,) = torch.autograd.grad(dx, g, noise(dx))
    return [y.detach(), dx.detach(), dg.detach()]


def oracle(x, f, case: Case, seed: int = 1):
    """``run`` of the reference in the oracle dtype of x (medkern.tolerances), on the same values."""
    dtype = tolerances.oracle_dtype(x.dtype)
    return run("reference", x.detach().to(dtype), f, case, seed, noise_dtype=x.dtype)


# What ``run`` returns, in order: (name, kind in the tolerance table).
OUTPUTS = (("y", "forward"), ("grad x", "grad"), ("grad2 g", "grad"))


_JUDGE = Judge("upfirdn2d", OUTPUTS)
worst, assert_matches = _JUDGE.worst, _JUDGE.assert_matches
