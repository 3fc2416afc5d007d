"""medkern.train.figures: each figure is a readable PNG showing what it says it shows."""

import pytest
import torch

from medkern.train import figures

image_module = pytest.importorskip("matplotlib.image")


def read(path):
    return torch.from_numpy(image_module.imread(str(path)))  # (H, W, 4) floats in [0, 1]


def test_roc_curve_png(tmp_path):
    target = torch.tensor([0, 0, 1, 1, 0, 1])
    path = figures.save_roc_curve(torch.tensor([0.1, 0.4, 0.35, 0.8, 0.2, 0.9]), target, tmp_path / "roc.png")
    pixels = read(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert (pixels[..., :3].std() > 0.05).item()  # not a blank canvas


def test_image_grid_tiles_every_image(tmp_path):
    images = -torch.ones(5, 1, 8, 8)  # black in the default value range (-1, 1)
    images[2] = 1.0  # one white tile among four black ones
    gray = read(figures.save_image_grid(images, tmp_path / "grid.png", columns=5))[..., :3].mean(-1)
    row = gray[(gray < 0.1).sum(1).argmax()] < 0.1  # the line through the tiles with most black
    starts = (row[1:] & ~row[:-1]).sum().item() + int(row[0])
    assert starts == 4  # four black tiles, the white one between the second and third
    with pytest.raises(ValueError, match="save_image_grid: images must be"):
        figures.save_image_grid(torch.zeros(2, 2, 8, 8), tmp_path / "bad.png")


def test_segmentation_overlay_marks_the_prediction_red(tmp_path):
    image = torch.rand(32, 32)
    target = torch.zeros(32, 32, dtype=torch.long)
    target[8:16, 8:16] = 1
    prediction = torch.zeros_like(target)
    prediction[10:20, 10:20] = 1
    pixels = read(figures.save_segmentation_overlay(image, target, prediction, tmp_path / "overlay.png"))
    red = (pixels[..., 0] > 0.6) & (pixels[..., 1] < 0.5) & (pixels[..., 2] < 0.5)
    green = (pixels[..., 1] > 0.6) & (pixels[..., 0] < 0.5)
    assert red.sum() > 20 and green.sum() > 5
    with pytest.raises(ValueError, match="must be 2D slices"):
        figures.save_segmentation_overlay(image[None], target, prediction, tmp_path / "bad.png")
