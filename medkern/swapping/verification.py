"""medkern.verify: run an original and a swapped model with the same weights and inputs, and
compare outputs, parameter gradients and updated buffers within the tolerance table."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map

from .. import tolerances
from .._args import FLOAT_DTYPES

FAMILY = "swapped_model"


@dataclass(frozen=True)
class Comparison:
    max_error: float  # largest absolute difference
    fraction: float  # the error's norm as a fraction of what the tolerance allows (> 1 fails)

    @property
    def ok(self) -> bool:
        return self.fraction <= 1.0


MISMATCH = Comparison(float("inf"), float("inf"))  # shapes, dtypes or integer values differ, or one side lacks it


class VerifyResult(dict):
    """name ("output[0]", "grad:conv.weight", "buffer:bn.running_mean", ...) -> Comparison."""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.values())

    def worst(self) -> tuple[str, Comparison]:
        return max(self.items(), key=lambda item: item[1].fraction)

    def __str__(self) -> str:
        failed = [f"  {name}: max error {c.max_error:.3g} ({c.fraction:.3g}x the tolerance)"
                  for name, c in self.items() if not c.ok]
        if not failed:
            name, c = self.worst() if self else ("-", Comparison(0.0, 0.0))
            return f"medkern.verify: {len(self)} tensors match (worst: {name}, {c.fraction:.3g}x the tolerance)"
        return f"medkern.verify: {len(failed)} of {len(self)} tensors differ beyond the tolerance:\n" + "\n".join(failed)


def _step(model: nn.Module, inputs: tuple, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Outputs, gradients (after backpropagating a seeded random cotangent) of the parameters and
    of the floating-point inputs, and buffers. The inputs are copies: the caller's stay as they are."""
    leaves = []

    def copied(t):
        if not isinstance(t, torch.Tensor):
            return t
        if not t.is_floating_point():
            return t.detach().clone()
        leaves.append(t.detach().to(dtype).clone().requires_grad_())
        return leaves[-1].clone()  # not the leaf itself: an in-place first layer may write to it

    inputs = tree_map(copied, inputs)
    devices = [t.device for t in leaves if t.is_cuda]
    with torch.random.fork_rng(devices=devices[:1]):  # dropout draws the same masks in every run
        torch.manual_seed(seed)
        outputs = [t for t in tree_flatten(model(*inputs))[0] if isinstance(t, torch.Tensor)]
    generator = torch.Generator().manual_seed(seed)
    terms = []
    for t in outputs:
        if t.is_floating_point():
            cotangent = torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t.device, t.dtype)
            if t.requires_grad:
                terms.append((t * cotangent).sum())
    if terms:
        torch.stack(terms).sum().backward()
    values = {f"output[{i}]": t.detach() for i, t in enumerate(outputs)}
    values.update({f"grad:input[{i}]": t.grad for i, t in enumerate(leaves) if t.grad is not None})
    values.update({f"grad:{name}": p.grad for name, p in model.named_parameters() if p.grad is not None})
    values.update({f"buffer:{name}": b for name, b in model.named_buffers()})
    return values


def _compare(actual: torch.Tensor, expected: torch.Tensor, original: torch.Tensor, kind: str,
             dtype: torch.dtype) -> Comparison:
    """actual vs expected, normwise: within the table, widened by the original's own error."""
    if actual.shape != expected.shape or actual.dtype != original.dtype:
        return MISMATCH
    if not expected.is_floating_point():
        return Comparison(0.0, 0.0) if torch.equal(actual, expected) else MISMATCH
    rtol, atol = tolerances.tolerance(FAMILY, kind, dtype)
    a, e, o = actual.double(), expected.double(), original.double()
    difference = torch.linalg.vector_norm(a - e).item()
    if difference == 0:
        return Comparison(0.0, 0.0)
    allowed = (rtol * torch.linalg.vector_norm(e).item() + atol * math.sqrt(e.numel())
               + tolerances.TORCH_ERROR_FACTOR * torch.linalg.vector_norm(o - e).item())
    return Comparison(tolerances.max_error(a, e), difference / allowed)


