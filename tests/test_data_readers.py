"""medkern.data readers: MedMNIST .npz files, NIfTI through nibabel and DICOM through pydicom, checked
on the test files nibabel and pydicom ship (and copies of them edited here), against the libraries' own
reads; damaged files must raise a ValueError naming the reader and the file, and write nothing."""

import os
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from nibabel.testing import data_path as NIBABEL_DATA
from pydicom.data import get_testdata_file

from medkern.data import MedMNIST, NiftiDataset, read_dicom, read_dicom_series, read_nifti

CT_SMALL = get_testdata_file("CT_small.dcm")
MR_SMALL = get_testdata_file("MR_small.dcm")


def listing(directory):
    return sorted(os.listdir(directory))


# ---------------------------------------------------------------------------------------------- MedMNIST


def _images(rng, shape):
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("image_shape, item_shape", [
    ((6, 28, 28), (1, 28, 28)),            # 2-D grey
    ((6, 28, 28, 3), (3, 28, 28)),         # 2-D colour
    ((6, 28, 28, 28), (1, 28, 28, 28)),    # 3-D
], ids=["2d_grey", "2d_rgb", "3d"])
def test_medmnist_images_channels_first_in_unit_range(tmp_path, image_shape, item_shape):
    rng = np.random.default_rng(0)
    images, labels = _images(rng, image_shape), rng.integers(0, 5, size=(6, 1))
    images[0].flat[0], images[0].flat[1] = 0, 255
    path = tmp_path / "set.npz"
    np.savez(path, train_images=images, train_labels=labels, test_images=images[:2], test_labels=labels[:2])
    train, test = MedMNIST(path), MedMNIST(path, split="test")
    assert (len(train), len(test)) == (6, 2)
    for i in range(6):
        image, label = train[i]
        assert image.shape == item_shape and image.dtype == torch.float32
        expected = np.moveaxis(images[i], -1, 0) if item_shape[0] == 3 else images[i][None]
        torch.testing.assert_close(image, torch.from_numpy(expected.astype(np.float32) / 255), rtol=0, atol=1e-7)
        assert label.dtype == torch.int64 and label.dim() == 0 and int(label) == labels[i, 0]
    assert float(train[0][0].min()) == 0.0 and float(train[0][0].max()) == 1.0


def test_medmnist_multi_label_is_a_float_vector(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=(4, 14))
    np.savez(tmp_path / "chest.npz", val_images=_images(rng, (4, 28, 28)), val_labels=labels)
    data = MedMNIST(tmp_path / "chest.npz", split="val")
    for i in range(4):
        _, label = data[i]
        assert label.shape == (14,) and label.dtype == torch.float32
        assert torch.equal(label, torch.from_numpy(labels[i].astype(np.float32)))


def test_medmnist_transforms_apply(tmp_path):
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "s.npz", train_images=_images(rng, (3, 8, 8)), train_labels=np.array([[0], [1], [2]]))
    plain = MedMNIST(tmp_path / "s.npz")
    data = MedMNIST(tmp_path / "s.npz", transform=lambda x: x * 2, target_transform=lambda y: y + 10)
    image, label = data[2]
    torch.testing.assert_close(image, plain[2][0] * 2)
    assert int(label) == 12


