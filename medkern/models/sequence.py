"""SequenceClassifier: a recurrent classifier of token sequences or multichannel signals.

Input is either token ids (N, T) embedded by an nn.Embedding (``vocab_size``) or float features
(N, T, input_size), e.g. ECG leads. LSTM or GRU layers (batch_first, optionally bidirectional)
read it; the last layer's final state of each direction (the forward direction after the last
valid step, the backward one after the first step) goes through dropout and a linear layer to the
class logits. ``lengths`` gives each sequence's valid steps: the padding after them is never read
(the layers get a PackedSequence).

``reference=True`` uses torch.nn.LSTM/GRU instead of medkern.nn.LSTM/GRU (same constructor,
parameter names and initialization), so checkpoints load both ways and the two can be compared
step by step.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from .._args import check_choice, check_positive_int, check_probability
from ..nn.rnn import GRU as FusedGRU, LSTM as FusedLSTM

CELLS = ("lstm", "gru")
_RECURRENT = {("lstm", False): FusedLSTM, ("gru", False): FusedGRU, ("lstm", True): nn.LSTM, ("gru", True): nn.GRU}
OP = "medkern.models.SequenceClassifier"


class SequenceClassifier(nn.Module):
    """token ids (N, T) or features (N, T, input_size) [, lengths (N,)] -> logits (N, num_classes)."""

    def __init__(self, num_classes: int, input_size: Optional[int] = None, vocab_size: Optional[int] = None,
                 embedding_dim: int = 64, hidden_size: int = 128, num_layers: int = 1, cell: str = "lstm",
                 bidirectional: bool = False, dropout: float = 0.0, padding_idx: Optional[int] = 0,
                 reference: bool = False):
        """``dropout`` applies between recurrent layers (as torch's) and to the pooled features."""
        super().__init__()
        if (input_size is None) == (vocab_size is None):
            raise ValueError(f"{OP}: give exactly one of input_size (float features (N, T, input_size)) and "
                             f"vocab_size (token ids (N, T)), got input_size={input_size!r}, vocab_size={vocab_size!r}")
        check_positive_int(OP, "num_classes", num_classes)
        check_positive_int(OP, "hidden_size", hidden_size)
        check_positive_int(OP, "num_layers", num_layers)
        check_choice(OP, "cell", cell, CELLS)
        dropout = check_probability(OP, "dropout", dropout)
        self.input_size = input_size
        if vocab_size is None:
            check_positive_int(OP, "input_size", input_size)
            self.embedding = None
            features = input_size
        else:
            check_positive_int(OP, "vocab_size", vocab_size)
            check_positive_int(OP, "embedding_dim", embedding_dim)
            if padding_idx is not None and (isinstance(padding_idx, bool) or not isinstance(padding_idx, int)
                                            or not 0 <= padding_idx < vocab_size):
                raise ValueError(f"{OP}: padding_idx must be None or an int in [0, {vocab_size}) "
                                 f"(a token id), got {padding_idx!r}")
            self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
            features = embedding_dim
        self.directions = 2 if bidirectional else 1
        # torch warns about dropout with one layer: there is nothing between layers to drop
        self.rnn = _RECURRENT[cell, bool(reference)](features, hidden_size, num_layers, batch_first=True,
                                                     dropout=dropout if num_layers > 1 else 0.0,
                                                     bidirectional=bool(bidirectional))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.directions * hidden_size, num_classes)

    def _embedded(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            if x.dim() != 2 or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
                raise ValueError(f"{OP}: x must be token ids, an integer tensor (N, T), got {x.dtype} of shape "
                                 f"{tuple(x.shape)}")
            return self.embedding(x)
        if x.dim() != 3 or x.shape[2] != self.input_size or not x.is_floating_point():
            raise ValueError(f"{OP}: x must be float features (N, T, {self.input_size}), got {x.dtype} of shape "
                             f"{tuple(x.shape)}")
        return x

    @staticmethod
    def _checked_lengths(lengths, batch: int, steps: int) -> torch.Tensor:
        lengths = torch.as_tensor(lengths, device="cpu")  # PackedSequence keeps them on the CPU
        integers = not (lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool)
        if lengths.dim() != 1 or lengths.shape[0] != batch or not integers:
            raise ValueError(f"{OP}: lengths must be {batch} integers (one per sequence), got {lengths.dtype} of "
                             f"shape {tuple(lengths.shape)}")
        if batch and not (1 <= int(lengths.min()) and int(lengths.max()) <= steps):
            raise ValueError(f"{OP}: lengths must lie in [1, {steps}] (the steps of x), got values in "
                             f"[{int(lengths.min())}, {int(lengths.max())}]")
        return lengths.to(torch.int64)

    def forward(self, x: torch.Tensor, lengths: Union[torch.Tensor, Sequence[int], None] = None) -> torch.Tensor:
        """``lengths``: each sequence's valid steps (padding after them is ignored); None: all T."""
        inputs = self._embedded(x)
        if lengths is not None:
            lengths = self._checked_lengths(lengths, x.shape[0], x.shape[1])
            inputs = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
        _, state = self.rnn(inputs)
        h_n = state[0] if isinstance(state, tuple) else state  # LSTMs return (h_n, c_n)
        last = h_n[-self.directions:].transpose(0, 1).reshape(x.shape[0], -1)  # the last layer's directions
        return self.head(self.dropout(last))
