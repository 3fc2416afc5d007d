"""norm_act under test: cases (kind, shape, layout), kink-free inputs, a run of forward and gradients, the oracle."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from .. import activations, ops, tolerances
from .. import backend as backend_module
from ..reference.norm_act import norm_act as reference_norm_act
from .bias_act import KINK_MARGIN, KINKED, Layout
from .judging import rounded


@dataclass(frozen=True)
class Case:
    """x's shape and memory layout (``make`` as medkern.testing.bias_act.Layout's), and the norm."""

    name: str
    shape: tuple
    kind: str
    num_groups: Optional[int] = None
    make: str = "contiguous"

    @property
    def id(self) -> str:
        return f"{self.name}-{self.kind}" + (f"{self.num_groups}" if self.kind == "group" else "")

    def tensor(self, data: torch.Tensor) -> torch.Tensor:
        return Layout(self.name, self.shape, 1, self.make).tensor(data)

    @property
    def has_running_stats(self) -> bool:
        return self.kind != "group"


@dataclass(frozen=True)
class Options:
    """norm_act's non-tensor arguments."""

    act: str = "relu"
    alpha: Optional[float] = None
    memory_saving: bool = True
    training: bool = True
    momentum: float = 0.1
    eps: float = 1e-5

    @property
    def id(self) -> str:
        alpha = "" if self.alpha is None else f"{self.alpha}"
        return f"{self.act}{alpha}" + ("" if self.memory_saving else "-keep_x") + ("" if self.training else "-eval")

    def with_(self, **changes) -> "Options":
        return replace(self, **changes)

    def resolved_alpha(self) -> float:
        return activations.resolve_alpha(activations.get(self.act), self.alpha)


@dataclass
class Inputs:
    """The op's tensors: x (in the case's layout) and the optional per-channel ones."""

    x: torch.Tensor
    weight: Optional[torch.Tensor] = None
    bias: Optional[torch.Tensor] = None
    running_mean: Optional[torch.Tensor] = None
    running_var: Optional[torch.Tensor] = None

    def to(self, dtype: torch.dtype) -> "Inputs":
        """Every tensor converted to ``dtype`` (a copy; x keeps its layout)."""
        return Inputs(*(t.detach().to(dtype) if t is not None else None for t in self.tensors()))

    def tensors(self) -> tuple:
        return self.x, self.weight, self.bias, self.running_mean, self.running_var


def make_inputs(case: Case, dtype, device, options: Options, weight: bool = True, bias: bool = True,
                param_dtype=None, running: Optional[bool] = None, scale: float = 2.0) -> Inputs:
    """x ~ N(offset_c, scale^2) per channel, weight of either sign with |weight| in [0.5, 1.5], bias in
    N(0, 0.5^2) (so the memory-saving mode keeps y), running statistics near the data's (``running``:
    default when the kind keeps them and not training). Every value is representable in its dtype
    (``param_dtype``, default x's, for the per-channel tensors), and every pre-activation value is at
    least KINK_MARGIN away from an activation's kink in the oracle's precision."""
    param_dtype = param_dtype or dtype
    running = (case.has_running_stats and not options.training) if running is None else running
    c = case.shape[1]
    offset = torch.randn(c, dtype=torch.float64) * 3

    def draw():
        return torch.randn(case.shape, dtype=torch.float64) * scale + offset.reshape(1, c, *[1] * (len(case.shape) - 2))

    x = draw()
    sign = torch.where(torch.rand(c) < 0.5, -1.0, 1.0).double()
    w = (torch.rand(c, dtype=torch.float64) + 0.5) * sign
    b = torch.randn(c, dtype=torch.float64) * 0.5
    rm = (offset + torch.randn(c, dtype=torch.float64) * 0.3) if running else None
    rv = (torch.rand(c, dtype=torch.float64) + 0.5) * scale**2 if running else None
    w, b, rm, rv = (t.to(param_dtype).double() if t is not None else None for t in (w, b, rm, rv))
    if activations.get(options.act).name in KINKED and x.numel() > 0:
        for _ in range(50):
            x = x.to(dtype).double()
            with torch.no_grad():
                z = reference_norm_act(x, case.kind, w, b, *(t.clone() if t is not None else None for t in (rm, rv)),
                                       options.training, 0.0, options.eps, "linear", 0.0, case.num_groups)
            bad = z.abs() < KINK_MARGIN
            if not bad.any():
                break
            # a fresh draw, not a step: in a small statistics group the values move with the
            # statistics (in a group of three no normalized value exceeds sqrt(2), so a kink near
            # -bias / weight = 1.41 is not left by pushing the outlier further out)
            x = torch.where(bad, draw(), x)
        else:
            raise AssertionError("could not move the test inputs off the kinks")

    def place(t, dt):
        return t.to(dt).to(device) if t is not None else None

    return Inputs(case.tensor(x.to(dtype).to(device)), place(w if weight else None, param_dtype),
                  place(b if bias else None, param_dtype), place(rm, param_dtype), place(rv, param_dtype))


