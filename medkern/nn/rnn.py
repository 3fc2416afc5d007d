"""Drop-in recurrent layers: medkern.nn.LSTM, GRU and RNN, run by medkern.ops.rnn_layer.

Each subclasses its torch counterpart (torch.nn.LSTM, GRU, RNN), so the constructor, the
parameters, their names (``weight_ih_l0``, ``weight_hh_l0_reverse``, ``weight_hr_l0``, ``bias_*``),
shapes and initialization, ``flatten_parameters``, ``extra_repr`` and the ``state_dict`` layout are
torch's own; only ``forward`` changes. It takes and returns what torch's does: padded input
(``batch_first`` or not), unbatched 2-D input (with 2-D states), a PackedSequence (returned
packed, states in the caller's batch order through ``sorted_indices`` / ``unsorted_indices``),
and initial states given or zeros. Each layer and direction is one ``rnn_layer`` call (gate
orders are torch's, so the weights are used as they are); the backward direction of a
bidirectional layer runs each sequence backwards within its own length; in training,
``dropout`` is ``F.dropout`` on each layer's output but the last, as in torch.

``_RecurrentBase`` holds what the layer-norm variants (medkern/nn/layer_norm_rnn.py) share with
these: input and state handling, the layer and direction loop, packing.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..ops.rnn import rnn_layer

_CELL_OF_MODE = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}


class _RecurrentBase:
    """forward() of a multi-layer, optionally bidirectional recurrent module.

    The module provides ``input_size``, ``hidden_size``, ``num_layers``, ``batch_first``,
    ``dropout``, ``bidirectional``, and:
      _cell: the rnn_layer cell; _output_size(): P, the size of h;
      _layer_args(layer, direction): rnn_layer's weight (and norm, eps) keyword arguments;
      _masks(layer, direction, steps, batch, like): rnn_layer's zoneout / candidate masks.
    """

    _cell: str

    def _owner(self) -> str:
        return f"medkern.nn.{type(self).__name__}"

    def _output_size(self) -> int:
        return self.hidden_size

    def _masks(self, layer: int, direction: int, steps: int, batch: int, like: torch.Tensor) -> dict:
        return {}

    def forward(self, input, hx=None):
        """(output, h_n) or, for LSTMs, (output, (h_n, c_n)), as torch's module returns them."""
        owner = self._owner()
        batch_sizes = sorted_indices = unsorted_indices = lengths = None
        if isinstance(input, PackedSequence):
            data, batch_sizes, sorted_indices, unsorted_indices = input
            self._check_input(data, owner, "input (a PackedSequence) data")
            x, lengths = pad_packed_sequence(PackedSequence(data, batch_sizes))  # (T, B, I) in sorted order
            batched = True
        else:
            if not isinstance(input, torch.Tensor):
                raise TypeError(f"{owner}: input must be a tensor or a PackedSequence, got {type(input).__name__}")
            if input.dim() not in (2, 3):
                raise ValueError(f"{owner}: input must be 3-D (batched) or 2-D (unbatched), got a "
                                 f"{input.dim()}-D tensor of shape {tuple(input.shape)}")
            self._check_input(input, owner, "input")
            batched = input.dim() == 3
            if not batched:  # batch_first does not apply to unbatched input, as in torch
                x = input.unsqueeze(1)
            else:
                x = input.transpose(0, 1) if self.batch_first else input
        h0, c0 = self._initial_states(hx, x, batched, sorted_indices, owner)
        y, h_n, c_n = self._run_layers(x, h0, c0, lengths, sorted_indices)
        if unsorted_indices is not None:
            h_n = h_n.index_select(1, unsorted_indices)
            c_n = None if c_n is None else c_n.index_select(1, unsorted_indices)
        if batch_sizes is not None:
            output = PackedSequence(pack_padded_sequence(y, lengths).data, batch_sizes, sorted_indices,
                                    unsorted_indices)
        elif not batched:
            output, h_n = y.squeeze(1), h_n.squeeze(1)
            c_n = None if c_n is None else c_n.squeeze(1)
        else:
            output = y.transpose(0, 1) if self.batch_first else y
        return output, ((h_n, c_n) if self._cell == "lstm" else h_n)

    def _check_input(self, data: torch.Tensor, owner: str, what: str) -> None:
        weight = self.weight_ih_l0
        if not data.is_floating_point():
            raise TypeError(f"{owner}: {what} must be a floating-point tensor, got {data.dtype}")
        if data.dtype != weight.dtype and not torch.is_autocast_enabled(data.device.type):
            raise ValueError(f"{owner}: {what} has dtype {data.dtype}, the module's weights {weight.dtype}; "
                             f"convert the input (input.to({weight.dtype})) or the module (module.to({data.dtype}))")
        if data.device != weight.device:
            raise ValueError(f"{owner}: {what} is on {data.device}, the module's weights on {weight.device}")
        if data.shape[-1] != self.input_size:
            raise RuntimeError(f"{owner}: {what} must have input_size = {self.input_size} features in its last "
                               f"dimension, got shape {tuple(data.shape)}")

    def _initial_states(self, hx, x: torch.Tensor, batched: bool, sorted_indices, owner: str):
        """(h0 (L*D, B, P), c0 (L*D, B, H) or None) in the order the sequences are run in."""
        stacked = self.num_layers * (2 if self.bidirectional else 1)
        batch = x.shape[1]
        lstm = self._cell == "lstm"
        specs = [("hx[0] (h_0)" if lstm else "hx", self._output_size())]
        if lstm:
            specs.append(("hx[1] (c_0)", self.hidden_size))
        if hx is None:
            states = [x.new_zeros((stacked, batch, size)) for _, size in specs]
            return states[0], (states[1] if lstm else None)
        if lstm:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{owner}: hx must be a (h_0, c_0) pair of tensors or None, got "
                                f"{type(hx).__name__}" + (f" of length {len(hx)}" if isinstance(hx, (tuple, list))
                                                          else ""))
            given = list(hx)
        else:
            given = [hx]
        states = []
        for (name, size), state in zip(specs, given):
            if not isinstance(state, torch.Tensor):
                raise TypeError(f"{owner}: {name} must be a tensor, got {type(state).__name__}")
            kind = "batched 3-D" if batched else "unbatched 2-D"
            if state.dim() != (3 if batched else 2):
                raise RuntimeError(f"{owner}: {name} must be {3 if batched else 2}-D for {kind} input, got a "
                                   f"{state.dim()}-D tensor of shape {tuple(state.shape)}")
            want = (stacked, batch, size) if batched else (stacked, size)
            if tuple(state.shape) != want:
                dims = ("num_layers * num_directions", "batch" if batched else None,
                        "proj_size" if size != self.hidden_size else "hidden_size")
                raise RuntimeError(f"{owner}: {name} must have shape {want} ({', '.join(d for d in dims if d)}), "
                                   f"got {tuple(state.shape)}")
            if state.dtype != x.dtype:
                raise ValueError(f"{owner}: {name} has dtype {state.dtype}, the input {x.dtype}")
            if state.device != x.device:
                raise ValueError(f"{owner}: {name} is on {state.device}, the input on {x.device}")
            if not batched:
                state = state.unsqueeze(1)
            if sorted_indices is not None:  # the caller's batch order -> the packed (sorted) order
                state = state.index_select(1, sorted_indices)
            states.append(state)
        return states[0], (states[1] if lstm else None)

    def _run_layers(self, x: torch.Tensor, h0: torch.Tensor, c0: Optional[torch.Tensor],
                    lengths: Optional[torch.Tensor], sorted_indices: Optional[torch.Tensor]):
        """(y (T, B, D*P), h_n (L*D, B, P), c_n (L*D, B, H) or None) of every layer and direction.

        x, h0, c0, lengths are in the order the sequences run in (a PackedSequence's sorted order);
        masks are drawn in the caller's batch order and taken to it by ``sorted_indices``.
        """
        directions = 2 if self.bidirectional else 1
        steps, batch = x.shape[0], x.shape[1]
        layer_input, h_n, c_n = x, [], []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                k = layer * directions + direction
                masks = self._masks(layer, direction, steps, batch, x)
                if sorted_indices is not None:
                    masks = {name: mask.index_select(1, sorted_indices) for name, mask in masks.items()}
                y, h, c = rnn_layer(layer_input, h0=h0[k], c0=None if c0 is None else c0[k], cell=self._cell,
                                    lengths=lengths, reverse=direction == 1, **self._layer_args(layer, direction),
                                    **masks)
                outputs.append(y)
                h_n.append(h)
                c_n.append(c)
            layer_input = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)
            if self.dropout > 0 and self.training and layer + 1 < self.num_layers:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        cells = torch.stack(c_n).to(x.dtype) if c0 is not None else None
        return layer_input, torch.stack(h_n), cells


