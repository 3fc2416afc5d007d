"""medkern.models.ImageClassifier: shapes, the plain-torch twin (same keys, weights and training), errors."""

import pytest
import torch
import torch.nn.functional as F

from medkern.models import ImageClassifier
from medkern.nn import ConvNormAct
from medkern.testing.models import assert_twins_interchangeable, assert_twins_train_alike, twins

SMALL = dict(in_channels=2, num_classes=3, widths=(4, 8, 8))


def _images(spatial_dims: int, size: int = 8, batch: int = 4, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, SMALL["in_channels"], *([size] * spatial_dims), dtype=dtype)


def _loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
def test_twins_have_the_same_state_dict_and_load_each_other(spatial_dims, norm):
    fused, plain = twins(ImageClassifier, torch.float32, spatial_dims=spatial_dims, norm=norm, **SMALL)
    assert any(isinstance(m, ConvNormAct) for m in fused.modules())
    assert_twins_interchangeable(fused, plain)


@pytest.mark.parametrize("spatial_dims,size", [(2, 8), (2, 11), (3, 6)])
def test_output_shapes(spatial_dims, size):
    model = ImageClassifier(spatial_dims=spatial_dims, **SMALL)
    assert model(_images(spatial_dims, size)).shape == (4, 3)
    assert model.eval()(_images(spatial_dims, size, batch=1)).shape == (1, 3)
    assert ImageClassifier(1, 5, widths=(4,))(torch.randn(2, 1, 5, 5)).shape == (2, 5)


# relu and lrelu train in float64 only: see KINKS in medkern/testing/models.py
@pytest.mark.parametrize("spatial_dims,norm,act,dropout,dtype", [
    (2, "batch", "relu", 0.0, torch.float64),
    (3, "instance", "lrelu", 0.0, torch.float64),
    (2, "group", "silu", 0.3, torch.float32),
    (2, "group", "silu", 0.3, torch.float64),
    (3, "batch", "elu", 0.0, torch.float32),
    (2, "instance", "gelu", 0.0, torch.float32),
])
def test_training_matches_the_plain_torch_twin(spatial_dims, norm, act, dropout, dtype):
    fused, plain = twins(ImageClassifier, dtype, spatial_dims=spatial_dims, norm=norm, act=act, dropout=dropout,
                         **SMALL)
    batches = [(_images(spatial_dims, dtype=dtype), torch.randint(0, 3, (4,))) for _ in range(3)]
    assert_twins_train_alike(fused, plain, batches, _loss, (_images(spatial_dims, dtype=dtype),), dtype)


@pytest.mark.parametrize("kwargs,message", [
    (dict(in_channels=0, num_classes=3), r"ImageClassifier: in_channels must be an int >= 1, got 0"),
    (dict(in_channels=1, num_classes=2.0), r"ImageClassifier: num_classes must be an int >= 1"),
    (dict(in_channels=1, num_classes=2, spatial_dims=1), r"ImageClassifier: spatial_dims must be one of \(2, 3\)"),
    (dict(in_channels=1, num_classes=2, widths=()), r"ImageClassifier: widths must be a tuple of at least 1 ints"),
    (dict(in_channels=1, num_classes=2, widths=(8, 0)), r"ImageClassifier: widths must be a tuple"),
    (dict(in_channels=1, num_classes=2, norm="layer"), r"ImageClassifier: norm must be one of \('batch', 'instance'"),
    (dict(in_channels=1, num_classes=2, act="swishy"), r"ImageClassifier: unknown activation act='swishy'"),
    (dict(in_channels=1, num_classes=2, act="relu", alpha=0.1), r"ImageClassifier: act='relu' takes no alpha"),
    (dict(in_channels=1, num_classes=2, dropout=1.0), r"ImageClassifier: dropout must be a number in \[0, 1\)"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageClassifier(**kwargs)


def test_bad_input_is_a_clear_error():
    model = ImageClassifier(spatial_dims=3, **SMALL)
    with pytest.raises(ValueError, match=r"ImageClassifier: x must be \(N, 2, size, size, size\), got \(4, 2, 8, 8\)"):
        model(_images(2))
    with pytest.raises(ValueError, match=r"x must be \(N, 2, size, size, size\), got \(1, 3, 4, 4, 4\)"):
        model(torch.randn(1, 3, 4, 4, 4))
