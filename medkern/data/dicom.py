"""DICOM images and series as tensors in modality units (through pydicom, installed with
``pip install pydicom``)."""

from __future__ import annotations

import os
import struct

import numpy as np
import torch

from ._files import existing_file, optional_import, unreadable

# image orientations that agree to this (they are unit direction cosines) belong to one volume
_ORIENTATION_ATOL = 1e-4  # direction cosines: unitless
_POSITION_ATOL_MM = 1e-4  # two slices closer than this along the normal are one position
# slice gaps may differ by this fraction of their mean before a series counts as unevenly spaced
_GAP_RTOL = 1e-2
# files in a series directory that are not slices: the media directory and hidden files
_NOT_SLICES = ("DICOMDIR",)


def _parse_errors(pydicom) -> tuple[type[BaseException], ...]:
    """What pydicom raises on a damaged file or pixel data it cannot decode."""
    return (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError,
            AttributeError, NotImplementedError, RuntimeError, struct.error)


def _dataset(pydicom, path: str, op: str):
    try:
        return pydicom.dcmread(path)
    except _parse_errors(pydicom) as error:
        raise unreadable(op, path, error, "a DICOM file") from None


def _floats(ds, keyword: str, count: int, path: str, op: str) -> np.ndarray | None:
    """A numeric DICOM attribute of ``count`` values as float64, or None when the file lacks it."""
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        values = np.array([float(v) for v in (value if count > 1 else [value])], dtype=np.float64)
    except (TypeError, ValueError):
        values = np.empty(0)
    if values.shape != (count,) or not np.isfinite(values).all():
        raise ValueError(f"{op}: {path!r} has a malformed {keyword} {value!r}: expected {count} finite number(s)")
    return values


def _modality_pixels(pydicom, ds, path: str, op: str) -> np.ndarray:
    """One frame's stored values mapped to modality units (e.g. Hounsfield units): value * slope + intercept."""
    if "PixelData" not in ds:
        raise ValueError(f"{op}: {path!r} has no pixel data "
                         f"(it is a DICOM {ds.get('Modality', 'object')} without an image)")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise ValueError(f"{op}: {path!r} is a colour image ({ds.get('PhotometricInterpretation')}); "
                         "only single-channel (greyscale) images carry modality values")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise ValueError(f"{op}: {path!r} is a multi-frame file ({ds.NumberOfFrames} frames); "
                         "expected one image per file")
    if "ModalityLUTSequence" in ds:
        raise ValueError(f"{op}: {path!r} maps its values through a Modality LUT Sequence, which is not supported "
                         "(only RescaleSlope / RescaleIntercept)")
    try:
        stored = ds.pixel_array
    except _parse_errors(pydicom) as error:
        raise unreadable(op, path, error, "a DICOM image (its pixel data)") from None
    if stored.ndim != 2:
        raise ValueError(f"{op}: {path!r} decodes to pixel data of shape {stored.shape}; expected one 2-D image")
    slope = _floats(ds, "RescaleSlope", 1, path, op)
    intercept = _floats(ds, "RescaleIntercept", 1, path, op)
    pixels = stored.astype(np.float64)
    if slope is not None:
        pixels *= slope[0]
    if intercept is not None:
        pixels += intercept[0]
    return pixels.astype(np.float32)


def read_dicom(path) -> torch.Tensor:
    """One single-frame greyscale DICOM file as a float32 (H, W) tensor in modality units
    (RescaleSlope and RescaleIntercept applied)."""
    op = "medkern.data.read_dicom"
    pydicom = optional_import("pydicom", "pydicom", op)
    path = existing_file(path, op)
    return torch.from_numpy(_modality_pixels(pydicom, _dataset(pydicom, path, op), path, op))


def _slice_paths(directory_or_files, op: str) -> list[str]:
    if isinstance(directory_or_files, (str, os.PathLike)) and os.path.isdir(directory_or_files):
        directory = os.fspath(directory_or_files)
        paths = [os.path.join(directory, name) for name in sorted(os.listdir(directory))
                 if not name.startswith(".") and name not in _NOT_SLICES]
        paths = [p for p in paths if os.path.isfile(p)]
        if not paths:
            raise ValueError(f"{op}: directory {directory!r} holds no files")
        return paths
    if isinstance(directory_or_files, (str, os.PathLike)):
        return [existing_file(directory_or_files, op, "directory_or_files")]
    try:
        files = list(directory_or_files)
    except TypeError:
        raise TypeError(f"{op}: directory_or_files must be a directory or a list of DICOM file paths, "
                        f"got {type(directory_or_files).__name__}") from None
    paths = [existing_file(p, op, "slice file") for p in files]
    if not paths:
        raise ValueError(f"{op}: directory_or_files is empty; expected a directory or a list of DICOM files")
    return paths


