"""modulate_weight under test: shapes and layouts, a run of forward and gradients, and the oracle."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import ops, tolerances
from .. import backend as backend_module
from .judging import Judge, seeded_noise


@dataclass(frozen=True)
class Case:
    """weight (O, I, *k) and styles (N, I), each "dense", "transposed" (dims 0 and 1 swapped in
    memory) or "sliced" (every other element of the last dim: not dense)."""

    name: str
    weight_shape: tuple
    samples: int
    demodulate: bool = True
    eps: float = 1e-8
    weight_layout: str = "dense"
    styles_layout: str = "dense"

    @property
    def id(self) -> str:
        return self.name


CASES = [
    Case("conv3x3", (5, 4, 3, 3), 3),
    Case("conv3x3_plain", (5, 4, 3, 3), 3, demodulate=False),
    Case("linear_rank0", (7, 6), 2),
    Case("conv1d_rank1", (3, 5, 4), 2, eps=0.5),
    Case("conv3d_rank3", (2, 3, 2, 3, 2), 2),
    Case("rank3_plain", (2, 3, 2, 1, 2), 3, demodulate=False),
    Case("odd", (5, 7, 1, 5), 3),
    # one element a row: demodulation makes y = sign(u) and du = g * d * eps / (u^2 + eps), a
    # cancellation that small eps leaves to rounding; a large eps keeps the case well-conditioned
    Case("one_by_one", (1, 1, 1, 1), 1, eps=1.0),
    Case("transposed_weight", (4, 6, 3, 3), 2, weight_layout="transposed"),
    Case("sliced_inputs", (3, 5, 2, 3), 3, weight_layout="sliced", styles_layout="sliced"),
    Case("transposed_styles", (6, 4, 1, 3), 4, demodulate=False, styles_layout="transposed"),
    Case("long_rows", (3, 40, 4, 4), 2),  # rows of 640: several CUDA/Triton blocks, CPU vectors
]


def _laid_out(values: torch.Tensor, layout: str) -> torch.Tensor:
    """``values`` in the given memory layout, the same values."""
    if layout == "transposed":
        return values.transpose(0, 1).contiguous().transpose(0, 1)
    if layout == "sliced":
        wide = torch.zeros(*values.shape[:-1], values.shape[-1] * 2, dtype=values.dtype, device=values.device)
        wide[..., ::2] = values
        return wide[..., ::2]
    return values


def make_inputs(case: Case, dtype, device, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, styles) of the case's shapes and layouts with values representable in dtype."""
    weight = torch.randn(case.weight_shape, dtype=torch.float64) * scale
    styles = torch.randn(case.samples, case.weight_shape[1], dtype=torch.float64) + 1.0  # StyleGAN's bias 1
    return (_laid_out(weight.to(dtype).to(device), case.weight_layout),
            _laid_out(styles.to(dtype).to(device), case.styles_layout))


def run(backend: str, case: Case, weight, styles, order: int = 2, seed: int = 1, noise_dtype=None):
    """(y, gW, gs[, ggW, ggs]): modulate_weight under ``backend``, its gradients for a random
    upstream g, and the gradients of <gW, h1> + <gs, h2> for random h1, h2 (as
    medkern.testing.pixel_norm.run)."""
    noise = seeded_noise(seed, noise_dtype)

    weight = weight.detach().clone().requires_grad_()
    styles = styles.detach().clone().requires_grad_()
    with backend_module.use_backend(backend):
        y = ops.modulate_weight(weight, styles, case.demodulate, case.eps)
        gw, gs = torch.autograd.grad(y, (weight, styles), noise(y), create_graph=order >= 2)
        out = [y, gw, gs]
        if order >= 2:
            out += torch.autograd.grad((gw * noise(gw)).sum() + (gs * noise(gs)).sum(), (weight, styles),
                                       allow_unused=True, materialize_grads=True)
    return [t.detach() for t in out]


def oracle(case: Case, weight, styles, order: int = 2, seed: int = 1):
    """``run`` of the reference in the oracle dtype (medkern.tolerances), on the same values."""
    dtype = tolerances.oracle_dtype(weight.dtype)
    return run("reference", case, weight.detach().to(dtype), styles.detach().to(dtype), order, seed,
               noise_dtype=weight.dtype)


# What ``run`` returns, in order: (name, kind in the tolerance table).
OUTPUTS = (("y", "forward"), ("grad weight", "grad"), ("grad styles", "grad"), ("grad2 weight", "grad2"),
           ("grad2 styles", "grad2"))


_JUDGE = Judge("modulate_weight", OUTPUTS)
worst, assert_matches = _JUDGE.worst, _JUDGE.assert_matches
