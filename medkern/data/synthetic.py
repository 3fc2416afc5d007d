"""Synthetic datasets generated on the fly from a seed, for examples and tests that run offline.

Item ``i`` depends only on ``(seed, i)``: it is drawn from its own generator, so shuffling,
DataLoader workers and access order never change the data, and a longer dataset with the same
seed starts with the shorter one's items.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ._items import check_count, checked_index, item_generator

# --- SyntheticLesions: intensities in units of the tissue's mean brightness (0.5) ---
_TISSUE_MEAN = 0.5
# (cells across the image, std): a smooth texture, broad variations plus lesion-sized ones to confuse a detector
_TISSUE_SCALES = ((3, 0.08), (12, 0.04))
_NOISE_STD = 0.08  # per voxel, per channel
_LESION_CONTRAST = (0.12, 0.28)  # peak brightening, modest next to the noise and the texture
_CHANNEL_GAIN = (0.6, 1.0)  # how strongly each channel shows the lesions
_MAX_LESIONS = 3
_RADIUS_FRACTION = (0.05, 0.14)  # semi-axes as fractions of the image size
_MIN_RADIUS = 2.0  # voxels: a lesion always covers some voxels
_EDGE_VOXELS = 1.5  # width of the soft edge
_PROFILE_REACH = 8.0  # the soft edge is cut off where it has fallen to sigmoid(-8) = 3e-4 of the contrast
_MIN_SIZE = 16


def _smooth_texture(g: torch.Generator, size: int, spatial_dims: int) -> torch.Tensor:
    """Tissue-like background: random cells interpolated smoothly, at two scales."""
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    texture = torch.full((size,) * spatial_dims, _TISSUE_MEAN)
    for cells, std in _TISSUE_SCALES:
        coarse = torch.randn((1, 1) + (cells + 1,) * spatial_dims, generator=g)
        texture += std * F.interpolate(coarse, size=(size,) * spatial_dims, mode=mode, align_corners=True)[0, 0]
    return texture


def _random_rotation(g: torch.Generator, spatial_dims: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(spatial_dims, spatial_dims, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()  # the sign fix makes q uniformly distributed


def _uniform(g: torch.Generator, low: float, high: float, shape=()) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=g)


def _ellipsoid(g: torch.Generator, size: int,
               spatial_dims: int) -> tuple[tuple[slice, ...], torch.Tensor, torch.Tensor]:
    """A randomly placed, sized and rotated ellipsoid, as the box of the image it reaches, its soft
    0..1 profile over that box and its voxels there (profile > 0.5)."""
    radii = _uniform(g, *_RADIUS_FRACTION, (spatial_dims,)).mul(size).clamp_min(_MIN_RADIUS)
    margin = float(radii.max()) + 1
    centre = _uniform(g, margin, size - 1 - margin, (spatial_dims,))
    rotation = _random_rotation(g, spatial_dims)  # the ellipsoid is centre + rotation @ diag(radii) @ unit ball
    edge_scale = float(radii.min()) / _EDGE_VOXELS
    # the profile is below sigmoid(-_PROFILE_REACH) outside the ellipsoid grown by this factor: skip those voxels
    grown = (rotation * radii).norm(dim=1) * (1 + _PROFILE_REACH / edge_scale)
    box = tuple(slice(max(0, math.floor(c - r)), min(size, math.ceil(c + r) + 1))
                for c, r in zip(centre.tolist(), grown.tolist()))
    axes = [torch.arange(b.start, b.stop, dtype=torch.float32) for b in box]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))
    offsets = (grid - centre.view(-1, *[1] * spatial_dims)).flatten(1)
    radius = ((rotation.T @ offsets) / radii[:, None]).norm(dim=0).view(grid.shape[1:])  # 1 on the surface
    return box, torch.sigmoid((1 - radius) * edge_scale), radius <= 1


class SyntheticLesions(Dataset):
    """Images of smooth, noisy tissue, of which about ``lesion_fraction`` contain 1 to 3 faint
    ellipsoidal lesions with soft edges.

    Item ``i`` is ``(image, label)``: a float32 (channels, *spatial) image, ``spatial`` being
    ``size`` along each of ``spatial_dims`` (2 or 3) axes, and an int64 label, 1 with lesions and
    0 without; or, with ``with_masks=True``, ``(image, mask)``, the int64 (*spatial) mask marking the
    lesion voxels (all zero without lesions). The images are the same either way. Lesions brighten
    the tissue by about 1-3.5 times the per-voxel noise, about as much as its texture varies, so
    neither the brightest voxel nor the mean brightness tells them apart well: finding them takes
    comparing a region with its surroundings. ``labels`` holds every item's label without
    generating the images.
    """

    def __init__(self, n: int, size: int = 64, spatial_dims: int = 2, channels: int = 1,
                 lesion_fraction: float = 0.5, seed: int = 0, with_masks: bool = False):
        op = "medkern.data.SyntheticLesions"
        self.n = check_count(n, "n", op)
        self.size = check_count(size, "size", op, minimum=_MIN_SIZE)
        if spatial_dims not in (2, 3):
            raise ValueError(f"{op}: spatial_dims must be 2 or 3, got {spatial_dims!r}")
        self.spatial_dims = spatial_dims
        self.channels = check_count(channels, "channels", op, minimum=1)
        if not 0.0 <= lesion_fraction <= 1.0:
            raise ValueError(f"{op}: lesion_fraction must be in [0, 1], got {lesion_fraction!r}")
        self.lesion_fraction = float(lesion_fraction)
        self.seed = check_count(seed, "seed", op)
        self.with_masks = bool(with_masks)

    def __len__(self) -> int:
        return self.n

    def _is_positive(self, g: torch.Generator) -> bool:
        return float(torch.rand((), generator=g)) < self.lesion_fraction  # the item's first draw

    @property
    def labels(self) -> torch.Tensor:
        """Every item's label (int64, (n,)), e.g. for :class:`medkern.train.ClassBalancedSampler`."""
        return torch.tensor([int(self._is_positive(item_generator(self.seed, i))) for i in range(self.n)],
                            dtype=torch.int64)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = checked_index(index, self.n, "medkern.data.SyntheticLesions")
        g = item_generator(self.seed, index)
        positive = self._is_positive(g)
        spatial = (self.size,) * self.spatial_dims
        image = _smooth_texture(g, self.size, self.spatial_dims).expand(self.channels, *spatial).clone()
        mask = torch.zeros(spatial, dtype=torch.bool)
        if positive:
            gains = _uniform(g, *_CHANNEL_GAIN, (self.channels,)).view(-1, *[1] * self.spatial_dims)
            for _ in range(int(torch.randint(1, _MAX_LESIONS + 1, (), generator=g))):
                box, profile, inside = _ellipsoid(g, self.size, self.spatial_dims)
                image[(slice(None), *box)] += gains * float(_uniform(g, *_LESION_CONTRAST)) * profile
                mask[box] |= inside
        image += _NOISE_STD * torch.randn(image.shape, generator=g)
        target = mask.long() if self.with_masks else torch.tensor(int(positive), dtype=torch.int64)
        return image, target


