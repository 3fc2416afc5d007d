"""A benchmark case: inputs, the contenders that compute the same thing, and targets to meet.

Every case pits the plain-PyTorch reference (``eager``), ``torch.compile`` of that same
reference (``compile``) and the medkern op under each backend that can run on the device
(``medkern[cpu]``, ``medkern[cuda]``, ``medkern[triton]``) against each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .. import backend

EAGER, COMPILE = "eager", "compile"
MEDKERN_BACKENDS = ("cuda", "triton", "cpu")


def medkern_name(backend_name: str) -> str:
    return f"medkern[{backend_name}]"


def is_medkern(contender: str) -> bool:
    return contender.startswith("medkern[")


@dataclass(frozen=True)
class Target:
    """A goal each medkern contender must meet: the value at ``metric`` (a path into the
    contender's results, e.g. ``("fwd_bwd", "speedup_vs_eager")``) within the bounds."""

    label: str
    metric: tuple[str, ...]
    minimum: Optional[float] = None
    maximum: Optional[float] = None

    def value_in(self, contender_results: dict) -> Optional[float]:
        value = contender_results
        for key in self.metric:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def met_by(self, value: Optional[float]) -> bool:
        if value is None:
            return False
        return (self.minimum is None or value >= self.minimum) and (self.maximum is None or value <= self.maximum)


def speedup_target(mode: str, baseline: str, factor: float) -> Target:
    """medkern at least ``factor`` times as fast as ``baseline`` in ``mode`` ("fwd" or "fwd_bwd")."""
    label = f"{'fwd+bwd' if mode == 'fwd_bwd' else mode} >= {factor:g}x {baseline}"
    return Target(label, (mode, f"speedup_vs_{baseline}"), minimum=factor)


def clone_target(factor: float) -> Target:
    """Forward within ``factor`` times the time of copying the input (x.clone())."""
    return Target(f"fwd <= {factor:g}x clone", ("fwd_over_clone",), maximum=factor)


@dataclass(frozen=True)
class Case:
    """One benchmark.

    ``setup(device, dtype, quick)`` returns the positional inputs (seeded by the caller);
    backward runs w.r.t. those that require grad. ``reference`` and ``fused`` take those
    inputs and return one tensor. For a ``bandwidth_bound`` case the first input is the
    tensor the op streams through, and its ``clone()`` is timed as the copy-bandwidth yardstick.
    """

    name: str
    family: str  # the op name medkern.backend knows, e.g. "bias_act"
    description: str
    setup: Callable[[torch.device, torch.dtype, bool], tuple[torch.Tensor, ...]]
    reference: Callable[..., torch.Tensor]
    fused: Callable[..., torch.Tensor]
    bandwidth_bound: bool = False
    targets: tuple[Target, ...] = ()
    # (family, kind) in medkern.tolerances that judges each output against eager's, where the
    # table has the dtype; otherwise torch.testing.assert_close's defaults
    tolerance: Optional[tuple[str, str]] = None
    # why torch.compile cannot run the reference (e.g. a gradient penalty's double backward),
    # reported instead of a compile contender; None: it can
    no_compile: Optional[str] = None
    # heavy cases (whole models): at most this many timed rounds, one warm-up round
    max_rounds: Optional[int] = None
    # the reference's convolutions alone, taking the same inputs (medkern/bench/conv_only.py): the
    # floor of its time that no fusion around the convolutions goes below (model cases)
    conv_only: Optional[Callable[..., torch.Tensor]] = None
    # False: the medkern twin holds its own parameters, laid out otherwise than the reference's (a
    # model swapped with channels_last=True), both sets among the inputs: each contender
    # differentiates its own and leaves the other's unused, and its speed-up includes the layout
    # change's, which the convolution ceiling (python -m medkern.bench.ceiling) does not bound
    shared_parameters: bool = True

    def contenders(self, device: torch.device) -> tuple[dict[str, Callable[..., torch.Tensor]], dict[str, str]]:
        """({name: callable}, {skipped contender: why}). ``compile`` is a fresh torch.compile
        of the reference: it compiles on its first call (per grad mode)."""
        contenders = {EAGER: self.reference}
        skipped = {}
        if self.no_compile is None:
            contenders[COMPILE] = torch.compile(self.reference)
        else:
            skipped[COMPILE] = self.no_compile
        for name in MEDKERN_BACKENDS:
            reason = backend._why_not(name, self.family, device)
            if reason is None and name == "triton" and device.type == "cpu":
                reason = "Triton on CPU runs in the interpreter, far too slow to benchmark"
            if reason is None:
                contenders[medkern_name(name)] = _under_backend(self.fused, name)
            else:
                skipped[medkern_name(name)] = reason
        return contenders, skipped


def share_parameters(source: torch.nn.Module, target: torch.nn.Module, names: Optional[set] = None) -> None:
    """Puts source's Parameter objects into target at the same state_dict paths (only those in
    ``names`` if given), so a case's twin models (torch and medkern) differentiate the same inputs."""
    for name, param in source.named_parameters():
        if names is not None and name not in names:
            continue
        owner, _, attr = name.rpartition(".")
        target.get_submodule(owner)._parameters[attr] = param


def _under_backend(fn: Callable[..., torch.Tensor], name: str) -> Callable[..., torch.Tensor]:
    def run(*inputs: torch.Tensor) -> torch.Tensor:
        with backend.use_backend(name):
            return fn(*inputs)

    return run
