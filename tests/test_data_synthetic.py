"""medkern.data synthetic datasets: determinism (item i depends on (seed, i) alone), shapes, masks that
match the labels, class balance, a lesion task that is learnable but not trivial, and ECG rhythms whose
measured heart rates and RR irregularity match their classes."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from medkern.data import SyntheticECG, SyntheticLesions
from medkern.data.synthetic import RHYTHMS
from medkern.train import auroc


def assert_same_items(a, b):
    assert len(a) == len(b)
    for (x, y), (u, v) in zip(a, b):
        assert torch.equal(x, u) and torch.equal(y, v)


# -------------------------------------------------------------------------------------------- lesions


@pytest.mark.parametrize("spatial_dims, size", [(2, 32), (3, 20)])
def test_lesions_are_a_function_of_seed_and_index(spatial_dims, size):
    def make(n=8, seed=3):
        return SyntheticLesions(n, size=size, spatial_dims=spatial_dims, seed=seed, with_masks=True)

    forward = [make()[i] for i in range(8)]
    backward = [make()[i] for i in reversed(range(8))][::-1]
    assert_same_items(forward, backward)
    assert_same_items(forward[:5], [make(n=50)[i] for i in range(5)])  # a longer dataset starts alike
    assert_same_items(forward[-2:], [make()[-2], make()[-1]])
    other = [make(seed=4)[i][0] for i in range(8)]
    assert not any(torch.equal(x, o) for (x, _), o in zip(forward, other))
    assert len({float(x.sum()) for x, _ in forward}) == 8  # items differ from one another


def test_lesions_same_through_shuffled_dataloader_with_workers():
    data = SyntheticLesions(12, size=24, seed=5)
    direct = torch.stack([data[i][0] for i in range(12)])
    order = torch.randperm(12, generator=torch.Generator().manual_seed(1)).tolist()
    loader = DataLoader(data, batch_size=4, sampler=order, num_workers=2)
    loaded = torch.cat([images for images, _ in loader])
    assert torch.equal(loaded, direct[order])


@pytest.mark.parametrize("spatial_dims, channels", [(2, 1), (2, 3), (3, 1), (3, 2)])
def test_lesion_shapes_and_dtypes(spatial_dims, channels):
    size = 32 if spatial_dims == 2 else 20
    spatial = (size,) * spatial_dims
    image, label = SyntheticLesions(4, size=size, spatial_dims=spatial_dims, channels=channels)[0]
    assert image.shape == (channels, *spatial) and image.dtype == torch.float32
    assert label.shape == () and label.dtype == torch.int64 and int(label) in (0, 1)
    image, mask = SyntheticLesions(4, size=size, spatial_dims=spatial_dims, channels=channels, with_masks=True)[0]
    assert mask.shape == spatial and mask.dtype == torch.int64 and set(mask.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("spatial_dims, size", [(2, 32), (3, 20)])
def test_lesion_masks_mark_exactly_the_positive_items(spatial_dims, size):
    labelled = SyntheticLesions(40, size=size, spatial_dims=spatial_dims, channels=2, seed=7)
    masked = SyntheticLesions(40, size=size, spatial_dims=spatial_dims, channels=2, seed=7, with_masks=True)
    labels = labelled.labels
    assert 0 < int(labels.sum()) < 40
    contrasts = []
    for i in range(40):
        (image, label), (same_image, mask) = labelled[i], masked[i]
        assert torch.equal(image, same_image)  # with_masks changes the target, not the image
        assert int(label) == int(labels[i])
        if label:
            inside = mask.bool()
            assert 0 < int(inside.sum()) < inside.numel() // 2
            contrasts.append(float(image[:, inside].mean() - image[:, ~inside].mean()))
        else:
            assert int(mask.sum()) == 0
    assert np.mean(contrasts) > 0.05  # the mask covers the brightened voxels


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5, 1.0])
def test_lesion_fraction_sets_the_class_balance(fraction):
    labels = SyntheticLesions(2000, lesion_fraction=fraction, seed=11).labels
    assert labels.dtype == torch.int64 and labels.shape == (2000,)
    assert abs(float(labels.float().mean()) - fraction) < 0.04  # binomial std <= 0.012


def test_lesion_task_is_learnable_but_not_trivial():
    """Comparing a region with its surroundings finds the lesions; one voxel or the mean brightness can't."""
    data = SyntheticLesions(200, size=64, seed=1)
    images, labels = torch.stack([data[i][0] for i in range(200)]), data.labels
    flat = images.flatten(1)
    local = F.avg_pool2d(images, 5, 1, 2) - F.avg_pool2d(images, 21, 1, 10, count_include_pad=False)
    assert float(auroc(local.flatten(1).max(1).values, labels)) > 0.8
    assert float(auroc(flat.max(1).values, labels)) < 0.85
    assert float(auroc(flat.mean(1), labels)) < 0.85


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=-1), "n must be an int >= 0"),
    (dict(n=4, size=8), "size must be an int >= 16"),
    (dict(n=4, spatial_dims=1), "spatial_dims must be 2 or 3"),
    (dict(n=4, channels=0), "channels must be an int >= 1"),
    (dict(n=4, lesion_fraction=1.5), r"lesion_fraction must be in \[0, 1\]"),
    (dict(n=4, seed=-2), "seed must be an int >= 0"),
])
def test_lesion_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=r"medkern\.data\.SyntheticLesions: " + message):
        SyntheticLesions(**kwargs)