def _torch_config(module: nn.RNNBase) -> dict:
    config = dict(input_size=module.input_size, hidden_size=module.hidden_size, num_layers=module.num_layers,
                  bias=module.bias, batch_first=module.batch_first, dropout=module.dropout,
                  bidirectional=module.bidirectional)
    if module.mode == "LSTM":
        config["proj_size"] = module.proj_size
    elif module.mode in ("RNN_TANH", "RNN_RELU"):
        config["nonlinearity"] = "tanh" if module.mode == "RNN_TANH" else "relu"
    return config


def _copy_as(cls, module: nn.RNNBase) -> nn.RNNBase:
    """A ``cls`` with ``module``'s configuration, weights (copied), device, dtype, requires_grad and mode."""
    first = next(module.parameters())
    with warnings.catch_warnings():  # torch's "dropout with one layer" warning was given for `module` already
        warnings.simplefilter("ignore")
        copy = cls(**_torch_config(module), device="meta", dtype=first.dtype)  # no init: the RNG is left alone
    copy = copy.to_empty(device=first.device)
    copy.load_state_dict(module.state_dict(), strict=True)
    for (_, source), (_, target) in zip(module.named_parameters(), copy.named_parameters()):
        target.requires_grad_(source.requires_grad)
    return copy.train(module.training)


