"""A Dataset over one split of a MedMNIST ``.npz`` file (read from disk; nothing is downloaded)."""

from __future__ import annotations

import zipfile
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ._files import existing_file, unreadable

SPLITS = ("train", "val", "test")
_OP = "medkern.data.MedMNIST"
_RGB = 3  # a 4-D image array whose last axis is 3 holds 2-D colour images, any other holds 3-D volumes


def _images_as_channels_first(images: np.ndarray, path: str, key: str) -> np.ndarray:
    """(N, H, W) -> (N, 1, H, W); (N, H, W, 3) -> (N, 3, H, W); (N, D, H, W) -> (N, 1, D, H, W)."""
    if images.dtype != np.uint8:
        raise ValueError(f"{_OP}: {key} in {path!r} must hold uint8 images, got {images.dtype}")
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4:
        return np.moveaxis(images, 3, 1) if images.shape[3] == _RGB else images[:, None]
    raise ValueError(f"{_OP}: {key} in {path!r} must have shape (N, H, W), (N, H, W, 3) or (N, D, H, W), "
                     f"got {images.shape}")


def _checked_labels(labels: np.ndarray, n_images: int, path: str, key: str) -> np.ndarray:
    """(N,) or (N, 1) class labels -> (N,); (N, L) multi-label 0/1 labels stay (N, L)."""
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{_OP}: {key} in {path!r} must hold integer labels, got {labels.dtype}")
    if labels.ndim not in (1, 2) or labels.shape[0] != n_images:
        raise ValueError(f"{_OP}: {key} in {path!r} must have shape ({n_images},), ({n_images}, 1) or "
                         f"({n_images}, L), one row per image, got {labels.shape}")
    if labels.ndim == 2 and labels.shape[1] == 1:
        return labels[:, 0]
    if labels.ndim == 2 and not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{_OP}: {key} in {path!r} has {labels.shape[1]} labels per image, so must hold "
                         "multi-label 0/1 values, but holds others")
    return labels


class MedMNIST(Dataset):
    """One split ("train", "val" or "test") of a MedMNIST ``.npz`` file.

    Item ``i`` is ``(image, label)``: the image as float32 in [0, 1], channels first ((1, H, W) grey,
    (3, H, W) colour, (1, D, H, W) for the 3-D sets); the label an int64 scalar, or for the
    multi-label sets (labels of shape (N, L), L > 1) a float32 (L,) vector of 0/1 targets.
    ``transform`` and ``target_transform`` are applied to the image and the label.
    """

    def __init__(self, path, split: str = "train", transform: Callable | None = None,
                 target_transform: Callable | None = None):
        if split not in SPLITS:
            raise ValueError(f"{_OP}: split must be one of {SPLITS}, got {split!r}")
        path = existing_file(path, _OP)
        image_key, label_key = f"{split}_images", f"{split}_labels"
        try:
            arrays = np.load(path, allow_pickle=False)
            if not isinstance(arrays, np.lib.npyio.NpzFile):  # a lone .npy array
                raise ValueError(f"it holds one {type(arrays).__name__}, not named arrays")
            with arrays:
                names = sorted(arrays.files)
                images = arrays[image_key] if image_key in names else None
                labels = arrays[label_key] if label_key in names else None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise unreadable(_OP, path, error, "a MedMNIST .npz file") from None
        missing = [key for key, array in ((image_key, images), (label_key, labels)) if array is None]
        if missing:
            raise ValueError(f"{_OP}: {path!r} has no {' or '.join(missing)} for split {split!r} "
                             f"(its arrays: {names})")
        self.images = _images_as_channels_first(images, path, image_key)
        self.labels = _checked_labels(labels, len(self.images), path, label_key)
        self.multi_label = self.labels.ndim == 2
        self.split, self.transform, self.target_transform = split, transform, target_transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = torch.from_numpy(np.ascontiguousarray(self.images[index])).float().div_(255)
        label = torch.from_numpy(self.labels[index].astype(np.float32)) if self.multi_label \
            else torch.tensor(int(self.labels[index]), dtype=torch.int64)
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label
