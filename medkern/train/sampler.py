"""A sampler that draws every class equally often, for training on imbalanced data."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import WeightedRandomSampler

from .._args import check_positive_int


def _labels_tensor(labels) -> torch.Tensor:
    op = "medkern.train.ClassBalancedSampler"
    try:
        labels = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{op}: labels must be a 1-D sequence or tensor of integer class labels ({error})") from None
    if labels.dim() != 1 or labels.numel() == 0:
        raise ValueError(f"{op}: labels must be a non-empty 1-D sequence of class labels (one per sample), "
                         f"got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{op}: labels must be integer class labels, got {labels.dtype}")
    return labels


class ClassBalancedSampler(WeightedRandomSampler):
    """Draws dataset indices with probability 1 / (size of the sample's class), so each class present
    is drawn equally often in expectation, whatever its size.

    ``labels`` holds one integer class label per sample (any values: only equality counts);
    ``num_samples`` indices are drawn per epoch (default: the dataset's length), with replacement by
    default. A ``torch.Generator`` makes the draws repeatable; without one the global RNG is used.
    """

    def __init__(self, labels: Sequence[int] | torch.Tensor, num_samples: int | None = None,
                 replacement: bool = True, generator: torch.Generator | None = None):
        labels = _labels_tensor(labels)
        if num_samples is None:
            num_samples = labels.numel()
        check_positive_int("medkern.train.ClassBalancedSampler", "num_samples", num_samples)
        if not replacement and num_samples > labels.numel():
            raise ValueError(f"medkern.train.ClassBalancedSampler: without replacement num_samples must be at most "
                             f"the number of labels ({labels.numel()}), got {num_samples}")
        _, class_of_sample, class_sizes = torch.unique(labels, return_inverse=True, return_counts=True)
        super().__init__(1.0 / class_sizes[class_of_sample].double(), num_samples, replacement, generator)