def _check_same(slices, what: str, values, close=None) -> None:
    """Every slice's entry in ``values`` equals the first's (or is ``close`` to it), else name the odd file."""
    def shown(value):
        return value.tolist() if isinstance(value, np.ndarray) else value

    first_path, first = slices[0][0], values[0]
    for (path, _), value in zip(slices, values):
        if not (close(value, first) if close is not None else value == first):
            raise ValueError(f"medkern.data.read_dicom_series: slices differ in {what}: {path!r} has "
                             f"{shown(value)!r} but {first_path!r} has {shown(first)!r}; expected one volume's slices")


def _pixel_spacing(ds, path: str, op: str) -> np.ndarray:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        spacing = _floats(ds, keyword, 2, path, op)
        if spacing is not None:
            return spacing
    raise ValueError(f"{op}: {path!r} has no PixelSpacing, so the series' voxel size is unknown")


def _slice_gap(ds, path: str, op: str) -> float:
    """The slice spacing a file states, for series whose positions can't give it."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        gap = _floats(ds, keyword, 1, path, op)
        if gap is not None and gap[0] > 0:
            return float(gap[0])
    raise ValueError(f"{op}: {path!r} gives neither ImagePositionPatient on every slice nor SpacingBetweenSlices "
                     "or SliceThickness, so the slice spacing is unknown")


def _order_by_position(slices, op: str) -> tuple[list[int], float] | None:
    """Slice order along the normal of the image plane, and the gap between slices; None without positions."""
    positions = [_floats(ds, "ImagePositionPatient", 3, path, op) for path, ds in slices]
    orientations = [_floats(ds, "ImageOrientationPatient", 6, path, op) for path, ds in slices]
    if any(p is None for p in positions) or any(o is None for o in orientations):
        return None
    _check_same(slices, "ImageOrientationPatient", orientations,
                close=lambda a, b: np.allclose(a, b, rtol=0, atol=_ORIENTATION_ATOL))
    normal = np.cross(orientations[0][:3], orientations[0][3:])
    along_normal = np.array([position @ normal for position in positions])
    order = [int(i) for i in np.argsort(along_normal, kind="stable")]
    if len(order) == 1:
        return order, _slice_gap(slices[0][1], slices[0][0], op)
    gaps = np.diff(along_normal[order])
    if (gaps <= _POSITION_ATOL_MM).any():
        at = order[int(np.argmin(gaps))]
        raise ValueError(f"{op}: two slices share the position of {slices[at][0]!r}; expected one volume's slices")
    if np.abs(gaps - gaps.mean()).max() > _GAP_RTOL * gaps.mean():
        raise ValueError(f"{op}: slices are unevenly spaced (gaps from {gaps.min():.4g} to {gaps.max():.4g} mm: "
                         "a missing slice?); expected one evenly spaced volume")
    return order, float(gaps.mean())


def _order_by_instance_number(slices, op: str) -> tuple[list[int], float]:
    numbers = []
    for path, ds in slices:
        number = _floats(ds, "InstanceNumber", 1, path, op)
        if number is None:
            raise ValueError(f"{op}: {path!r} has neither ImagePositionPatient / ImageOrientationPatient nor "
                             "InstanceNumber, so the slice order is unknown")
        numbers.append(number[0])
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"{op}: slices without positions repeat an InstanceNumber, so their order is unknown")
    return [int(i) for i in np.argsort(numbers, kind="stable")], _slice_gap(slices[0][1], slices[0][0], op)


def read_dicom_series(directory_or_files) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """Read one DICOM series (a directory of slice files, or a list of them) as a volume.

    Returns ``(volume, (dz, dy, dx))``: ``volume`` a float32 (D, H, W) tensor in modality units
    (each slice's RescaleSlope / RescaleIntercept applied), its slices ordered by
    ImagePositionPatient along the image plane's normal (ascending), or by InstanceNumber where
    positions are missing; the spacing in mm between slices, rows and columns. In a directory every
    file except hidden ones and DICOMDIR must be a slice of the same series. Slices that differ in
    series, size, pixel spacing or orientation, or are unevenly spaced, raise a ValueError.
    """
    op = "medkern.data.read_dicom_series"
    pydicom = optional_import("pydicom", "pydicom", op)
    slices = [(path, _dataset(pydicom, path, op)) for path in _slice_paths(directory_or_files, op)]
    _check_same(slices, "SeriesInstanceUID", [ds.get("SeriesInstanceUID") for _, ds in slices])
    _check_same(slices, "shape (Rows, Columns)", [(ds.get("Rows"), ds.get("Columns")) for _, ds in slices])
    spacings = [_pixel_spacing(ds, path, op) for path, ds in slices]
    _check_same(slices, "PixelSpacing", spacings,
                close=lambda a, b: np.allclose(a, b, rtol=_GAP_RTOL, atol=0))
    order, dz = _order_by_position(slices, op) or _order_by_instance_number(slices, op)
    volume = np.stack([_modality_pixels(pydicom, slices[i][1], slices[i][0], op) for i in order])
    dy, dx = (float(s) for s in spacings[0])
    return torch.from_numpy(volume), (dz, dy, dx)
