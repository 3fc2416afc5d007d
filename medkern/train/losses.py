"""Losses for imbalanced medical data: class weights, focal loss, soft Dice and Dice + CE.

Every loss takes raw ``logits`` of shape (N, C, *spatial) (no spatial dims for classification,
any number for 2D or 3D images) and a ``target`` in one of two forms:

* class indices of shape (N, *spatial), integer: a multiclass problem, scored with softmax over
  dim 1 (a single channel, C == 1, is one sigmoid score of class 1 and the indices are 0/1);
* the shape of ``logits``: binary or multilabel targets in [0, 1], each channel scored with its
  own sigmoid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._args import check_positive_int

REDUCTIONS = ("mean", "sum", "none")
WEIGHT_SCHEMES = ("inverse", "inverse_sqrt", "effective_number")


def _name(op: str) -> str:
    return f"medkern.train.{op}"


def _check_reduction(op: str, reduction) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{_name(op)}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def _is_multiclass(op: str, logits, target) -> bool:
    """Whether target holds class indices (else it has logits' shape); checks dtypes, shapes and range."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        got = logits.dtype if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TypeError(f"{_name(op)}: logits must be a floating-point tensor, got {got}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"{_name(op)}: target must be a torch.Tensor, got {type(target).__name__}")
    if logits.dim() < 2:
        raise ValueError(f"{_name(op)}: logits must have shape (N, C, *spatial), got {tuple(logits.shape)}")
    if target.shape == logits.shape:
        return False
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"{_name(op)}: target must have shape {tuple(logits.shape[:1] + logits.shape[2:])} "
                         f"(class indices) or logits' shape {tuple(logits.shape)} (binary targets), "
                         f"got {tuple(target.shape)}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"{_name(op)}: class-index target must be an integer tensor, got {target.dtype}")
    classes = max(logits.shape[1], 2)  # one channel scores class 1 of two
    if target.numel() and (target.min() < 0 or target.max() >= classes):
        raise ValueError(f"{_name(op)}: target must hold class indices in [0, {classes}), "
                         f"got values in [{int(target.min())}, {int(target.max())}]")
    return True


def _binary_form(logits: torch.Tensor, target: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """The target as float per-channel labels of logits' shape (a 0/1 index target of one channel)."""
    return (target.unsqueeze(1) if multiclass else target).to(logits.dtype)


def _check_class_weight(op: str, name: str, weight, logits: torch.Tensor) -> None:
    if weight is None:
        return
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        raise TypeError(f"{_name(op)}: {name} must be a floating-point tensor of one weight per class or None, "
                        f"got {weight.dtype if isinstance(weight, torch.Tensor) else type(weight).__name__}")
    if weight.shape != (logits.shape[1],):
        raise ValueError(f"{_name(op)}: {name} must have shape ({logits.shape[1]},) (one weight per class), "
                         f"got {tuple(weight.shape)}")


def class_weights(targets: torch.Tensor | None = None, num_classes: int | None = None, *,
                  counts: torch.Tensor | None = None, scheme: str = "inverse", beta: float = 0.999) -> torch.Tensor:
    """Per-class loss weights from class frequencies, normalized to a mean of 1.

    Give either ``targets`` (class indices, any shape) with ``num_classes``, or per-class
    ``counts``. Schemes: "inverse" 1/n, "inverse_sqrt" 1/sqrt(n), "effective_number"
    (1 - beta) / (1 - beta^n) (Cui et al. 2019, "Class-Balanced Loss Based on Effective Number
    of Samples"; beta in [0, 1)). A class with no samples raises ValueError (its weight would be
    infinite). Returns float32.
    """
    op = "class_weights"
    if (targets is None) == (counts is None):
        raise ValueError(f"{_name(op)}: give exactly one of targets (class indices) and counts")
    if targets is not None:
        check_positive_int(_name(op), "num_classes", num_classes)
        if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.dtype == torch.bool:
            raise TypeError(f"{_name(op)}: targets must be an integer tensor of class indices")
        if targets.numel() and (targets.min() < 0 or targets.max() >= num_classes):
            raise ValueError(f"{_name(op)}: targets must hold class indices in [0, {num_classes}), "
                             f"got values in [{int(targets.min())}, {int(targets.max())}]")
        counts = torch.bincount(targets.flatten(), minlength=num_classes)
    elif not isinstance(counts, torch.Tensor) or counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(f"{_name(op)}: counts must be a non-empty 1-D tensor of per-class counts")
    elif num_classes is not None and num_classes != counts.numel():
        raise ValueError(f"{_name(op)}: counts has {counts.numel()} entries, but num_classes is {num_classes}")
    counts = counts.double()
    if (counts <= 0).any():
        raise ValueError(f"{_name(op)}: every class needs a count > 0 (its weight would be infinite), "
                         f"got counts {counts.tolist()}")
    if scheme == "inverse":
        weights = 1 / counts
    elif scheme == "inverse_sqrt":
        weights = counts.rsqrt()
    elif scheme == "effective_number":
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
            raise ValueError(f"{_name(op)}: beta must be a float in [0, 1), got {beta!r}")
        weights = (1 - beta) / (1 - beta ** counts)
    else:
        raise ValueError(f"{_name(op)}: scheme must be one of {WEIGHT_SCHEMES}, got {scheme!r}")
    return (weights * (counts.numel() / weights.sum())).float()


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                           reduction: str = "mean") -> torch.Tensor:
    """``F.cross_entropy(logits, target, weight=weight, reduction=reduction)`` with its inputs
    checked: 'mean' is the weight-normalized mean, sum(w[y] * ce) / sum(w[y]).
    See ``class_weights`` for the weights."""
    op = "weighted_cross_entropy"
    if not _is_multiclass(op, logits, target) or logits.shape[1] < 2:
        raise ValueError(f"{_name(op)}: needs (N, C >= 2, *spatial) logits and (N, *spatial) class indices, "
                         f"got {tuple(logits.shape)} and {tuple(target.shape)}")
    _check_class_weight(op, "weight", weight, logits)
    _check_reduction(op, reduction)
    return F.cross_entropy(logits, target, weight=weight, reduction=reduction)


def _focusing(one_minus_pt: torch.Tensor, gamma: float) -> torch.Tensor:
    # Kept above 0 so that 0 < gamma < 1 has a finite gradient where a sample is certain.
    return one_minus_pt.clamp_min(torch.finfo(one_minus_pt.dtype).tiny) ** gamma


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               alpha: torch.Tensor | float | None = None, reduction: str = "mean") -> torch.Tensor:
    """Focal loss (Lin et al. 2017): -alpha_t (1 - p_t)^gamma log p_t.

    Multiclass (class-index target): p_t is the softmax probability of the true class and
    ``alpha`` an optional (C,) tensor of class weights; 'mean' divides by the sum of alpha_t, as
    ``F.cross_entropy(weight=alpha)`` does, so gamma = 0 is exactly (weighted) cross-entropy.
    Binary / multilabel (target of logits' shape, in [0, 1]): p_t = p t + (1 - p)(1 - t) with
    p = sigmoid(logits), and ``alpha`` a float in [0, 1] weighting positives (alpha) against
    negatives (1 - alpha); 'mean' is the plain mean, so gamma = 0 is
    ``F.binary_cross_entropy_with_logits``. ``reduction`` 'none' gives the per-element loss.
    """
    op = "focal_loss"
    multiclass = _is_multiclass(op, logits, target)
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma >= 0 or math.isinf(gamma):
        raise ValueError(f"{_name(op)}: gamma must be a finite float >= 0, got {gamma!r}")
    _check_reduction(op, reduction)
    if multiclass and logits.shape[1] > 1:
        _check_class_weight(op, "alpha", alpha, logits)
        log_pt = F.log_softmax(logits, 1).gather(1, target.unsqueeze(1)).squeeze(1)
        loss = -_focusing(-torch.expm1(log_pt), gamma) * log_pt
        if alpha is None:
            return _reduce(loss, reduction)
        alpha_t = alpha[target]
        if reduction == "mean":
            return (alpha_t * loss).sum() / alpha_t.sum()
        return _reduce(alpha_t * loss, reduction)
    if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float))):
        raise TypeError(f"{_name(op)}: with binary targets alpha must be a float in [0, 1] or None, "
                        f"got {type(alpha).__name__}")
    if alpha is not None and not 0 <= alpha <= 1:
        raise ValueError(f"{_name(op)}: with binary targets alpha must be a float in [0, 1] or None, got {alpha!r}")
    t = _binary_form(logits, target, multiclass)
    p = torch.sigmoid(logits)
    loss = F.binary_cross_entropy_with_logits(logits, t, reduction="none") * _focusing(p + t - 2 * p * t, gamma)
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return _reduce(loss.squeeze(1) if multiclass else loss, reduction)


