"""Twin models (medkern layers vs ``reference=True``) trained side by side, and how they are judged.

One definition of the parity check of medkern.models: both twins built after the same seed, the
same SGD-with-momentum steps on the same batches, then losses, every state_dict entry (weights,
running statistics) and eval-mode outputs compared with the ("reference_model", "train") tolerances.

KINKS: models with relu or lrelu are compared in float64 only. In float32, a pre-activation within
rounding of 0 can fall on the other side of the kink in one twin, and every gradient through that
element changes by (1 - alpha) times itself: not rounding (seen: in 1 of 8 seeds of a small 3D
UNet, a weight gradient of 8e-2 off by 1.3e-3 at the third step; torch's own float32 block, given
the same input, is off from float64 by the same). Smooth activations (silu, elu, gelu, the LSTM/GRU
gates) have no such jump, so float32 is compared with them.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .. import tolerances

FAMILY = ("reference_model", "train")
LEARNING_RATE = 0.05
MOMENTUM = 0.9


def twins(cls: type, dtype: torch.dtype, seed: int = 0, **kwargs) -> tuple[nn.Module, nn.Module]:
    """(medkern model, reference twin), each built right after ``torch.manual_seed(seed)``."""
    models = []
    for reference in (False, True):
        torch.manual_seed(seed)
        models.append(cls(reference=reference, **kwargs).to(dtype))
    return models[0], models[1]


def uses_medkern_layers(model: nn.Module) -> bool:
    """Whether any module of ``model`` is a medkern.nn layer (a reference twin has none)."""
    return any(type(m).__module__.startswith("medkern.nn.") for m in model.modules())


def assert_twins_interchangeable(fused: nn.Module, plain: nn.Module) -> None:
    """medkern layers in one twin only; the same state_dict keys and (after the same seed) values;
    each twin's checkpoint loads into the other."""
    assert uses_medkern_layers(fused) and not uses_medkern_layers(plain)
    assert list(fused.state_dict()) == list(plain.state_dict())
    for (name, a), b in zip(fused.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name  # the same seed gives the same weights
    fused.load_state_dict(plain.state_dict())
    plain.load_state_dict(fused.state_dict())


def train_side_by_side(models: Sequence[nn.Module], batches: Iterable, loss_fn: Callable) -> list[list[torch.Tensor]]:
    """One SGD-with-momentum step per batch for each model (train mode), ``loss_fn(model, batch)``
    the loss; the losses, one list per step. Dropout draws the same masks in every model."""
    optimizers = [torch.optim.SGD(m.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM) for m in models]
    losses = []
    for step, batch in enumerate(batches):
        step_losses = []
        for model, optimizer in zip(models, optimizers):
            model.train()
            optimizer.zero_grad()
            with torch.random.fork_rng():
                torch.manual_seed(1000 + step)
                loss = loss_fn(model, batch)
            loss.backward()
            optimizer.step()
            step_losses.append(loss.detach())
        losses.append(step_losses)
    return losses


def run_twins(fused: nn.Module, plain: nn.Module, batches: list, loss_fn: Callable, eval_input: tuple) -> list:
    """Train both twins side by side on ``batches``, then run both in eval mode on ``eval_input``:
    (what, medkern's value, the reference's value) for the losses, every state_dict entry and the
    eval output (each tensor of it, for models returning lists)."""
    losses = train_side_by_side((fused, plain), batches, loss_fn)
    with torch.no_grad():
        outputs = [model.eval()(*eval_input) for model in (fused, plain)]
    fused_out, plain_out = ([o] if isinstance(o, torch.Tensor) else list(o) for o in outputs)
    compared = [(f"loss of step {i}", a, b) for i, (a, b) in enumerate(losses)]
    compared += [(name, a, b) for (name, a), b in zip(fused.state_dict().items(), plain.state_dict().values())]
    compared += [(f"eval output {i}", a, b) for i, (a, b) in enumerate(zip(fused_out, plain_out))]
    return compared


def assert_twins_train_alike(fused: nn.Module, plain: nn.Module, batches: list, loss_fn: Callable,
                             eval_input: tuple, dtype: torch.dtype) -> None:
    """run_twins' values must agree within the ("reference_model", "train") tolerances."""
    assert list(fused.state_dict()) == list(plain.state_dict())
    for what, a, b in run_twins(fused, plain, batches, loss_fn, eval_input):
        if a.is_floating_point():
            tolerances.assert_close(a, b, *FAMILY, dtype, msg=what)
        else:  # num_batches_tracked
            assert torch.equal(a, b), what
