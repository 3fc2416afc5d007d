"""How medkern.ops.rnn_sequence is exercised and judged, shared by the tests and ``medkern check``.

Inputs are scaled so that gates stay off saturation (weights ~ 1/sqrt(P)) and Elman ReLU states
stay bounded; masks are drawn from a seeded generator so kernel and oracle see the same ones.
The oracle is medkern/reference/rnn.py in float64/float32 (float32 on upcast inputs for half).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from .. import tolerances
from ..ops import rnn as rnn_ops
from ..reference import rnn as reference

FAMILY = "rnn"


@dataclass(frozen=True)
class Case:
    cell: str
    steps: int = 5
    batch: int = 3
    hidden: int = 6
    proj: Optional[int] = None
    lengths: Optional[tuple[int, ...]] = None
    reverse: bool = False
    bias: bool = True
    norm_h: bool = False
    norm_c: bool = False
    zoneout: bool = False  # 0/1 keep masks for h (and c for lstm)
    mask: bool = False  # recurrent dropout of the candidate

    @property
    def id(self) -> str:
        parts = [self.cell, f"T{self.steps}B{self.batch}H{self.hidden}"]
        for flag in ("reverse", "norm_h", "norm_c", "zoneout", "mask"):
            if getattr(self, flag):
                parts.append(flag)
        if self.proj:
            parts.append(f"P{self.proj}")
        if self.lengths is not None:
            parts.append("len" + "-".join(map(str, self.lengths)))
        if not self.bias:
            parts.append("nobias")
        return "_".join(parts)


# Spread over every option; the parity tests run all of them, medkern check a few.
CASES = [
    Case("lstm"),
    Case("lstm", lengths=(5, 2, 0)),
    Case("lstm", lengths=(3, 5, 1), reverse=True),
    Case("lstm", proj=4, reverse=True),
    Case("lstm", norm_h=True, norm_c=True, bias=False),
    Case("lstm", zoneout=True, mask=True, lengths=(4, 1, 5)),
    Case("lstm", norm_h=True, norm_c=True, proj=3, zoneout=True, mask=True, lengths=(2, 5, 4), reverse=True, bias=False),
    Case("gru"),
    Case("gru", lengths=(1, 5, 3), reverse=True),
    Case("gru", norm_h=True, bias=False, zoneout=True, mask=True),
    Case("gru", bias=False, lengths=(0, 4, 5)),
    Case("rnn_tanh"),
    Case("rnn_tanh", norm_h=True, bias=False, reverse=True, lengths=(5, 3, 3)),
    Case("rnn_relu", zoneout=True),
    Case("rnn_relu", lengths=(2, 5, 1), bias=False),
    Case("lstm", steps=9, batch=5, hidden=37),  # rows past one vector width, tails
]


def make_inputs(case: Case, dtype: torch.dtype, device="cpu", seed: int = 0) -> dict:
    """rnn_sequence's arguments for ``case`` (tensors requiring grad where differentiable)."""
    gen = torch.Generator().manual_seed(seed)
    T, B, H = case.steps, case.batch, case.hidden
    G = reference.GATES[case.cell] * H
    P = case.proj or H
    scale = 1.0 / math.sqrt(P)

    def randn(*shape, s=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * s).to(dtype=dtype, device=device)

    def keep_mask(*shape, p=0.5):
        return (torch.rand(*shape, generator=gen) < p).to(dtype=dtype, device=device)

    x = dict(
        xproj=randn(T, B, G),
        weight_hh=randn(G, P, s=scale),
        bias_hh=randn(G, s=0.5) if case.bias and not case.norm_h else None,
        h0=randn(B, P, s=0.5),
        c0=randn(B, H, s=0.5) if case.cell == "lstm" else None,
        weight_hr=randn(P, H, s=1.0 / math.sqrt(H)) if case.proj else None,
        norm_h=(1 + randn(G, s=0.2), randn(G, s=0.2)) if case.norm_h else None,
        norm_c=(1 + randn(H, s=0.2), randn(H, s=0.2)) if case.norm_c else None,
    )
    for value in list(x.values()):
        for t in value if isinstance(value, tuple) else (value,):
            if t is not None:
                t.requires_grad_()
    x["zoneout_h"] = keep_mask(T, B, P) if case.zoneout else None
    x["zoneout_c"] = keep_mask(T, B, H) if case.zoneout and case.cell == "lstm" else None
    x["candidate_mask"] = keep_mask(T, B, H, p=0.7) / 0.7 if case.mask else None
    return x


