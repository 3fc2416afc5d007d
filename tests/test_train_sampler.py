"""medkern.train.ClassBalancedSampler: classes drawn equally often, repeatable with a generator."""

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from medkern import train

# 1000 samples: 900 of class 0, 90 of class 3, 9 of class 7, 1 of class 9 (labels need not be 0..K-1)
LABELS = torch.tensor([0] * 900 + [3] * 90 + [7] * 9 + [9] * 1)[torch.randperm(1000, generator=torch.Generator()
                                                                               .manual_seed(0))]


def test_classes_are_drawn_equally_often():
    draws = 40_000
    sampler = train.ClassBalancedSampler(LABELS, num_samples=draws, generator=torch.Generator().manual_seed(1))
    drawn = LABELS[torch.tensor(list(sampler))]
    counts = torch.stack([(drawn == c).sum() for c in (0, 3, 7, 9)])
    # Each class count is Binomial(draws, 1/4): within 5 standard deviations (a false failure has
    # probability below 1e-5 for any seed; the seed is fixed anyway). Unbalanced draws would give
    # class 0 about 36,000 and class 9 about 40, far outside.
    expected, sd = draws / 4, math.sqrt(draws * 0.25 * 0.75)
    assert (counts - expected).abs().max().item() < 5 * sd, counts.tolist()
    assert 5 * sd / expected < 0.05  # the bound is tight: within 5% of the expected count


def test_every_sample_of_a_class_is_drawn_alike():
    labels = torch.tensor([0, 0, 0, 0, 1])
    draws = 20_000
    sampler = train.ClassBalancedSampler(labels, num_samples=draws, generator=torch.Generator().manual_seed(2))
    counts = torch.bincount(torch.tensor(list(sampler)), minlength=5)
    # index 4 (the only class-1 sample) ~ Binomial(draws, 1/2); each class-0 index ~ Binomial(draws, 1/8)
    assert abs(counts[4].item() - draws / 2) < 5 * math.sqrt(draws / 4)
    assert (counts[:4] - draws / 8).abs().max().item() < 5 * math.sqrt(draws * (1 / 8) * (7 / 8))


def test_draws_are_repeatable_with_a_generator():
    def draw(seed):
        return list(train.ClassBalancedSampler(LABELS, generator=torch.Generator().manual_seed(seed)))

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)
    sampler = train.ClassBalancedSampler(LABELS, generator=torch.Generator().manual_seed(5))
    assert list(sampler) != list(sampler)  # a new epoch continues the generator's stream


def test_length_and_indices():
    sampler = train.ClassBalancedSampler(LABELS.tolist())
    assert len(sampler) == 1000 and len(list(sampler)) == 1000
    short = train.ClassBalancedSampler(LABELS, num_samples=37)
    indices = list(short)
    assert len(short) == 37 and len(indices) == 37 and all(0 <= i < 1000 for i in indices)
    without = list(train.ClassBalancedSampler(LABELS, num_samples=50, replacement=False))
    assert len(set(without)) == 50


def test_feeds_a_data_loader():
    data = TensorDataset(torch.arange(1000), LABELS)
    sampler = train.ClassBalancedSampler(LABELS, num_samples=64, generator=torch.Generator().manual_seed(0))
    batches = list(DataLoader(data, batch_size=16, sampler=sampler))
    assert [len(b[0]) for b in batches] == [16, 16, 16, 16]
    for index, label in batches:
        assert torch.equal(LABELS[index], label)


def test_bad_labels_and_sizes_are_refused():
    with pytest.raises(ValueError, match=r"medkern.train.ClassBalancedSampler: labels must be a non-empty 1-D "
                                         r"sequence of class labels \(one per sample\), got shape \(0,\)"):
        train.ClassBalancedSampler([])
    with pytest.raises(ValueError, match=r"got shape \(2, 2\)"):
        train.ClassBalancedSampler([[0, 1], [1, 0]])
    with pytest.raises(TypeError, match=r"medkern.train.ClassBalancedSampler: labels must be integer class labels, "
                                        r"got torch.float32"):
        train.ClassBalancedSampler(torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match=r"medkern.train.ClassBalancedSampler: labels must be a 1-D sequence"):
        train.ClassBalancedSampler(["cat", "dog"])
    with pytest.raises(ValueError, match=r"medkern.train.ClassBalancedSampler: num_samples must be an int >= 1"):
        train.ClassBalancedSampler([0, 1], num_samples=0)
    with pytest.raises(ValueError, match=r"without replacement num_samples must be at most the number of labels "
                                         r"\(2\), got 3"):
        train.ClassBalancedSampler([0, 1], num_samples=3, replacement=False)
