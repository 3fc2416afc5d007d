"""medkern.models.UNet: shapes, deep supervision, the plain-torch twin (same keys, weights and training), errors."""

import pytest
import torch
import torch.nn.functional as F

from medkern.models import UNet
from medkern.nn import ConvNormAct
from medkern.testing.models import assert_twins_interchangeable, assert_twins_train_alike, twins

SMALL = dict(in_channels=2, out_channels=3, widths=(4, 8, 12))


def _images(spatial_dims: int, size: int = 8, batch: int = 2, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, SMALL["in_channels"], *([size] * spatial_dims), dtype=dtype)


def _labels(spatial_dims: int, size: int = 8, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, SMALL["out_channels"], (batch, *([size] * spatial_dims)))


def _loss(model, batch):
    """Cross-entropy at every output, against the labels subsampled to its resolution."""
    x, y = batch
    outputs = model(x)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    loss = 0
    for logits in outputs:
        step = y.shape[-1] // logits.shape[-1]
        loss = loss + F.cross_entropy(logits, y[(..., *[slice(None, None, step)] * (y.dim() - 1))])
    return loss


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("deep_supervision", [False, True])
def test_twins_have_the_same_state_dict_and_load_each_other(spatial_dims, deep_supervision):
    fused, plain = twins(UNet, torch.float32, spatial_dims=spatial_dims, deep_supervision=deep_supervision, **SMALL)
    assert any(isinstance(m, ConvNormAct) for m in fused.modules())
    assert_twins_interchangeable(fused, plain)
    assert len(fused.heads) == (2 if deep_supervision else 1)


@pytest.mark.parametrize("spatial_dims,size", [(2, 16), (3, 8)])
def test_output_shapes_with_and_without_deep_supervision(spatial_dims, size):
    x = _images(spatial_dims, size)
    full = (2, 3) + (size,) * spatial_dims
    assert UNet(spatial_dims=spatial_dims, **SMALL)(x).shape == full
    model = UNet(spatial_dims=spatial_dims, deep_supervision=True, **SMALL)
    outputs = model(x)  # training: one output per decoder stage, highest resolution first
    assert [o.shape for o in outputs] == [full, (2, 3) + (size // 2,) * spatial_dims]
    assert model.eval()(x).shape == full
    torch.testing.assert_close(model(x), outputs[0], rtol=0, atol=0)  # the same head, no batch statistics
    five = UNet(1, 1, 2, widths=(2, 2, 2, 2, 2), deep_supervision=True)
    assert [o.shape[-1] for o in five(torch.randn(1, 1, 32, 48))] == [48, 24, 12, 6]


# relu and lrelu (nnU-Net's) train in float64 only: see KINKS in medkern/testing/models.py
@pytest.mark.parametrize("spatial_dims,norm,act,deep_supervision,dtype", [
    (2, "instance", "lrelu", True, torch.float64),
    (3, "instance", "lrelu", False, torch.float64),
    (2, "batch", "relu", False, torch.float64),
    (3, "group", "silu", True, torch.float32),
    (2, "instance", "elu", True, torch.float32),
    (2, "instance", "elu", True, torch.float64),
    (3, "batch", "gelu", False, torch.float32),
])
def test_training_matches_the_plain_torch_twin(spatial_dims, norm, act, deep_supervision, dtype):
    alpha = 0.01 if act == "lrelu" else None
    fused, plain = twins(UNet, dtype, spatial_dims=spatial_dims, norm=norm, act=act, alpha=alpha,
                         deep_supervision=deep_supervision, **SMALL)
    batches = [(_images(spatial_dims, dtype=dtype), _labels(spatial_dims)) for _ in range(3)]
    assert_twins_train_alike(fused, plain, batches, _loss, (_images(spatial_dims, dtype=dtype),), dtype)


@pytest.mark.parametrize("kwargs,message", [
    (dict(in_channels=1, out_channels=0), r"UNet: out_channels must be an int >= 1, got 0"),
    (dict(in_channels=1, out_channels=2, widths=(8,)), r"UNet: widths must be a tuple of at least 2 ints >= 1"),
    (dict(in_channels=1, out_channels=2, spatial_dims=4), r"UNet: spatial_dims must be one of \(2, 3\), got 4"),
    (dict(in_channels=1, out_channels=2, norm=None), r"UNet: norm must be one of \('batch', 'instance', 'group'\)"),
    (dict(in_channels=1, out_channels=2, act="relu"), r"UNet: act='relu' takes no alpha, got alpha=0.01"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNet(**kwargs)


def test_bad_input_is_a_clear_error():
    model = UNet(spatial_dims=2, **SMALL)
    with pytest.raises(ValueError, match=r"UNet: every spatial size must be divisible by 4 \(2 \*\* \(stages - 1\) "
                                         r"for 3 stages\), got \(8, 10\)"):
        model(torch.randn(1, 2, 8, 10))
    with pytest.raises(ValueError, match=r"UNet: x must be \(N, 2, size, size\), got \(1, 1, 8, 8\)"):
        model(torch.randn(1, 1, 8, 8))
