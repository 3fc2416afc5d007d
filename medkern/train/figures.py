"""Pictures a clinician or a reviewer looks at: an ROC curve, a grid of generated images, and a
segmentation overlay. Drawn with matplotlib (imported when a figure is made, off-screen)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .metrics import auroc, roc_curve


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("medkern.train.figures needs matplotlib (pip install matplotlib)") from error
    matplotlib.use("Agg")  # no screen here or on a server
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    fig.clf()
    return path


def save_roc_curve(scores: torch.Tensor, target: torch.Tensor, path, title: str = "ROC") -> Path:
    """The binary ROC curve of ``scores`` against 0/1 ``target``, its AUROC in the legend."""
    plt = _pyplot()
    fpr, tpr, _ = roc_curve(scores, target)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr.numpy(), tpr.numpy(), label=f"AUROC {auroc(scores, target).item():.3f}")
    ax.plot([0, 1], [0, 1], linestyle=":", color="gray")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    path = _save(fig, path)
    plt.close(fig)
    return path


def save_image_grid(images: torch.Tensor, path, columns: int = 8, value_range=(-1.0, 1.0)) -> Path:
    """(N, C, H, W) images (1 or 3 channels) tiled in a grid, values mapped from ``value_range``."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError("medkern.train.figures.save_image_grid: images must be (N, 1 or 3, H, W), "
                         f"got {tuple(images.shape)}")
    plt = _pyplot()
    low, high = value_range
    images = ((images.detach().float().cpu() - low) / (high - low)).clamp(0, 1)
    n, c, h, w = images.shape
    columns = min(columns, n)
    rows = -(-n // columns)
    grid = torch.ones(c, rows * (h + 2), columns * (w + 2))
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[:, r * (h + 2) + 1:r * (h + 2) + 1 + h, col * (w + 2) + 1:col * (w + 2) + 1 + w] = image
    fig, ax = plt.subplots(figsize=(columns * 1.2, rows * 1.2))
    ax.imshow(grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    path = _save(fig, path)
    plt.close(fig)
    return path


def save_segmentation_overlay(image: torch.Tensor, target: torch.Tensor, prediction: torch.Tensor, path) -> Path:
    """A 2D slice (H, W) with the target's outline in green and the prediction filled in red, side
    by side with the plain image. For a volume, pass the slice to show (e.g. the one with most target)."""
    if not (image.dim() == target.dim() == prediction.dim() == 2):
        raise ValueError("medkern.train.figures.save_segmentation_overlay: image, target and prediction must be "
                         f"2D slices, got {tuple(image.shape)}, {tuple(target.shape)}, {tuple(prediction.shape)}")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    for ax in axes:
        ax.imshow(image.float().cpu().numpy(), cmap="gray")
        ax.axis("off")
    overlay = torch.zeros(*prediction.shape, 4)
    overlay[prediction.bool().cpu()] = torch.tensor([1.0, 0.0, 0.0, 0.45])
    axes[1].imshow(overlay.numpy())
    if target.any():
        axes[1].contour(target.float().cpu().numpy(), levels=[0.5], colors="lime", linewidths=1)
    axes[0].set_title("image")
    axes[1].set_title("target (green) / prediction (red)")
    path = _save(fig, path)
    plt.close(fig)
    return path