def test_medmnist_errors_name_the_problem(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "s.npz"
    np.savez(path, train_images=_images(rng, (3, 8, 8)), train_labels=np.zeros((3, 1), dtype=np.int64))
    with pytest.raises(ValueError, match=r"medkern\.data\.MedMNIST: .*s\.npz.* no test_images or test_labels"):
        MedMNIST(path, split="test")
    with pytest.raises(ValueError, match="split must be one of"):
        MedMNIST(path, split="training")
    with pytest.raises(FileNotFoundError, match=r"medkern\.data\.MedMNIST: .*absent\.npz"):
        MedMNIST(tmp_path / "absent.npz")
    np.savez(tmp_path / "count.npz", train_images=_images(rng, (3, 8, 8)), train_labels=np.zeros((2, 1), int))
    with pytest.raises(ValueError, match=r"train_labels in .*count\.npz.* one row per image"):
        MedMNIST(tmp_path / "count.npz")
    np.savez(tmp_path / "float.npz", train_images=np.zeros((3, 8, 8), np.float32), train_labels=np.zeros((3, 1), int))
    with pytest.raises(ValueError, match="must hold uint8 images"):
        MedMNIST(tmp_path / "float.npz")
    (tmp_path / "text.npz").write_text("not an archive")
    before = listing(tmp_path)
    with pytest.raises(ValueError, match=r"medkern\.data\.MedMNIST: could not read .*text\.npz"):
        MedMNIST(tmp_path / "text.npz")
    assert listing(tmp_path) == before


# ------------------------------------------------------------------------------------------------- NIfTI


def _index_to_world(affine, index):
    return affine @ np.array([*index, 1.0])


@pytest.mark.parametrize("name", ["example4d.nii.gz", "anatomical.nii", "example_nifti2.nii.gz"])
def test_read_nifti_matches_nibabel(name):
    path = os.path.join(NIBABEL_DATA, name)
    image = nib.load(path)
    expected = image.get_fdata()
    volume, affine = read_nifti(path)
    assert volume.dtype == torch.float32 and affine.dtype == torch.float64 and affine.shape == (4, 4)
    # (i, j, k[, c]) of nibabel's array is [(c,) k, j, i] of ours
    axes = tuple(range(expected.ndim))[::-1]
    assert volume.shape == expected.transpose(axes).shape
    np.testing.assert_allclose(volume.numpy(), expected.transpose(axes), rtol=1e-6)
    for i, j, k in [(0, 0, 0), (3, 5, 7), tuple(s - 1 for s in expected.shape[:3])]:
        np.testing.assert_allclose(_index_to_world(affine.numpy(), (k, j, i)), _index_to_world(image.affine, (i, j, k)),
                                   atol=1e-9)


def test_read_nifti_applies_header_scaling(tmp_path):
    stored = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    image = nib.Nifti1Image(stored, np.diag([1.5, 2.0, 2.5, 1.0]))
    image.header.set_slope_inter(0.5, -3.0)
    nib.save(image, tmp_path / "scaled.nii.gz")
    volume, affine = read_nifti(tmp_path / "scaled.nii.gz")
    np.testing.assert_allclose(volume.numpy(), (stored * 0.5 - 3.0).transpose(2, 1, 0))
    # d runs along the file's k axis (world z, 2.5 mm), h along j (y, 2 mm), w along i (x, 1.5 mm)
    np.testing.assert_allclose(affine.numpy(), [[0, 0, 1.5, 0], [0, 2.0, 0, 0], [2.5, 0, 0, 0], [0, 0, 0, 1]])


def _label_from(path, out, affine=None, shape=None, scale=1.0):
    image = nib.load(path)
    data = image.get_fdata()
    label = (data > np.median(data)).astype(np.int16) * scale
    if shape is not None:
        label = label[tuple(slice(0, s) for s in shape)]
    nib.save(nib.Nifti1Image(label, image.affine if affine is None else affine), out)
    return label


def test_nifti_dataset_pairs_images_and_labels(tmp_path):
    anatomical = os.path.join(NIBABEL_DATA, "anatomical.nii")
    label = _label_from(anatomical, tmp_path / "label.nii.gz")
    data = NiftiDataset([anatomical], [tmp_path / "label.nii.gz"])
    image, mask = data[0]
    assert len(data) == 1
    assert image.shape == (1, 25, 41, 33) and image.dtype == torch.float32
    assert mask.shape == (25, 41, 33) and mask.dtype == torch.int64
    assert torch.equal(mask, torch.from_numpy(label.transpose(2, 1, 0).astype(np.int64)))
    torch.testing.assert_close(image[0], read_nifti(anatomical)[0])
    assert NiftiDataset([anatomical])[0].shape == (1, 25, 41, 33)
    flipped = NiftiDataset([anatomical], [tmp_path / "label.nii.gz"],
                           transform=lambda x, y: (x.flip(-1), y.flip(-1)))[0]
    assert torch.equal(flipped[1], mask.flip(-1)) and torch.equal(flipped[0], image.flip(-1))
    four_d = NiftiDataset([os.path.join(NIBABEL_DATA, "example4d.nii.gz")])[0]
    assert four_d.shape == (2, 24, 96, 128)


def test_nifti_dataset_rejects_mismatched_labels(tmp_path):
    anatomical = os.path.join(NIBABEL_DATA, "anatomical.nii")
    image = nib.load(anatomical)
    _label_from(anatomical, tmp_path / "small.nii.gz", shape=(33, 41, 20))
    _label_from(anatomical, tmp_path / "moved.nii.gz", affine=image.affine + np.diag([0, 0, 0.5, 0]))
    _label_from(anatomical, tmp_path / "fraction.nii.gz", scale=0.5)
    for name, message in [("small", r"label .*small\.nii\.gz.* spatial shape \(20, 41, 33\) .*anatomical\.nii.* "
                                    r"\(25, 41, 33\)"),
                          ("moved", r"label .*moved\.nii\.gz.* not aligned"),
                          ("fraction", r"label file .*fraction\.nii\.gz.* whole-number")]:
        with pytest.raises(ValueError, match=r"medkern\.data\.NiftiDataset: " + message):
            NiftiDataset([anatomical], [tmp_path / f"{name}.nii.gz"])[0]
    with pytest.raises(ValueError, match="one label per image"):
        NiftiDataset([anatomical, anatomical], [tmp_path / "small.nii.gz"])
    with pytest.raises(FileNotFoundError, match=r"NiftiDataset: label path .*absent"):
        NiftiDataset([anatomical], [tmp_path / "absent.nii.gz"])


@pytest.mark.parametrize("name, keep", [("example4d.nii.gz", 0.5), ("anatomical.nii", 0.5), ("anatomical.nii", 0.002)],
                         ids=["gz_half", "nii_half", "nii_header_cut"])
def test_read_nifti_truncated_file_is_a_clear_error(tmp_path, name, keep):
    whole = open(os.path.join(NIBABEL_DATA, name), "rb").read()
    damaged = tmp_path / f"truncated_{name}"
    damaged.write_bytes(whole[: int(len(whole) * keep)])
    before = listing(tmp_path)
    with pytest.raises(ValueError, match=rf"medkern\.data\.read_nifti: could not read .*truncated_{name}"):
        read_nifti(damaged)
    assert listing(tmp_path) == before


def test_read_nifti_other_errors(tmp_path):
    (tmp_path / "notes.nii").write_text("plain text, not a NIfTI header " * 20)
    with pytest.raises(ValueError, match=r"medkern\.data\.read_nifti: could not read .*notes\.nii"):
        read_nifti(tmp_path / "notes.nii")
    with pytest.raises(FileNotFoundError, match=r"medkern\.data\.read_nifti: path .*absent\.nii"):
        read_nifti(tmp_path / "absent.nii")
    with pytest.raises(TypeError, match="must be a str or os.PathLike"):
        read_nifti(3)


def test_readers_import_their_libraries_only_when_called():
    """medkern.data imports without nibabel and pydicom; the readers then say what to install."""
    code = textwrap.dedent("""
        import sys
        sys.modules["nibabel"] = None  # makes `import nibabel` raise ImportError
        sys.modules["pydicom"] = None
        import medkern.data
        for call, package in [(lambda: medkern.data.read_nifti("x.nii"), "nibabel"),
                              (lambda: medkern.data.read_dicom("x.dcm"), "pydicom"),
                              (lambda: medkern.data.read_dicom_series("."), "pydicom")]:
            try:
                call()
            except ImportError as error:
                assert f"pip install {package}" in str(error) and "medkern.data.read_" in str(error), error
            else:
                raise AssertionError("no ImportError")
        print("ok")
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.stdout.strip().endswith("ok"), result.stderr


# ------------------------------------------------------------------------------------------------- DICOM


def _modality(ds):
    return ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"])
def test_read_dicom_matches_pydicom(name):
    path = get_testdata_file(name)
    image = read_dicom(path)
    ds = pydicom.dcmread(path)
    assert image.dtype == torch.float32 and image.shape == (ds.Rows, ds.Columns)
    np.testing.assert_array_equal(image.numpy(), _modality(ds).astype(np.float32))


def test_read_dicom_applies_rescale():
    image = read_dicom(CT_SMALL)
    stored = pydicom.dcmread(CT_SMALL).pixel_array
    assert float(image.min()) == float(stored.min()) - 1024  # CT_small: slope 1, intercept -1024 (HU)
    # the three big-endian / implicit variants hold the same image as MR_small
    assert torch.equal(read_dicom(get_testdata_file("MR_small_bigendian.dcm")), read_dicom(MR_SMALL))


def _write_slices(directory, count, position_of, orientation=(1, 0, 0, 0, 1, 0), source=CT_SMALL, edit=None):
    """Copies of ``source`` as a series: slice k gets the position ``position_of(k)``, InstanceNumber
    count - k (so instance order and position order disagree), pixel values + 10 k, and a file name that
    sorts in neither order. Returns each slice's expected modality image, in position order k (a list:
    a test may give one slice another shape)."""
    os.makedirs(directory, exist_ok=True)
    expected = []
    for k in range(count):
        ds = pydicom.dcmread(source)
        pixels = ds.pixel_array + 10 * k
        ds.PixelData = pixels.astype(ds.pixel_array.dtype).tobytes()
        ds.ImagePositionPatient = [float(v) for v in position_of(k)]
        ds.ImageOrientationPatient = list(orientation)
        ds.InstanceNumber = count - k
        if edit is not None:
            edit(k, ds)
        expected.append(_modality(ds))
        ds.save_as(os.path.join(directory, f"slice_{(k * 7) % count:03d}_{k}.dcm"))
    return expected


def test_read_dicom_series_sorts_by_position_and_measures_spacing(tmp_path):
    expected = np.stack(_write_slices(tmp_path / "ct", 5, lambda k: (-158.1, -179.0, -75.7 + 2.5 * k)))
    before = listing(tmp_path / "ct")
    volume, spacing = read_dicom_series(tmp_path / "ct")
    assert volume.dtype == torch.float32 and volume.shape == (5, 128, 128)
    np.testing.assert_array_equal(volume.numpy(), expected.astype(np.float32))
    assert spacing == pytest.approx((2.5, 0.661468, 0.661468))
    assert all(isinstance(s, float) for s in spacing)
    files = [tmp_path / "ct" / name for name in reversed(before)]
    assert torch.equal(read_dicom_series(files)[0], volume)  # a list of files, in any order
    assert listing(tmp_path / "ct") == before and listing(tmp_path) == ["ct"]


def test_read_dicom_series_orders_along_the_slice_normal(tmp_path):
    # coronal slices: rows along x, columns along -z, so the normal is +y; positions also drift in x and z
    coronal = (1, 0, 0, 0, 0, -1)
    drifting = lambda k: (10.0 + 0.3 * k, -50.0 + 3.0 * k, 7.0 - 0.2 * k)  # noqa: E731
    expected = np.stack(_write_slices(tmp_path / "cor", 4, drifting, coronal))
    volume, spacing = read_dicom_series(tmp_path / "cor")
    np.testing.assert_array_equal(volume.numpy(), expected.astype(np.float32))
    assert spacing[0] == pytest.approx(3.0)
    # positions that fall along the normal as k grows: the volume runs k = 3, 2, 1, 0
    expected = np.stack(_write_slices(tmp_path / "down", 4, lambda k: (0.0, 0.0, 20.0 - 4.0 * k)))
    volume, spacing = read_dicom_series(tmp_path / "down")
    np.testing.assert_array_equal(volume.numpy(), expected[::-1].astype(np.float32))
    assert spacing[0] == pytest.approx(4.0)


def test_read_dicom_series_applies_each_slices_rescale(tmp_path):
    def rescale(k, ds):
        ds.RescaleSlope, ds.RescaleIntercept = 1 + k, -1000 + 5 * k

    expected = np.stack(_write_slices(tmp_path / "s", 3, lambda k: (0.0, 0.0, 1.25 * k), edit=rescale))
    volume, _ = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(volume.numpy(), expected.astype(np.float32))
    assert float(volume[2].max()) == float(expected[2].max()) and expected[2].max() > expected[0].max() * 2


def test_read_dicom_series_falls_back_to_instance_number(tmp_path):
    def drop_position(k, ds):
        del ds.ImagePositionPatient
        ds.SpacingBetweenSlices = 3.0

    expected = np.stack(_write_slices(tmp_path / "s", 4, lambda k: (0.0, 0.0, float(k)), edit=drop_position))
    volume, spacing = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(volume.numpy(), expected[::-1].astype(np.float32))  # InstanceNumber = 4 - k
    assert spacing == pytest.approx((3.0, 0.661468, 0.661468))


def _assert_series_error(directory, message):
    before = listing(directory)
    with pytest.raises(ValueError, match=r"medkern\.data\.read_dicom_series: .*" + message):
        read_dicom_series(directory)
    assert listing(directory) == before


def test_read_dicom_series_rejects_mixed_slices(tmp_path):
    def shrink_last(k, ds):
        if k == 2:
            ds.PixelData = ds.pixel_array[:64, :64].copy().tobytes()
            ds.Rows, ds.Columns = 64, 64

    _write_slices(tmp_path / "shape", 3, lambda k: (0.0, 0.0, float(k)), edit=shrink_last)
    _assert_series_error(tmp_path / "shape", r"slices differ in shape \(Rows, Columns\): .*_2\.dcm.* \(64, 64\)")

    def tilt_middle(k, ds):
        if k == 1:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0.8, 0.6]

    _write_slices(tmp_path / "tilt", 3, lambda k: (0.0, 0.0, float(k)), edit=tilt_middle)
    _assert_series_error(tmp_path / "tilt", r"slices differ in ImageOrientationPatient: .*_1\.dcm")

    def other_series(k, ds):
        if k == 0:
            ds.SeriesInstanceUID = "1.2.3.4"

    _write_slices(tmp_path / "series", 3, lambda k: (0.0, 0.0, float(k)), edit=other_series)
    _assert_series_error(tmp_path / "series", r"slices differ in SeriesInstanceUID: .*1\.2\.3\.4")


def test_read_dicom_series_rejects_bad_geometry(tmp_path):
    _write_slices(tmp_path / "gap", 4, lambda k: (0.0, 0.0, 2.0 * k + (2.0 if k == 3 else 0.0)))
    _assert_series_error(tmp_path / "gap", r"unevenly spaced .*missing slice")
    _write_slices(tmp_path / "twice", 3, lambda k: (0.0, 0.0, 2.0 * min(k, 1)))
    _assert_series_error(tmp_path / "twice", r"two slices share the position")

    def no_order(k, ds):
        del ds.ImagePositionPatient
        del ds.InstanceNumber

    _write_slices(tmp_path / "unordered", 2, lambda k: (0.0, 0.0, float(k)), edit=no_order)
    _assert_series_error(tmp_path / "unordered", r"neither ImagePositionPatient .* nor InstanceNumber")


def test_dicom_readers_reject_files_that_are_not_dicom(tmp_path):
    _write_slices(tmp_path / "s", 2, lambda k: (0.0, 0.0, float(k)))
    (tmp_path / "s" / "notes.dcm").write_text("this is a text file, not a DICOM slice\n")
    _assert_series_error(tmp_path / "s", r"could not read .*notes\.dcm.* as a DICOM file")
    before = listing(tmp_path / "s")
    with pytest.raises(ValueError, match=r"medkern\.data\.read_dicom: could not read .*notes\.dcm"):
        read_dicom(tmp_path / "s" / "notes.dcm")
    assert listing(tmp_path / "s") == before


def test_dicom_readers_reject_truncated_pixel_data(tmp_path):
    truncated = get_testdata_file("MR_truncated.dcm")
    with pytest.raises(ValueError, match=r"medkern\.data\.read_dicom: could not read .*MR_truncated\.dcm.* pixel data"):
        read_dicom(truncated)
    whole = open(CT_SMALL, "rb").read()
    (tmp_path / "cut.dcm").write_bytes(whole[: len(whole) - 5000])
    before = listing(tmp_path)
    with pytest.raises(ValueError, match=r"medkern\.data\.read_dicom: could not read .*cut\.dcm"):
        read_dicom(tmp_path / "cut.dcm")
    assert listing(tmp_path) == before


def test_dicom_series_argument_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"read_dicom_series: directory .*empty.* holds no files"):
        read_dicom_series(tmp_path / "empty")
    with pytest.raises(ValueError, match="directory_or_files is empty"):
        read_dicom_series([])
    with pytest.raises(FileNotFoundError, match=r"read_dicom_series: .*absent"):
        read_dicom_series(tmp_path / "absent")
    with pytest.raises(TypeError, match="directory or a list of DICOM file paths"):
        read_dicom_series(5)
