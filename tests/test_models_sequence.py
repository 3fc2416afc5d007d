"""medkern.models.SequenceClassifier: shapes, lengths, the plain-torch twin (same keys, weights, training), errors."""

import pytest
import torch
import torch.nn.functional as F

from medkern import nn as mk_nn
from medkern.models import SequenceClassifier
from medkern.testing.models import assert_twins_interchangeable, assert_twins_train_alike, twins

TOKENS = dict(num_classes=3, vocab_size=11, embedding_dim=5, hidden_size=6)
SIGNALS = dict(num_classes=3, input_size=4, hidden_size=6)
LENGTHS = torch.tensor([7, 3, 5, 1])


def _tokens(batch: int = 4, steps: int = 7) -> torch.Tensor:
    return torch.randint(1, TOKENS["vocab_size"], (batch, steps))


def _signals(batch: int = 4, steps: int = 7, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, steps, SIGNALS["input_size"], dtype=dtype)


def _loss(model, batch):
    x, lengths, y = batch
    return F.cross_entropy(model(x, lengths), y)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("config", [TOKENS, SIGNALS])
def test_twins_have_the_same_state_dict_and_load_each_other(cell, config):
    fused, plain = twins(SequenceClassifier, torch.float32, cell=cell, num_layers=2, bidirectional=True, **config)
    assert isinstance(fused.rnn, (mk_nn.LSTM, mk_nn.GRU))
    assert_twins_interchangeable(fused, plain)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_output_shapes(cell, bidirectional):
    for config, x in ((TOKENS, _tokens()), (SIGNALS, _signals())):
        model = SequenceClassifier(cell=cell, bidirectional=bidirectional, num_layers=2, **config)
        assert model(x).shape == (4, 3)
        assert model(x, LENGTHS).shape == (4, 3)
        assert model(x, LENGTHS.tolist()).shape == (4, 3)


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_lengths_classify_each_sequence_as_if_alone(reference, cell):
    """With lengths, each sequence's logits are those of the sequence cut to its length (the padding
    is never read, in either direction)."""
    model = SequenceClassifier(cell=cell, bidirectional=True, num_layers=2, reference=reference, **SIGNALS).double()
    x = _signals(dtype=torch.float64)
    batched = model(x, LENGTHS)
    for i, length in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(batched[i], model(x[i:i + 1, :length])[0], rtol=1e-12, atol=1e-12)
    x[0, 3:].normal_()  # the full-length sequence changes, the others only in their padding
    x[1:, 5:].normal_()
    changed = model(x, LENGTHS)
    assert not torch.allclose(changed[0], batched[0])
    torch.testing.assert_close(changed[1:], batched[1:], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cell,bidirectional,num_layers,tokens,lengths", [
    ("lstm", False, 1, True, False),
    ("lstm", True, 2, False, True),
    ("gru", True, 1, True, True),
    ("gru", False, 2, False, False),
])
def test_training_matches_the_plain_torch_twin(cell, bidirectional, num_layers, tokens, lengths, dtype):
    """Dropout between recurrent layers is left out: torch's RNN kernels draw their masks inside,
    otherwise than medkern.nn.LSTM's F.dropout, so the twins agree there only in distribution."""
    config = TOKENS if tokens else SIGNALS
    fused, plain = twins(SequenceClassifier, dtype, cell=cell, bidirectional=bidirectional, num_layers=num_layers,
                         dropout=0.25 if num_layers == 1 else 0.0, **config)  # then only the head's

    def sequences():
        return _tokens() if tokens else _signals(dtype=dtype)

    batches = [(sequences(), LENGTHS if lengths else None, torch.randint(0, 3, (4,))) for _ in range(3)]
    assert_twins_train_alike(fused, plain, batches, _loss, (sequences(), LENGTHS if lengths else None), dtype)


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_classes=2), r"SequenceClassifier: give exactly one of input_size .* got input_size=None, "
                          r"vocab_size=None"),
    (dict(num_classes=2, input_size=3, vocab_size=5), r"SequenceClassifier: give exactly one of input_size"),
    (dict(num_classes=0, input_size=3), r"SequenceClassifier: num_classes must be an int >= 1, got 0"),
    (dict(num_classes=2, input_size=-1), r"SequenceClassifier: input_size must be an int >= 1, got -1"),
    (dict(num_classes=2, vocab_size=5, embedding_dim=0), r"SequenceClassifier: embedding_dim must be an int >= 1"),
    (dict(num_classes=2, vocab_size=5, padding_idx=5), r"SequenceClassifier: padding_idx must be None or an int in "
                                                       r"\[0, 5\) \(a token id\), got 5"),
    (dict(num_classes=2, input_size=3, cell="rnn"), r"SequenceClassifier: cell must be one of \('lstm', 'gru'\)"),
    (dict(num_classes=2, input_size=3, num_layers=0), r"SequenceClassifier: num_layers must be an int >= 1"),
    (dict(num_classes=2, input_size=3, dropout=-0.1), r"SequenceClassifier: dropout must be a number in \[0, 1\)"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SequenceClassifier(**kwargs)


def test_bad_inputs_are_clear_errors():
    tokens = SequenceClassifier(**TOKENS)
    with pytest.raises(ValueError, match=r"SequenceClassifier: x must be token ids, an integer tensor \(N, T\), "
                                         r"got torch.float32 of shape \(4, 7, 4\)"):
        tokens(_signals())
    signals = SequenceClassifier(**SIGNALS)
    with pytest.raises(ValueError, match=r"SequenceClassifier: x must be float features \(N, T, 4\), got torch.int64"):
        signals(_tokens())
    with pytest.raises(ValueError, match=r"SequenceClassifier: lengths must lie in \[1, 7\] \(the steps of x\), "
                                         r"got values in \[0, 7\]"):
        signals(_signals(), [7, 0, 3, 3])
    with pytest.raises(ValueError, match=r"SequenceClassifier: lengths must be 4 integers \(one per sequence\)"):
        signals(_signals(), [7, 3])
