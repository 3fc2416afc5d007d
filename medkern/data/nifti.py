"""NIfTI volumes as tensors (through nibabel, installed with ``pip install nibabel``), and a Dataset of
image / segmentation-label pairs."""

from __future__ import annotations

import zlib
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ._files import existing_file, optional_import, unreadable

# index order (i, j, k) of the file reversed to (k, j, i) = (D, H, W), as a column order of the affine
_REVERSED_SPATIAL = [2, 1, 0, 3]
# an image and its label count as aligned while their affines agree to this many mm
_AFFINE_ATOL_MM = 1e-3


def _spatial_last_to_channels_first(data: np.ndarray, path: str) -> np.ndarray:
    """nibabel's (X, Y[, Z[, C]]) array (or (X, Y, Z, 1, C), a vector per voxel) -> (D, H, W) or (C, D, H, W)."""
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0]
    if data.ndim == 2:  # a single slice
        data = data[:, :, None]
    if data.ndim not in (3, 4):
        raise ValueError(f"medkern.data.read_nifti: {path!r} has shape {data.shape}; expected a 3-D volume, "
                         "a 4-D series of volumes or a 2-D slice")
    return np.ascontiguousarray(data.transpose(tuple(range(data.ndim))[::-1]))


def read_nifti(path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a NIfTI-1 or NIfTI-2 file (``.nii``, ``.nii.gz``, or an ``.hdr``/``.img`` pair).

    Returns ``(volume, affine)``. ``volume`` is float32 with the header's scaling applied, indexed
    ``[d, h, w]`` (``[c, d, h, w]`` for a 4-D file, its 4th axis as channels): the file's voxel
    axes (i, j, k) reversed, which is also its order in memory. ``affine`` is the (4, 4) float64
    voxel-to-world (mm) matrix for that index order: ``affine @ (d, h, w, 1)`` is the voxel's position.
    """
    op = "medkern.data.read_nifti"
    nibabel = optional_import("nibabel", "nibabel", op)
    path = existing_file(path, op)
    try:
        image = nibabel.load(path)
        if not isinstance(image, nibabel.Nifti1Pair):  # Nifti2 derives from it too
            raise ValueError(f"nibabel read it as {type(image).__name__}, not a NIfTI image")
        data = image.get_fdata(dtype=np.float32)
    except (nibabel.filebasedimages.ImageFileError, OSError, EOFError, ValueError, zlib.error) as error:
        raise unreadable(op, path, error, "a NIfTI image") from None
    volume = torch.from_numpy(_spatial_last_to_channels_first(data, path))
    affine = torch.from_numpy(np.array(image.affine, dtype=np.float64)[:, _REVERSED_SPATIAL])
    return volume, affine


def _label_volume(label: torch.Tensor, path: str) -> torch.Tensor:
    """A (D, H, W) or (1, D, H, W) label volume of whole numbers -> int64 (D, H, W)."""
    op = "medkern.data.NiftiDataset"
    if label.dim() == 4 and label.shape[0] == 1:
        label = label[0]
    if label.dim() != 3:
        raise ValueError(f"{op}: label file {path!r} must hold one 3-D volume, got shape {tuple(label.shape)}")
    if not torch.isfinite(label).all() or not torch.equal(label, label.round()):
        raise ValueError(f"{op}: label file {path!r} must hold whole-number class labels, "
                         "but holds fractional or non-finite values")
    return label.long()


class NiftiDataset(Dataset):
    """NIfTI volumes, optionally paired with segmentation labels, read from disk one item at a time.

    Item ``i`` is the image of ``image_paths[i]`` as float32 (C, D, H, W) (a 3-D file gets C = 1;
    axes as in :func:`read_nifti`) or, given ``label_paths``, ``(image, label)`` with the label an
    int64 (D, H, W) volume, checked to have the image's spatial shape and affine. ``transform``
    is called as ``transform(image)``, or ``transform(image, label)`` returning both, for pairs.
    """

    def __init__(self, image_paths: Sequence, label_paths: Sequence | None = None,
                 transform: Callable | None = None):
        op = "medkern.data.NiftiDataset"
        self.image_paths = [existing_file(p, op, "image path") for p in image_paths]
        self.label_paths = None if label_paths is None else [existing_file(p, op, "label path") for p in label_paths]
        if self.label_paths is not None and len(self.label_paths) != len(self.image_paths):
            raise ValueError(f"{op}: label_paths must have one label per image ({len(self.image_paths)}), "
                             f"got {len(self.label_paths)}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int):
        image_path = self.image_paths[index]
        image, image_affine = read_nifti(image_path)
        if image.dim() == 3:
            image = image[None]
        if self.label_paths is None:
            return image if self.transform is None else self.transform(image)
        label_path = self.label_paths[index]
        label, label_affine = read_nifti(label_path)
        label = _label_volume(label, label_path)
        if label.shape != image.shape[1:]:
            raise ValueError(f"medkern.data.NiftiDataset: label {label_path!r} has spatial shape {tuple(label.shape)} "
                             f"but its image {image_path!r} has {tuple(image.shape[1:])}")
        if not torch.allclose(label_affine, image_affine, rtol=0, atol=_AFFINE_ATOL_MM):
            raise ValueError(f"medkern.data.NiftiDataset: label {label_path!r} is not aligned with its image "
                             f"{image_path!r}: their affines differ by more than {_AFFINE_ATOL_MM} mm")
        return (image, label) if self.transform is None else self.transform(image, label)
