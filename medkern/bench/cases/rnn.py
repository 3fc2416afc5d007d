"""RNN cases: a training step's forward+backward of a whole sequence, torch's modules vs medkern's.

The issue's setting: float32, batch 32, 100 steps, input 128, hidden 256. LSTM and GRU run
against ``torch.nn.LSTM``/``GRU`` with the same weights (``from_torch``); ``LayerNormLSTM``
runs against its reference, the plain per-step Python loop (the module under medkern's
reference backend: ``F.linear``/``F.layer_norm`` and the cell written in torch ops), whose
``torch.compile`` is the other baseline.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ... import backend
from ...nn import GRU, LSTM, LayerNormLSTM
from ..case import Case, speedup_target

STEPS, BATCH, INPUT, HIDDEN = 100, 32, 128, 256
QUICK = (6, 4, 16, 32)  # steps, batch, input, hidden for --quick
LONG_SEQUENCE_TOLERANCE = ("rnn_long", "forward")  # outputs against eager's, through 100 steps


def _sizes(quick: bool) -> tuple[int, int, int, int]:
    return QUICK if quick else (STEPS, BATCH, INPUT, HIDDEN)


def torch_module_case(name: str, description: str, make: Callable[[int, int], nn.Module], targets=()) -> Case:
    """torch's module (eager and compiled) against medkern's drop-in built from it."""
    modules: dict[str, nn.Module] = {}

    def setup(device: torch.device, dtype: torch.dtype, quick: bool) -> tuple[torch.Tensor, ...]:
        steps, batch, inputs, hidden = _sizes(quick)
        module = make(inputs, hidden).to(device, dtype)
        modules["torch"] = module
        modules["medkern"] = fused = (LSTM if isinstance(module, nn.LSTM) else GRU).from_torch(module)
        for name, parameter in module.named_parameters():  # share them: the gradients land on the same leaves
            setattr(fused, name, parameter)
        x = torch.randn(steps, batch, inputs, device=device, dtype=dtype, requires_grad=True)
        return (x, *module.parameters())

    return Case(
        name=f"rnn/{name}",
        family="rnn_sequence",
        description=description,
        setup=setup,
        reference=lambda x, *params: modules["torch"](x)[0],
        fused=lambda x, *params: modules["medkern"](x)[0],
        targets=targets,
        tolerance=LONG_SEQUENCE_TOLERANCE,
    )


def layer_norm_lstm_case() -> Case:
    modules: dict[str, nn.Module] = {}

    def setup(device: torch.device, dtype: torch.dtype, quick: bool) -> tuple[torch.Tensor, ...]:
        steps, batch, inputs, hidden = _sizes(quick)
        modules["medkern"] = module = LayerNormLSTM(inputs, hidden).to(device, dtype)
        x = torch.randn(steps, batch, inputs, device=device, dtype=dtype, requires_grad=True)
        return (x, *module.parameters())

    def python_loop(x, *params):
        with backend.use_backend("reference"):
            return modules["medkern"](x)[0]

    return Case(
        name="rnn/layernorm_lstm",
        family="rnn_sequence",
        description="LayerNormLSTM(128, 256) vs its reference per-step Python loop",
        setup=setup,
        reference=python_loop,
        fused=lambda x, *params: modules["medkern"](x)[0],
        targets=(speedup_target("fwd_bwd", "eager", 3.0), speedup_target("fwd_bwd", "compile", 1.5)),
        tolerance=LONG_SEQUENCE_TOLERANCE,
    )


def transposed_product_case() -> Case:
    """medkern::transposed_product at the weight gradient of LSTM(128, 256)'s recurrence."""
    from ...ops import projection  # noqa: F401  (registers the op's fake kernel and autograd)

    def setup(device: torch.device, dtype: torch.dtype, quick: bool) -> tuple[torch.Tensor, ...]:
        steps, batch, _, hidden = _sizes(quick)
        a = torch.randn(steps * batch, 4 * hidden, device=device, dtype=dtype, requires_grad=True)
        b = torch.randn(steps * batch, hidden, device=device, dtype=dtype, requires_grad=True)
        return a, b

    return Case(
        name="rnn/transposed_product",
        family="rnn_sequence",
        description="a.T @ b, a (3200, 1024) and b (3200, 256): weight_hh's gradient of LSTM(128, 256), T=100, B=32",
        setup=setup,
        reference=lambda a, b: a.t() @ b,
        fused=lambda a, b: torch.ops.medkern.transposed_product(a, b),
        tolerance=("rnn", "grad"),
    )


CASES = (
    torch_module_case("lstm", "LSTM(128, 256), T=100, B=32, training step", lambda i, h: nn.LSTM(i, h),
                      targets=(speedup_target("fwd_bwd", "eager", 1.0),)),
    torch_module_case("gru", "GRU(128, 256), T=100, B=32, training step", lambda i, h: nn.GRU(i, h),
                      targets=(speedup_target("fwd_bwd", "eager", 1.0),)),
    torch_module_case("lstm_2layer_bidirectional", "LSTM(128, 256, num_layers=2, bidirectional=True), training step",
                      lambda i, h: nn.LSTM(i, h, num_layers=2, bidirectional=True)),
    layer_norm_lstm_case(),
    transposed_product_case(),
)
