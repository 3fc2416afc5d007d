"""Layer-normalized recurrent layers with zoneout and recurrent dropout: LayerNormLSTM, LayerNormGRU.

They take and return what torch.nn.LSTM / GRU do (padded input, ``batch_first``, unbatched 2-D
input, PackedSequence in and out, initial states given or zeros, ``num_layers``, ``dropout``
between layers, ``bidirectional``), through the same code as medkern.nn.LSTM / GRU
(medkern/nn/rnn.py); the formulas of one step are in each class's docstring.

Layer norm (Ba et al., 2016) of a vector v of n elements, with weight gamma and bias beta:
``LN(v) = (v - mean(v)) / sqrt(var(v) + eps) * gamma + beta``, mean and (biased) variance over
all n elements: for the gate pre-activations, over all gates jointly (n = 4H or 3H).

Random masks, drawn in forward with torch's generator on the input's device, in the op-math
dtype (float64 for float64 input, float32 otherwise), each of shape (T, B, H) (T the padded
length, B the batch), indexed by step (step s of the backward direction reads time len - 1 - s)
and by sequence in the caller's batch order (a PackedSequence's original order): for each
layer, for each direction (forward, then backward), in this order:

- training, zoneout p > 0:  ``d_h = torch.bernoulli(torch.full((T, B, H), p))``, then for the LSTM
  ``d_c`` likewise (1 keeps the previous value: Krueger et al., 2017);
- training, recurrent_dropout q > 0: ``m = torch.bernoulli(torch.full((T, B, H), 1 - q)) / (1 - q)``,
  dropping the candidate (LSTM g, GRU n): Semeniuta et al., 2016, "without memory loss";
- then, after a layer's directions and before the next layer, ``F.dropout`` of its output (``dropout``).

In eval, d_h = d_c = p everywhere (zoneout's expectation) and m = 1.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ..ops.rnn import DEFAULT_EPS
from ..reference.rnn import GATES, opmath_dtype
from .rnn import _RecurrentBase


def _check_probability(owner: str, name: str, value, top_open: bool = False) -> float:
    top = "1)" if top_open else "1]"
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1
            or (top_open and value == 1)):
        raise ValueError(f"{owner}: {name} must be a probability in [0, {top}, got {value!r}")
    return float(value)


def _check_size(owner: str, name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")
    return value


class _LayerNormRecurrent(_RecurrentBase, nn.Module):
    def __init__(self, cell, input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                 zoneout, recurrent_dropout, eps, device, dtype):
        super().__init__()
        owner = f"medkern.nn.{type(self).__name__}"
        self._cell = cell
        self.input_size = _check_size(owner, "input_size", input_size)
        self.hidden_size = _check_size(owner, "hidden_size", hidden_size)
        self.num_layers = _check_size(owner, "num_layers", num_layers)
        for name, flag in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
            if not isinstance(flag, bool):
                raise TypeError(f"{owner}: {name} must be a bool, got {type(flag).__name__}")
        self.bias, self.batch_first, self.bidirectional = bias, batch_first, bidirectional
        self.dropout = _check_probability(owner, "dropout", dropout)
        self.zoneout = _check_probability(owner, "zoneout", zoneout)
        self.recurrent_dropout = _check_probability(owner, "recurrent_dropout", recurrent_dropout, top_open=True)
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < math.inf:
            raise ValueError(f"{owner}: eps must be a finite number > 0, got {eps!r}")
        self.eps = float(eps)
        factory = dict(device=device, dtype=dtype)
        gates = GATES[cell] * hidden_size
        norms = [("norm_x", gates), ("norm_h", gates)] + ([("norm_c", hidden_size)] if cell == "lstm" else [])
        for layer in range(num_layers):
            for direction in range(2 if bidirectional else 1):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                inputs = input_size if layer == 0 else hidden_size * (2 if bidirectional else 1)
                self.register_parameter("weight_ih" + suffix, nn.Parameter(torch.empty(gates, inputs, **factory)))
                self.register_parameter("weight_hh" + suffix, nn.Parameter(torch.empty(gates, hidden_size, **factory)))
                for norm, size in norms:
                    self.register_parameter(f"{norm}_weight{suffix}", nn.Parameter(torch.empty(size, **factory)))
                    self.register_parameter(f"{norm}_bias{suffix}",
                                            nn.Parameter(torch.empty(size, **factory)) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """weight_ih, weight_hh ~ U(-1/sqrt(H), 1/sqrt(H)) as torch's RNNs; layer-norm weights 1, biases 0."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for name, parameter in self.named_parameters():
                if name.startswith("weight_"):
                    parameter.uniform_(-bound, bound)
                elif "_weight_" in name:
                    parameter.fill_(1.0)
                else:
                    parameter.zero_()

    def flatten_parameters(self) -> None:
        """Nothing to do (there for code written for torch's RNN modules)."""

    def _layer_args(self, layer: int, direction: int) -> dict:
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        args = dict(weight_ih=getattr(self, "weight_ih" + suffix), bias_ih=None,
                    weight_hh=getattr(self, "weight_hh" + suffix), bias_hh=None, eps=self.eps)
        for norm in ("norm_x", "norm_h", "norm_c") if self._cell == "lstm" else ("norm_x", "norm_h"):
            weight, bias = getattr(self, f"{norm}_weight{suffix}"), getattr(self, f"{norm}_bias{suffix}")
            args[norm] = (weight, weight.new_zeros(weight.shape) if bias is None else bias)
        return args

    def _masks(self, layer: int, direction: int, steps: int, batch: int, like: torch.Tensor) -> dict:
        shape, factory = (steps, batch, self.hidden_size), dict(dtype=opmath_dtype(like.dtype), device=like.device)
        masks = {}
        if self.zoneout > 0:
            names = ("zoneout_h", "zoneout_c") if self._cell == "lstm" else ("zoneout_h",)
            for name in names:
                filled = torch.full(shape, self.zoneout, **factory)
                masks[name] = torch.bernoulli(filled) if self.training else filled
        if self.recurrent_dropout > 0 and self.training:
            keep = 1.0 - self.recurrent_dropout
            masks["candidate_mask"] = torch.bernoulli(torch.full(shape, keep, **factory)) / keep
        return masks

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        defaults = dict(num_layers=1, bias=True, batch_first=False, dropout=0.0, bidirectional=False, zoneout=0.0,
                        recurrent_dropout=0.0, eps=DEFAULT_EPS)
        for name, default in defaults.items():
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s