# --- SyntheticECG: amplitudes in mV, times in seconds ---
# rhythm: (heart rate range in beats per minute, RR-interval coefficient of variation, has P waves)
RHYTHMS = {
    "normal": ((60.0, 100.0), 0.03, True),
    "afib": ((80.0, 140.0), 0.20, False),  # irregularly irregular, no P waves, fibrillatory baseline
    "brady": ((35.0, 55.0), 0.03, True),
    "tachy": ((110.0, 160.0), 0.03, True),
}
# wave: (offset from the R peak at RR = 1 s, width (std), amplitude); the T wave's offset scales with sqrt(RR)
_WAVES = {
    "P": (-0.16, 0.025, 0.12),
    "Q": (-0.035, 0.010, -0.12),
    "R": (0.0, 0.012, 1.0),
    "S": (0.035, 0.012, -0.25),
    "T": (0.26, 0.050, 0.30),
}
_MIN_RR = 0.25  # s: the heart's refractory period bounds how close beats come
_WANDER = ((0.05, 0.20), (0.10, 0.50))  # baseline wander: amplitude range, frequency range (Hz)
_FIBRILLATION = ((0.03, 0.06), (4.0, 8.0))  # atrial fibrillation waves: amplitude, frequency range (Hz)
_ECG_NOISE_STD = (0.01, 0.04)
_WAVE_SCALE = (0.8, 1.2)  # each recording scales each wave's amplitude by a factor in this range
_MIN_SAMPLING_RATE = 100.0  # Hz: the QRS complex is ~10 ms wide