def _spatial_sum(t: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) summed to (N, C); (N, C) as it is (``sum(())`` would sum everything)."""
    return t.reshape(t.shape[0], t.shape[1], -1).sum(2)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, include_background: bool = True,
              smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, reduction: str = "mean") -> torch.Tensor:
    """Soft Dice loss, 1 - (2 sum(p t) + smooth_nr) / (sum(p) + sum(t) + smooth_dr), per sample and
    class (sums over the spatial dims).

    p is softmax(logits) over the classes for a class-index target (one-hot), sigmoid(logits)
    for a target of logits' shape or a single channel. Without ``include_background`` class 0
    (channel 0) is left out. 'none' gives the (N, C) losses, 'mean' and 'sum' reduce them. The
    smooth terms keep a class empty in both prediction and target at loss 0.
    """
    op = "dice_loss"
    multiclass = _is_multiclass(op, logits, target)
    _check_reduction(op, reduction)
    if not include_background and logits.shape[1] < 2:
        raise ValueError(f"{_name(op)}: include_background=False needs at least 2 channels, got logits of "
                         f"shape {tuple(logits.shape)}")
    if multiclass and logits.shape[1] > 1:
        probs = torch.softmax(logits, 1)
        onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    else:
        probs, onehot = torch.sigmoid(logits), _binary_form(logits, target, multiclass)
    if not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    overlap = _spatial_sum(probs * onehot)
    sizes = _spatial_sum(probs) + _spatial_sum(onehot)
    return _reduce(1 - (2 * overlap + smooth_nr) / (sizes + smooth_dr), reduction)


def _cross_entropy(logits: torch.Tensor, target: torch.Tensor, multiclass: bool,
                   weight: torch.Tensor | None) -> torch.Tensor:
    """Softmax cross-entropy for class indices, per-channel binary cross-entropy otherwise (the
    activation dice_loss uses), with optional per-class weights."""
    if multiclass and logits.shape[1] > 1:
        return F.cross_entropy(logits, target, weight=weight)
    t = _binary_form(logits, target, multiclass)
    channel_weight = None if weight is None else weight.reshape((-1,) + (1,) * (logits.dim() - 2))
    return F.binary_cross_entropy_with_logits(logits, t, weight=channel_weight)


class FocalLoss(torch.nn.Module):
    """``focal_loss`` as a module; a tensor ``alpha`` is a buffer (it follows ``.to()``)."""

    def __init__(self, gamma: float = 2.0, alpha: torch.Tensor | float | None = None, reduction: str = "mean"):
        super().__init__()
        self.gamma, self.reduction = gamma, reduction
        if isinstance(alpha, torch.Tensor):
            self.register_buffer("alpha", alpha)
        else:
            self.alpha = alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, target, self.gamma, self.alpha, self.reduction)


class DiceLoss(torch.nn.Module):
    """``dice_loss`` as a module."""

    def __init__(self, include_background: bool = True, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                 reduction: str = "mean"):
        super().__init__()
        self.include_background, self.smooth_nr, self.smooth_dr = include_background, smooth_nr, smooth_dr
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_loss(logits, target, self.include_background, self.smooth_nr, self.smooth_dr, self.reduction)


class DiceCELoss(torch.nn.Module):
    """lambda_dice * dice_loss (mean) + lambda_ce * cross-entropy (mean).

    The cross-entropy matches the Dice activation: softmax cross-entropy for class indices
    (``F.cross_entropy(weight=ce_weight)``), per-channel binary cross-entropy with logits
    otherwise (``ce_weight`` then weights the channels). The Dice term alone follows
    ``include_background``, as in MONAI's DiceCELoss.
    """

    def __init__(self, lambda_dice: float = 1.0, lambda_ce: float = 1.0, ce_weight: torch.Tensor | None = None,
                 include_background: bool = True, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5):
        super().__init__()
        for name, value in (("lambda_dice", lambda_dice), ("lambda_ce", lambda_ce)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{_name('DiceCELoss')}: {name} must be a float >= 0, got {value!r}")
        self.lambda_dice, self.lambda_ce = lambda_dice, lambda_ce
        self.dice = DiceLoss(include_background, smooth_nr, smooth_dr)
        self.register_buffer("ce_weight", ce_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        multiclass = _is_multiclass("DiceCELoss", logits, target)
        _check_class_weight("DiceCELoss", "ce_weight", self.ce_weight, logits)
        dice = self.dice(logits, target)
        return self.lambda_dice * dice + self.lambda_ce * _cross_entropy(logits, target, multiclass, self.ce_weight)


class DeepSupervisionLoss(torch.nn.Module):
    """``loss`` summed over a deep-supervision list of outputs (highest resolution first), each
    against the target subsampled to its resolution (every k-th voxel: labels are not blended),
    with weights 1, 1/2, 1/4, ... normalized to sum to 1 (nnU-Net's choice, less its zero
    weight for the coarsest output). A single tensor output is passed to ``loss`` as it is."""

    def __init__(self, loss: torch.nn.Module, weights: list[float] | None = None):
        super().__init__()
        if weights is not None and (not weights or any(not w >= 0 for w in weights) or sum(weights) <= 0):
            raise ValueError(f"{_name('DeepSupervisionLoss')}: weights must be non-negative with a positive sum, "
                             f"got {weights!r}")
        self.loss, self.weights = loss, weights

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, target)
        weights = self.weights if self.weights is not None else [0.5 ** i for i in range(len(outputs))]
        if len(weights) != len(outputs):
            raise ValueError(f"{_name('DeepSupervisionLoss')}: {len(outputs)} outputs but {len(weights)} weights")
        spatial = target.shape[-(outputs[0].dim() - 2):] if outputs[0].dim() > 2 else ()
        total = 0
        for weight, output in zip(weights, outputs):
            steps = [size // out for size, out in zip(spatial, output.shape[2:])]
            if any(size != out * step for size, out, step in zip(spatial, output.shape[2:], steps)):
                raise ValueError(f"{_name('DeepSupervisionLoss')}: an output of spatial size {tuple(output.shape[2:])} "
                                 f"does not divide the target's {tuple(spatial)}")
            subsampled = target[(Ellipsis, *[slice(None, None, step) for step in steps])] if steps else target
            total = total + weight * self.loss(output, subsampled)
        return total / sum(weights)