class LayerNormLSTM(_LayerNormRecurrent):
    r"""A layer-normalized LSTM with zoneout and recurrent dropout; inputs and outputs as torch.nn.LSTM's.

    One step of one layer and direction, for input x_t (the layer's input at time t), previous
    state h, c (all of size H but x_t), with gate order i, f, g, o as torch's::

        a  = LN_x(W_ih x_t) + LN_h(W_hh h)          (4H; each LN over all 4H columns)
        i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o);   g = tanh(a_g)
        c~ = f * c + i * (m * g)                    m: recurrent dropout mask (1 in eval)
        h~ = o * tanh(LN_c(c~))                     (LN_c over the H elements)
        c' = d_c * c + (1 - d_c) * c~               d_c, d_h: zoneout masks (0 without zoneout)
        h' = d_h * h + (1 - d_h) * h~

    LN_* as in this module's docstring (medkern/nn/layer_norm_rnn.py), each with its own weight
    and bias (``norm_x_weight_l0``, ``norm_x_bias_l0``, ``norm_h_*``, ``norm_c_*``; ``_reverse``
    for the backward direction). There is no separate gate bias: the LN biases play that role
    (LN_h's is torch's bias_hh; the forget-gate bias starts at 0, not 1). With ``bias=False`` the
    LN biases are absent (zero). The output at time t is h'; ``h_n``, ``c_n`` are the last states.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        device, dtype: as torch.nn.LSTM's (no proj_size).
        zoneout: the probability p that each element of h and of c keeps its previous value at
            each step (training); in eval, d_h = d_c = p (the expectation).
        recurrent_dropout: the probability q of dropping each element of the candidate g
            (training; the kept ones scaled by 1 / (1 - q)); in [0, 1).
        eps: the layer norms' epsilon.

    Parameters: ``weight_ih_l{k}`` (4H, in), ``weight_hh_l{k}`` (4H, H) ~ U(-1/sqrt(H), 1/sqrt(H)),
    the LN weights (ones) and biases (zeros).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, zoneout: float = 0.0,
                 recurrent_dropout: float = 0.0, eps: float = DEFAULT_EPS, device=None, dtype=None):
        super().__init__("lstm", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         zoneout, recurrent_dropout, eps, device, dtype)


class LayerNormGRU(_LayerNormRecurrent):
    r"""A layer-normalized GRU with zoneout and recurrent dropout; inputs and outputs as torch.nn.GRU's.

    One step of one layer and direction, for input x_t and previous state h (size H), with gate
    order r, z, n as torch's::

        a = LN_x(W_ih x_t)                          (3H; LN over all 3H columns)
        b = LN_h(W_hh h)                            (3H; LN over all 3H columns)
        r = sigmoid(a_r + b_r);   z = sigmoid(a_z + b_z)
        n = m * tanh(a_n + r * b_n)                 m: recurrent dropout mask (1 in eval)
        h~ = (1 - z) * n + z * h
        h' = d_h * h + (1 - d_h) * h~               d_h: zoneout mask (0 without zoneout)

    LN_x, LN_h as in this module's docstring, with weights ``norm_x_weight_l{k}``,
    ``norm_h_weight_l{k}`` and biases ``norm_x_bias_l{k}``, ``norm_h_bias_l{k}`` (absent, zero,
    with ``bias=False``); LN_h's bias is torch's bias_hh (inside r * b_n, as torch's GRU).
    Arguments as LayerNormLSTM's (zoneout: of h only; recurrent_dropout: of n).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, zoneout: float = 0.0,
                 recurrent_dropout: float = 0.0, eps: float = DEFAULT_EPS, device=None, dtype=None):
        super().__init__("gru", input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         zoneout, recurrent_dropout, eps, device, dtype)