def _beat_times(g: torch.Generator, duration: float, mean_rr: float,
                rr_cv: float) -> tuple[torch.Tensor, torch.Tensor]:
    """R-peak times covering [-1 s, duration + 1 s] (so waves of beats just outside show) and each beat's RR."""
    times, intervals, t = [], [], -1.0 - mean_rr * float(torch.rand((), generator=g))
    while t < duration + 1.0:
        rr = max(_MIN_RR, mean_rr * (1 + rr_cv * float(torch.randn((), generator=g))))
        times.append(t)
        intervals.append(rr)
        t += rr
    return torch.tensor(times, dtype=torch.float64), torch.tensor(intervals, dtype=torch.float64)


def _sinusoid(g: torch.Generator, t: torch.Tensor, amplitudes, frequencies) -> torch.Tensor:
    amplitude, frequency = float(_uniform(g, *amplitudes)), float(_uniform(g, *frequencies))
    return amplitude * torch.sin(2 * math.pi * frequency * t + 2 * math.pi * float(torch.rand((), generator=g)))


class SyntheticECG(Dataset):
    """Single-lead ECG-like signals of four rhythms: normal sinus, atrial fibrillation, bradycardia
    and tachycardia.

    Each beat is a sum of Gaussian P, Q, R, S and T waves; the rhythm sets the heart rate and how
    irregular the RR intervals are (atrial fibrillation also loses its P waves and gains fibrillatory
    waves), with baseline wander and noise on top. ``classes`` picks the rhythms and their order:
    item ``i`` is ``(signal, label)``, a float32 (length, 1) signal sampled at ``sampling_rate`` Hz
    and the int64 index of its rhythm in ``classes`` (each equally likely). ``labels`` holds every
    item's label without generating the signals.
    """

    def __init__(self, n: int, length: int = 500, sampling_rate: float = 250,
                 classes: tuple[str, ...] = ("normal", "afib", "brady", "tachy"), seed: int = 0):
        op = "medkern.data.SyntheticECG"
        self.n = check_count(n, "n", op)
        self.length = check_count(length, "length", op, minimum=1)
        if not isinstance(sampling_rate, (int, float)) or not sampling_rate >= _MIN_SAMPLING_RATE:
            raise ValueError(f"{op}: sampling_rate must be a number >= {_MIN_SAMPLING_RATE} Hz, "
                             f"got {sampling_rate!r}")
        self.sampling_rate = float(sampling_rate)
        classes = tuple(classes) if not isinstance(classes, str) else (classes,)
        unknown = [c for c in classes if c not in RHYTHMS]
        if not classes or unknown or len(set(classes)) != len(classes):
            raise ValueError(f"{op}: classes must be distinct names from {tuple(RHYTHMS)}, got {classes!r}")
        self.classes = classes
        self.seed = check_count(seed, "seed", op)

    def __len__(self) -> int:
        return self.n

    def _label(self, g: torch.Generator) -> int:
        return int(torch.randint(len(self.classes), (), generator=g))  # the item's first draw

    @property
    def labels(self) -> torch.Tensor:
        """Every item's label (int64, (n,))."""
        return torch.tensor([self._label(item_generator(self.seed, i)) for i in range(self.n)], dtype=torch.int64)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = checked_index(index, self.n, "medkern.data.SyntheticECG")
        g = item_generator(self.seed, index)
        label = self._label(g)
        (low_bpm, high_bpm), rr_cv, has_p_waves = RHYTHMS[self.classes[label]]
        mean_rr = 60.0 / float(_uniform(g, low_bpm, high_bpm))
        t = torch.arange(self.length, dtype=torch.float64) / self.sampling_rate
        beats, rr = _beat_times(g, self.length / self.sampling_rate, mean_rr, rr_cv)
        signal = torch.zeros_like(t)
        for name, (offset, width, amplitude) in _WAVES.items():
            if name == "P" and not has_p_waves:
                continue
            scale = float(_uniform(g, *_WAVE_SCALE))
            centres = beats + (offset * torch.sqrt(rr) if name == "T" else offset)  # QT ~ sqrt(RR) (Bazett)
            bumps = torch.exp(-0.5 * ((t[None, :] - centres[:, None]) / width) ** 2)
            signal += scale * amplitude * bumps.sum(0)
        signal += _sinusoid(g, t, *_WANDER)
        if not has_p_waves:
            signal += _sinusoid(g, t, *_FIBRILLATION)
        signal += float(_uniform(g, *_ECG_NOISE_STD)) * torch.randn(t.shape, generator=g, dtype=torch.float64)
        return signal.float().unsqueeze(1), torch.tensor(label, dtype=torch.int64)