# What ``run`` returns, in order: (name, kind in the tolerance table).
OUTPUTS = (("y", "forward"), ("grad x", "grad"), ("grad weight", "grad"), ("grad bias", "grad"),
           ("running mean", "forward"), ("running var", "forward"))


def run(backend: str, case: Case, inputs: Inputs, options: Options, seed: int = 1, noise_dtype=None) -> list:
    """[y, dx, dweight, dbias, running_mean, running_var] of norm_act under ``backend``: forward, the
    gradient for a random upstream gradient (values representable in ``noise_dtype``, default x's;
    depending on ``seed`` only), and the running statistics after the call (copies are updated).
    None where the input is None."""
    gen = torch.Generator().manual_seed(seed)
    x = inputs.x.detach().clone().requires_grad_()
    w, b = (t.detach().clone().requires_grad_() if t is not None else None for t in (inputs.weight, inputs.bias))
    rm, rv = (t.clone() if t is not None else None for t in (inputs.running_mean, inputs.running_var))
    with backend_module.use_backend(backend):
        y = ops.norm_act(x, case.kind, w, b, rm, rv, options.training, options.momentum, options.eps, options.act,
                         options.alpha, case.num_groups, options.memory_saving)
        g = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(noise_dtype or y.dtype).to(y.dtype)
        wrt = [t for t in (x, w, b) if t is not None]
        grads = iter(torch.autograd.grad(y, wrt, g.to(y.device)))
    out = [y] + [next(grads) if t is not None else None for t in (x, w, b)] + [rm, rv]
    return [t.detach() if t is not None else None for t in out]


def oracle(case: Case, inputs: Inputs, options: Options, seed: int = 1) -> list:
    """``run`` of the reference in the oracle dtype of x (medkern.tolerances), on the same values."""
    dtype = tolerances.oracle_dtype(inputs.x.dtype)
    return run("reference", case, inputs.to(dtype), options, seed, noise_dtype=inputs.x.dtype)


def assert_matches(actual: list, expected: list, inputs: Inputs, what: str) -> None:
    """Each output as the oracle's, rounded to the output's dtype, within the tolerance of x's dtype;
    outputs in x's dtype (y, dx) or their parameter's, with x's shape."""
    dtype = inputs.x.dtype
    like = [inputs.x, inputs.x, inputs.weight, inputs.bias, inputs.running_mean, inputs.running_var]
    for got, want, source, (name, kind) in zip(actual, expected, like, OUTPUTS):
        if want is None:
            assert got is None, f"{what}: {name} should be None"
            continue
        assert got.dtype == source.dtype, f"{what}: {name} has dtype {got.dtype}, expected {source.dtype}"
        assert got.shape == source.shape, f"{what}: {name} has shape {tuple(got.shape)}, expected {tuple(source.shape)}"
        tolerances.assert_close(got.cpu(), rounded(want, got.dtype), "norm_act", kind, dtype, msg=f"{what}: {name}")


def worst(actual: list, expected: list, inputs: Inputs) -> list:
    """[(output name, largest error / allowed)] as ``assert_matches`` judges them (a ratio above 1
    fails), for ``medkern check``."""
    out = []
    for got, want, (name, kind) in zip(actual, expected, OUTPUTS):
        if want is not None:
            out.append((name, tolerances.within(got.cpu(), rounded(want, got.dtype), "norm_act", kind,
                                                inputs.x.dtype)[0]))
    return out
