"""Data for medical deep learning: readers for MedMNIST, NIfTI and DICOM files, and synthetic datasets
that run offline.

The NIfTI and DICOM readers import nibabel and pydicom only when called, so this package imports
without them (``pip install medkern[data]`` installs both).
"""

from .dicom import read_dicom, read_dicom_series
from .medmnist import MedMNIST
from .nifti import NiftiDataset, read_nifti
from .synthetic import SyntheticECG, SyntheticLesions

__all__ = [
    # readers
    "MedMNIST", "read_nifti", "NiftiDataset", "read_dicom", "read_dicom_series",
    # synthetic datasets
    "SyntheticLesions", "SyntheticECG",
]