class _TorchRecurrent(_RecurrentBase):
    """forward() for subclasses of torch's RNN modules, plus from_torch() and to_torch()."""

    _torch_class: type

    @property
    def _cell(self) -> str:
        return _CELL_OF_MODE[self.mode]

    def _output_size(self) -> int:
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    def _layer_args(self, layer: int, direction: int) -> dict:
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        get = lambda name: getattr(self, name + suffix, None)  # noqa: E731  (bias=False: none)
        return dict(weight_ih=get("weight_ih"), bias_ih=get("bias_ih"), weight_hh=get("weight_hh"),
                    bias_hh=get("bias_hh"), weight_hr=get("weight_hr"))

    @classmethod
    def from_torch(cls, module: nn.Module):
        """A medkern copy of a torch module (same configuration, weights, device, dtype, train/eval mode)."""
        if not isinstance(module, cls._torch_class):
            raise TypeError(f"medkern.nn.{cls.__name__}.from_torch: expected a torch.nn.{cls._torch_class.__name__}, "
                            f"got {type(module).__name__}")
        return _copy_as(cls, module)

    def to_torch(self) -> nn.Module:
        """A copy as the torch module (same configuration, weights, device, dtype, train/eval mode)."""
        return _copy_as(self._torch_class, self)


class LSTM(_TorchRecurrent, nn.LSTM):
    """torch.nn.LSTM (same arguments, parameters, inputs and outputs), run by medkern's fused op."""

    _torch_class = nn.LSTM


class GRU(_TorchRecurrent, nn.GRU):
    """torch.nn.GRU (same arguments, parameters, inputs and outputs), run by medkern's fused op."""

    _torch_class = nn.GRU


class RNN(_TorchRecurrent, nn.RNN):
    """torch.nn.RNN (Elman; same arguments, parameters, inputs and outputs), run by medkern's fused op."""

    _torch_class = nn.RNN