def verify(original: nn.Module, swapped: nn.Module, *inputs, train: bool = True, seed: int = 0,
           dtype: torch.dtype = torch.float64) -> VerifyResult:
    """``compare``, raising AssertionError naming every tensor that differs beyond the tolerance.

    See ``compare`` for what runs and how it is judged.
    """
    result = compare(original, swapped, *inputs, train=train, seed=seed, dtype=dtype)
    if not result.ok:
        raise AssertionError(str(result))
    return result


def compare(original: nn.Module, swapped: nn.Module, *inputs, train: bool = True, seed: int = 0,
            dtype: torch.dtype = torch.float64) -> VerifyResult:
    """Compares ``swapped`` (e.g. from ``medkern.swap``) with ``original`` on ``inputs``.

    Both run on deep copies (the models passed in are not changed) converted to ``dtype`` (floating
    inputs too), with the original's weights loaded into the swapped copy, in training mode
    (``train=True``) or eval mode, with the same random seed (dropout masks match). A fixed random
    cotangent of every floating-point output is backpropagated. Outputs (with their dtypes),
    gradients of the parameters and of the floating-point inputs, and buffers after the step
    (running statistics) are compared tensor by tensor, normwise:
    ``||swapped - expected|| <= rtol ||expected|| + atol sqrt(numel) + TORCH_ERROR_FACTOR
    ||original - expected||``, (rtol, atol) from ``medkern.tolerances`` (family ``"swapped_model"``).

    The default, float64, is the exact check: ``expected`` is the original's result (the last term
    is 0), the kernels agree with torch to ~1e-12, and rounding cannot move a value across a kink
    (ReLU at 0, a max-pool tie), where one rounding difference changes one element's gradient by a
    finite amount. In float32 or a half type ``expected`` is the original run in float64, and the
    swapped model may err a few times as much as torch itself: a sanity check of the model as it
    will run. Normwise, because of those kinks; the norm still catches any systematic difference.

    Returns a VerifyResult (name -> Comparison); raises ValueError if the two state_dicts do not
    have the same keys and shapes.
    """
    for name, model in (("original", original), ("swapped", swapped)):
        if not isinstance(model, nn.Module):
            raise TypeError(f"medkern.verify: {name} must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(train, bool):
        raise TypeError(f"medkern.verify: train must be a bool, got {type(train).__name__}")
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"medkern.verify: dtype must be one of {FLOAT_DTYPES}, got {dtype!r}")
    reference = copy.deepcopy(original).to(dtype).train(train)
    candidate = copy.deepcopy(swapped).to(dtype).train(train)
    expected_state, actual_state = reference.state_dict(), candidate.state_dict()
    shapes = lambda state: {k: tuple(v.shape) for k, v in state.items()}  # noqa: E731
    if shapes(expected_state) != shapes(actual_state):
        missing = sorted(set(expected_state) - set(actual_state))
        unexpected = sorted(set(actual_state) - set(expected_state))
        raise ValueError(f"medkern.verify: the state_dicts differ (missing {missing[:5]}, unexpected {unexpected[:5]},"
                         f" or shapes)")
    candidate.load_state_dict(expected_state)
    oracle_model = copy.deepcopy(reference).double() if dtype != torch.float64 else None
    original_run = _step(reference, inputs, seed, dtype)
    swapped_run = _step(candidate, inputs, seed, dtype)
    # float32 and half models are judged against the original run in float64: the swapped model
    # passes where it is within the table or within a few times torch's own error, since sums that
    # cancel (a conv bias before instance norm has a zero gradient) are noise in both
    oracle = original_run if oracle_model is None else _step(oracle_model, inputs, seed, torch.float64)
    result = VerifyResult()
    for name in sorted(set(original_run) ^ set(swapped_run)):  # an output or gradient only one model has
        result[name] = MISMATCH
    for name, expected in oracle.items():
        if name not in swapped_run or name not in original_run:
            continue
        kind = "grad" if name.startswith("grad:") else "forward"
        result[name] = _compare(swapped_run[name], expected, original_run[name], kind, dtype)
    return result