def leaves(inputs: dict) -> list[torch.Tensor]:
    """The differentiable tensors of ``inputs``, in a fixed order."""
    out = []
    for key in ("xproj", "weight_hh", "bias_hh", "h0", "c0", "weight_hr", "norm_h", "norm_c"):
        value = inputs[key]
        for t in value if isinstance(value, tuple) else (value,):
            if t is not None:
                out.append(t)
    return out


def run(case: Case, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(states, cells) from medkern.ops.rnn_sequence under the active backend."""
    lengths = None if case.lengths is None else torch.tensor(case.lengths)
    return rnn_ops.rnn_sequence(cell=case.cell, lengths=lengths, reverse=case.reverse, **inputs)


def upcast(inputs: dict, dtype: torch.dtype) -> dict:
    """``inputs`` converted to ``dtype``: new leaves for the differentiable ones."""

    def conv(t):
        if t is None:
            return None
        out = t.detach().to(dtype)
        return out.requires_grad_() if t.requires_grad else out

    return {k: (tuple(conv(t) for t in v) if isinstance(v, tuple) else conv(v)) for k, v in inputs.items()}


def outputs_and_grads(case: Case, inputs: dict, seed: int = 1):
    """(states, cells, grads of every leaf) for a fixed random weighting of states and cells."""
    states, cells = run(case, inputs)
    gen = torch.Generator().manual_seed(seed)
    w_states = torch.randn(states.shape, generator=gen, dtype=torch.float64).to(states)
    loss = (states * w_states).sum(dtype=torch.float64)
    if cells.numel():
        w_cells = torch.randn(cells.shape, generator=gen, dtype=torch.float64).to(cells)
        loss = loss + (cells * w_cells).sum(dtype=torch.float64)
    grads = torch.autograd.grad(loss, leaves(inputs), allow_unused=True, materialize_grads=True)
    return states.detach(), cells.detach(), [g.detach() for g in grads]


def oracle(case: Case, inputs: dict, dtype: torch.dtype):
    """outputs_and_grads of the reference in the oracle dtype, on the same (upcast) inputs."""
    from .. import backend

    with backend.use_backend("reference"):
        return outputs_and_grads(case, upcast(inputs, tolerances.oracle_dtype(dtype)))


def _pairs(actual, expected):
    """(output name, tolerance kind, actual, expected) for each of outputs_and_grads' results."""
    (s, c, g), (s_ref, c_ref, g_ref) = actual, expected
    yield "states", "forward", s, s_ref
    yield "cells", "forward", c, c_ref
    for i, (a, e) in enumerate(zip(g, g_ref)):
        yield f"gradient {i}", "grad", a, e


def assert_matches(actual, expected, dtype: torch.dtype, what: str = "") -> None:
    """Compares outputs_and_grads results within the ("rnn", ...) tolerances."""
    for name, kind, a, e in _pairs(actual, expected):
        tolerances.assert_close(a, e, FAMILY, kind, dtype, msg=f"{what} {name}")


def worst(actual, expected, dtype: torch.dtype) -> list:
    """[(output name, largest error / allowed)] as assert_matches judges them, for ``medkern check``."""
    return [(name, tolerances.within(a.cpu(), e, FAMILY, kind, dtype)[0]) for name, kind, a, e in _pairs(actual, expected)]
