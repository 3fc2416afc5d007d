"""A Trainer run of each reference model on medkern layers matches the same run of its plain-torch
twin (same seed, CPU), epoch by epoch: losses, validation metrics, and every state_dict entry
within the ("reference_model", "train") tolerances.

float64 for the default (relu / lrelu) models; float32 with smooth activations, where a
pre-activation within rounding of a kink cannot flip a gradient (see medkern/testing/models.py).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medkern import tolerances, train
from medkern.data import SyntheticECG, SyntheticLesions
from medkern.models import ImageClassifier, SequenceClassifier, UNet
from medkern.testing.models import FAMILY, twins


def as_tensors(dataset, dtype) -> TensorDataset:
    x, y = zip(*(dataset[i] for i in range(len(dataset))))
    return TensorDataset(torch.stack(x).to(dtype), torch.stack(y))


def with_act(act) -> dict:
    """The activation to build with: the model's default (relu / lrelu) for None."""
    return {} if act is None else {"act": act, "alpha": None}


def classifier_case(dtype, act):
    data = as_tensors(SyntheticLesions(24, size=16, seed=1), dtype)
    return dict(cls=ImageClassifier, kwargs=dict(in_channels=1, num_classes=2, widths=(4, 8), dropout=0.2, **with_act(act)),
                data=data, loss=nn.CrossEntropyLoss(), metrics={"acc": train.accuracy})


def unet_case(dtype, act):
    data = as_tensors(SyntheticLesions(8, size=16, spatial_dims=3, seed=2, with_masks=True), dtype)
    return dict(cls=UNet, kwargs=dict(in_channels=1, out_channels=2, spatial_dims=3, widths=(4, 8, 8),
                                      deep_supervision=True, **with_act(act)),
                data=data, loss=train.DeepSupervisionLoss(train.DiceCELoss()),
                metrics={"dice": lambda p, t: train.dice(p, t, include_background=False)})


def sequence_case(dtype, act):  # LSTM gates are smooth: no activation to choose
    data = as_tensors(SyntheticECG(24, length=64, sampling_rate=100, seed=3), dtype)
    return dict(cls=SequenceClassifier, kwargs=dict(num_classes=4, input_size=1, hidden_size=8, bidirectional=True),
                data=data, loss=nn.CrossEntropyLoss(), metrics={"f1": lambda p, t: train.f1(p, t, average="macro")})


CASES = {"classifier": classifier_case, "unet": unet_case, "sequence": sequence_case}
SETTINGS = [(torch.float64, None), (torch.float32, "silu")]


@pytest.mark.parametrize("dtype,act", SETTINGS, ids=["float64", "float32-smooth"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_trainer_run_of_the_medkern_model_matches_its_plain_torch_twin(name, dtype, act):
    case = CASES[name](dtype, act)
    runs = []
    for model in twins(case["cls"], dtype, seed=0, **case["kwargs"]):
        trainer = train.Trainer(model, lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), case["loss"],
                                metrics=case["metrics"], seed=5, progress=False)
        loader = DataLoader(case["data"], batch_size=4, shuffle=True)
        history = trainer.fit(loader, DataLoader(case["data"], batch_size=8), epochs=2)
        runs.append((history, trainer.model.state_dict()))
    (fused_history, fused_state), (plain_history, plain_state) = runs
    assert [row.keys() for row in fused_history] == [row.keys() for row in plain_history]
    for fused_row, plain_row in zip(fused_history, plain_history):
        for key, value in fused_row.items():
            tolerances.assert_close(torch.tensor(value, dtype=torch.float64), torch.tensor(plain_row[key], dtype=torch.float64),
                                    *FAMILY, dtype, msg=f"epoch {fused_row['epoch']} {key}")
    for key, value in fused_state.items():
        if value.is_floating_point():
            tolerances.assert_close(value, plain_state[key], *FAMILY, dtype, msg=key)
        else:
            assert torch.equal(value, plain_state[key]), key
