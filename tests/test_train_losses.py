"""medkern.train.losses: focal loss against cross-entropy and its formula, soft Dice against its
formula, DiceCE as the weighted sum of its parts, class weights, fp64 gradchecks, and the errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from medkern import train

# (N, C, *spatial) logit shapes: classification, 2D and 3D segmentation
SHAPES = [(6, 4), (2, 3, 5, 6), (2, 3, 3, 4, 5)]


def _case(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=dtype)
    target = torch.randint(0, shape[1], shape[:1] + shape[2:], generator=g)
    return logits, target


@pytest.mark.parametrize("shape", SHAPES)
def test_focal_with_gamma_0_is_cross_entropy(shape):
    logits, target = _case(shape)
    for reduction in ["mean", "sum", "none"]:
        torch.testing.assert_close(train.focal_loss(logits, target, gamma=0, reduction=reduction),
                                   F.cross_entropy(logits, target, reduction=reduction))
    weight = torch.rand(shape[1]) + 0.1
    for reduction in ["mean", "sum", "none"]:
        want = F.cross_entropy(logits, target, weight=weight, reduction=reduction)
        torch.testing.assert_close(train.focal_loss(logits, target, gamma=0, alpha=weight, reduction=reduction), want)
        torch.testing.assert_close(train.weighted_cross_entropy(logits, target, weight, reduction), want)


@pytest.mark.parametrize("shape", SHAPES)
def test_binary_focal_with_gamma_0_is_binary_cross_entropy(shape):
    logits, _ = _case(shape)
    target = torch.rand(shape) > 0.5
    torch.testing.assert_close(train.focal_loss(logits, target, gamma=0),
                               F.binary_cross_entropy_with_logits(logits, target.float()))


@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.0])
def test_multiclass_focal_matches_its_formula(gamma):
    logits, target = _case((2, 3, 4, 5), dtype=torch.float64)
    alpha = torch.tensor([0.2, 0.5, 1.3], dtype=torch.float64)
    p = logits.softmax(1)
    want = torch.empty(target.shape, dtype=torch.float64)
    for index in torch.cartesian_prod(*(torch.arange(s) for s in target.shape)).tolist():
        n, *where = index
        cls = target[tuple(index)].item()
        pt = p[(n, cls, *where)].item()
        want[tuple(index)] = -alpha[cls].item() * (1 - pt) ** gamma * math.log(pt)
    got = train.focal_loss(logits, target, gamma=gamma, alpha=alpha, reduction="none")
    torch.testing.assert_close(got, want)
    weights = alpha[target]
    torch.testing.assert_close(train.focal_loss(logits, target, gamma=gamma, alpha=alpha), want.sum() / weights.sum())
    torch.testing.assert_close(train.FocalLoss(gamma, alpha, "sum")(logits, target), want.sum())


def test_binary_focal_matches_its_formula():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    target = (torch.rand(4, 2, 3, 3, generator=g) > 0.6).double()
    gamma, alpha = 2.0, 0.25
    p = torch.sigmoid(logits)
    # Lin et al.: -alpha (1 - p)^gamma log p for positives, -(1 - alpha) p^gamma log(1 - p) for negatives
    want = torch.where(target == 1, -alpha * (1 - p) ** gamma * torch.log(p),
                       -(1 - alpha) * p ** gamma * torch.log(1 - p))
    torch.testing.assert_close(train.focal_loss(logits, target, gamma, alpha, reduction="none"), want)
    torch.testing.assert_close(train.focal_loss(logits, target, gamma, alpha), want.mean())


def test_single_channel_logits_with_index_target_are_binary():
    logits, _ = _case((5, 1, 4, 4))
    target = torch.randint(0, 2, (5, 4, 4))
    torch.testing.assert_close(train.focal_loss(logits, target, gamma=0, reduction="none"),
                               F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), reduction="none"))
    torch.testing.assert_close(train.dice_loss(logits, target), train.dice_loss(logits, target.unsqueeze(1).float()))


def test_focal_down_weights_easy_samples():
    """With gamma > 0 a confident right answer costs much less than under cross-entropy."""
    logits = torch.tensor([[4.0, 0.0], [0.2, 0.0]])
    target = torch.tensor([0, 0])
    ce = F.cross_entropy(logits, target, reduction="none")
    focal = train.focal_loss(logits, target, gamma=2.0, reduction="none")
    assert focal[0] / ce[0] < 1e-3 < 0.2 < focal[1] / ce[1] < 1


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_gradcheck(gamma):
    logits, target = _case((2, 3, 2, 3), dtype=torch.float64)
    logits.requires_grad_()
    alpha = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: train.focal_loss(x, target, gamma, alpha), (logits,))
    binary = (torch.rand(2, 3, 2, 3) > 0.5).double()
    assert torch.autograd.gradcheck(lambda x: train.focal_loss(x, binary, gamma, 0.25), (logits,))


def test_focal_gradient_is_finite_where_a_sample_is_certain():
    logits = torch.tensor([[200.0, 0.0]], requires_grad=True)
    train.focal_loss(logits, torch.tensor([0]), gamma=0.5).backward()
    assert torch.isfinite(logits.grad).all()


def _dice_reference(probs, onehot, smooth_nr, smooth_dr):
    """Summed over the spatial dims by hand (none for classification: then per element)."""
    overlap, sizes = probs * onehot, probs + onehot
    for _ in range(probs.dim() - 2):
        overlap, sizes = overlap.sum(-1), sizes.sum(-1)
    return 1 - (2 * overlap + smooth_nr) / (sizes + smooth_dr)


@pytest.mark.parametrize("shape", SHAPES)
def test_dice_loss_matches_its_formula(shape):
    logits, target = _case(shape, dtype=torch.float64)
    onehot = F.one_hot(target, shape[1]).movedim(-1, 1).double()
    want = _dice_reference(logits.softmax(1), onehot, 0.5, 1.0)
    torch.testing.assert_close(train.dice_loss(logits, target, smooth_nr=0.5, smooth_dr=1.0, reduction="none"), want)
    torch.testing.assert_close(train.dice_loss(logits, target, include_background=False, smooth_nr=0.5,
                                               smooth_dr=1.0), want[:, 1:].mean())
    # multilabel: a sigmoid per channel
    labels = (torch.rand(shape) > 0.5).double()
    torch.testing.assert_close(train.DiceLoss(reduction="sum")(logits, labels),
                               _dice_reference(torch.sigmoid(logits), labels, 1e-5, 1e-5).sum())


def test_dice_loss_of_a_perfect_and_a_wrong_prediction():
    target = torch.randint(0, 3, (2, 6, 6, 6))
    target[0, 0, 0, 0] = 2  # class 2 present; class 1 may or may not be
    onehot = F.one_hot(target, 3).movedim(-1, 1).float()
    assert train.dice_loss(40 * onehot, target).item() < 1e-6
    assert train.dice_loss(40 * onehot, target, include_background=False).item() < 1e-6
    assert train.dice_loss(-40 * onehot, target).item() > 0.99


def test_dice_gradcheck():
    logits, target = _case((2, 3, 3, 4), dtype=torch.float64)
    logits.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: train.dice_loss(x, target, include_background=False), (logits,))
    labels = (torch.rand(2, 3, 3, 4) > 0.5).double()
    assert torch.autograd.gradcheck(lambda x: train.dice_loss(x, labels), (logits,))


@pytest.mark.parametrize("shape", SHAPES)
def test_dice_ce_is_the_weighted_sum_of_its_parts(shape):
    logits, target = _case(shape)
    weight = torch.rand(shape[1]) + 0.5
    loss = train.DiceCELoss(lambda_dice=0.7, lambda_ce=1.8, ce_weight=weight, include_background=False)
    want = 0.7 * train.dice_loss(logits, target, include_background=False) + \
        1.8 * F.cross_entropy(logits, target, weight=weight)
    torch.testing.assert_close(loss(logits, target), want)
    labels = (torch.rand(shape) > 0.5).float()
    want = 0.7 * train.dice_loss(logits, labels) + 1.8 * F.binary_cross_entropy_with_logits(logits, labels)
    torch.testing.assert_close(train.DiceCELoss(0.7, 1.8)(logits, labels), want)


def test_loss_modules_keep_class_weights_as_buffers():
    alpha = torch.tensor([1.0, 2.0])
    assert "alpha" in dict(train.FocalLoss(alpha=alpha).named_buffers())
    assert "ce_weight" in dict(train.DiceCELoss(ce_weight=alpha).named_buffers())
    assert train.FocalLoss(alpha=alpha).double().alpha.dtype == torch.float64


def test_class_weights_schemes():
    counts = torch.tensor([500, 50, 5])
    inverse = 1 / counts.double()
    torch.testing.assert_close(train.class_weights(counts=counts), (3 * inverse / inverse.sum()).float())
    root = counts.double() ** -0.5
    torch.testing.assert_close(train.class_weights(counts=counts, scheme="inverse_sqrt"),
                               (3 * root / root.sum()).float())
    beta = 0.99
    effective = (1 - beta) / (1 - beta ** counts.double())
    torch.testing.assert_close(train.class_weights(counts=counts, scheme="effective_number", beta=beta),
                               (3 * effective / effective.sum()).float())
    # beta = 0 counts every class as one sample: equal weights
    torch.testing.assert_close(train.class_weights(counts=counts, scheme="effective_number", beta=0.0), torch.ones(3))
    targets = torch.cat([torch.full((n,), c) for c, n in enumerate(counts.tolist())])
    torch.testing.assert_close(train.class_weights(targets[torch.randperm(555)], 3), train.class_weights(counts=counts))


def test_bad_inputs_name_the_function_and_argument():
    logits, target = _case((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"medkern.train.focal_loss: target must have shape \(2, 4, 4\) \(class "
                                         r"indices\) or logits' shape \(2, 3, 4, 4\)"):
        train.focal_loss(logits, target[:, :3])
    with pytest.raises(TypeError, match=r"medkern.train.dice_loss: class-index target must be an integer tensor, got "
                                        r"torch.float32"):
        train.dice_loss(logits, target.float())
    with pytest.raises(TypeError, match=r"medkern.train.dice_loss: logits must be a floating-point tensor"):
        train.dice_loss(target.unsqueeze(1), target)
    with pytest.raises(ValueError, match=r"medkern.train.focal_loss: target must hold class indices in \[0, 3\), "
                                         r"got values in \[0, 3\]"):
        train.focal_loss(logits, target.clamp(max=2) + (target == 2).long())
    with pytest.raises(ValueError, match=r"medkern.train.focal_loss: gamma must be a finite float >= 0, got -1"):
        train.focal_loss(logits, target, gamma=-1)
    with pytest.raises(ValueError, match=r"medkern.train.focal_loss: alpha must have shape \(3,\)"):
        train.focal_loss(logits, target, alpha=torch.ones(2))
    with pytest.raises(ValueError, match=r"medkern.train.focal_loss: with binary targets alpha must be a float in "
                                         r"\[0, 1\]"):
        train.focal_loss(logits, torch.rand(2, 3, 4, 4), alpha=1.5)
    with pytest.raises(ValueError, match=r"medkern.train.dice_loss: reduction must be one of"):
        train.dice_loss(logits, target, reduction="batch")
    with pytest.raises(ValueError, match=r"medkern.train.dice_loss: include_background=False needs at least 2 "
                                         r"channels"):
        train.dice_loss(logits[:, :1], target.clamp(max=1), include_background=False)
    with pytest.raises(ValueError, match=r"medkern.train.DiceCELoss: ce_weight must have shape \(3,\)"):
        train.DiceCELoss(ce_weight=torch.ones(4))(logits, target)
    with pytest.raises(ValueError, match=r"medkern.train.DiceCELoss: lambda_ce must be a float >= 0"):
        train.DiceCELoss(lambda_ce=-1.0)
    with pytest.raises(ValueError, match=r"medkern.train.class_weights: num_classes must be an int >= 1"):
        train.class_weights(target, 0)
    with pytest.raises(ValueError, match=r"medkern.train.class_weights: every class needs a count > 0"):
        train.class_weights(counts=torch.tensor([3, 0]))
    with pytest.raises(ValueError, match=r"medkern.train.class_weights: give exactly one of targets"):
        train.class_weights()
    with pytest.raises(ValueError, match=r"medkern.train.class_weights: beta must be a float in \[0, 1\)"):
        train.class_weights(counts=torch.tensor([3, 1]), scheme="effective_number", beta=1.0)
    with pytest.raises(ValueError, match=r"medkern.train.class_weights: scheme must be one of"):
        train.class_weights(counts=torch.tensor([3, 1]), scheme="log")


def test_deep_supervision_loss_weights_each_output_against_the_subsampled_target():
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 8, 8, 8))
    outputs = [torch.randn(2, 3, 8, 8, 8), torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 2, 2, 2)]
    ce = torch.nn.CrossEntropyLoss()
    got = train.DeepSupervisionLoss(ce)(outputs, target)
    want = (ce(outputs[0], target) + 0.5 * ce(outputs[1], target[:, ::2, ::2, ::2])
            + 0.25 * ce(outputs[2], target[:, ::4, ::4, ::4])) / 1.75
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    torch.testing.assert_close(train.DeepSupervisionLoss(ce)(outputs[0], target), ce(outputs[0], target))
    with pytest.raises(ValueError, match="DeepSupervisionLoss: 3 outputs but 2 weights"):
        train.DeepSupervisionLoss(ce, weights=[1.0, 0.5])(outputs, target)
    with pytest.raises(ValueError, match="does not divide"):
        train.DeepSupervisionLoss(ce)([outputs[0], torch.randn(2, 3, 3, 3, 3)], target)