def test_generated_datasets_index_like_sequences():
    data = SyntheticLesions(3, size=16)
    with pytest.raises(IndexError, match="index 3 is out of range for 3 items"):
        data[3]
    with pytest.raises(TypeError, match="index must be an int"):
        data[1.0]
    assert len(list(iter(data))) == 3  # iteration stops at the IndexError
    assert torch.equal(SyntheticECG(3)[-3][0], SyntheticECG(3)[0][0])


# ------------------------------------------------------------------------------------------------ ECG

FS = 250


def r_peaks(signal: np.ndarray, fs: float = FS) -> np.ndarray:
    """R peaks: after removing the baseline (a 0.3 s moving mean), the local maxima within +-0.15 s that
    reach half the largest, away from the ends."""
    window = int(0.3 * fs)
    baseline = np.convolve(np.pad(signal, window // 2, mode="edge"), np.ones(window) / window, mode="same")
    x = signal - baseline[window // 2: window // 2 + len(signal)]
    half = int(0.15 * fs)
    centre = x[half: len(x) - half]
    is_peak = (centre == sliding_window_view(x, 2 * half + 1).max(axis=1)) & (centre > 0.5 * x.max())
    return np.flatnonzero(is_peak) + half


def rr_intervals(signal: np.ndarray) -> np.ndarray:
    return np.diff(r_peaks(signal)) / FS


def test_ecg_is_a_function_of_seed_and_index():
    def make(n=6, seed=2):
        return SyntheticECG(n, length=400, seed=seed)

    forward = [make()[i] for i in range(6)]
    assert_same_items(forward, [make()[i] for i in reversed(range(6))][::-1])
    assert_same_items(forward[:3], [make(n=100)[i] for i in range(3)])
    assert not any(torch.equal(x, make(seed=3)[i][0]) for i, (x, _) in enumerate(forward))


def test_ecg_shapes_labels_and_balance():
    data = SyntheticECG(5, length=321, sampling_rate=360)
    signal, label = data[0]
    assert signal.shape == (321, 1) and signal.dtype == torch.float32
    assert label.shape == () and label.dtype == torch.int64
    assert [int(data[i][1]) for i in range(5)] == data.labels.tolist()
    counts = torch.bincount(SyntheticECG(2000, seed=1).labels, minlength=4)
    assert counts.sum() == 2000 and (counts - 500).abs().max() < 80  # binomial std ~19
    pair = SyntheticECG(200, classes=("tachy", "brady")).labels
    assert set(pair.tolist()) == {0, 1}


def test_ecg_rhythms_have_their_heart_rates():
    data = SyntheticECG(48, length=10 * FS, sampling_rate=FS, seed=4)
    rates = {name: [] for name in data.classes}
    irregularity = {name: [] for name in data.classes}
    for signal, label in data:
        rr = rr_intervals(signal[:, 0].numpy())
        name = data.classes[int(label)]
        rates[name].append(60 / rr.mean())
        irregularity[name].append(rr.std() / rr.mean())
    assert all(len(r) >= 5 for r in rates.values()), {k: len(v) for k, v in rates.items()}
    for name in ("normal", "brady", "tachy"):  # regular rhythms: every recording in its range
        (low, high), _, _ = RHYTHMS[name]
        assert low * 0.93 < min(rates[name]) and max(rates[name]) < high * 1.07, (name, rates[name])
        assert max(irregularity[name]) < 0.08, (name, irregularity[name])
    assert max(rates["brady"]) < min(rates["normal"]) and max(rates["normal"]) < min(rates["tachy"])
    assert min(irregularity["afib"]) > 0.1, irregularity["afib"]


def test_ecg_class_subset_keeps_each_rhythm():
    data = SyntheticECG(12, length=8 * FS, classes=("tachy", "brady"), seed=9)
    for signal, label in data:
        rate = 60 / rr_intervals(signal[:, 0].numpy()).mean()
        assert (rate > 100) == (int(label) == 0), (rate, int(label))


@pytest.mark.parametrize("kwargs, message", [
    (dict(classes=("normal", "vfib")), "classes must be distinct names from"),
    (dict(classes=("normal", "normal")), "classes must be distinct names from"),
    (dict(classes=()), "classes must be distinct names from"),
    (dict(sampling_rate=50), "sampling_rate must be a number >= 100"),
    (dict(length=0), "length must be an int >= 1"),
])
def test_ecg_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=r"medkern\.data\.SyntheticECG: " + message):
        SyntheticECG(4, **kwargs)
