"""Classification and segmentation metrics on tensors, with accumulators for whole epochs.

Inputs
------
``target`` holds class indices: an integer (or bool) tensor of shape (N,) for classification or
(N, *spatial) for segmentation. ``preds`` is read by its shape next to ``target``:

* one dimension more than ``target``, (N, C, *spatial): scores over the classes in dim 1 (logits,
  probabilities or one-hot). C >= 2 is argmaxed; C == 1 is one score of class 1 per sample,
  thresholded like a binary score.
* the shape of ``target`` and floating point: binary scores, class 1 where ``score >= threshold``
  (threshold 0.5 suits probabilities; pass ``threshold=0.0`` for logits).
* the shape of ``target`` and integer or bool: predicted class indices.

``num_classes`` is C for class scores and 2 for binary scores; it must be given for class
indices (a batch need not contain every class). Every class in ``range(num_classes)`` is scored,
as scikit-learn does with ``labels=range(num_classes)``. Results are float64 tensors.

``average`` (as in scikit-learn): ``"binary"`` (the default) is the value of class 1 and needs
``num_classes == 2``; ``"macro"`` the plain mean over classes; ``"weighted"`` the mean weighted by
each class's support (its count in ``target``); ``"micro"`` the ratio of the counts summed over
classes; ``None`` the per-class values.

Degenerate cases, scikit-learn's values:

* a ratio whose denominator is 0 (precision with no predicted positives, sensitivity of a class
  absent from ``target``, ...) is ``zero_division``: 0.0 by default (sklearn's ``"warn"`` value,
  without the warning); 1.0 and NaN are accepted, and NaN values are left out of averages.
* ``balanced_accuracy`` is the mean sensitivity over the classes present in ``target``.
* ``auroc`` raises ValueError when a class has no positive or no negative samples (older
  scikit-learn raises too; 1.9 warns and returns NaN); with ``single_class="nan"`` that class's
  AUROC is NaN and averages leave it out.
* ``dice`` and ``iou`` of a class absent from both prediction and target are ``empty_score``
  (1.0 by default: nothing to find, nothing found); absent from only one of them, 0.

The accumulators (``ConfusionMatrix``, ``AUROC``) collect a batch at a time; an epoch's metric is
the metric on the concatenated data, not a mean of batch metrics.
"""

from __future__ import annotations

import math

import torch

AVERAGES = ("binary", "macro", "micro", "weighted", None)

# Each per-class metric as (numerator, denominator) of the class's tp, fp, fn, tn counts.
# Dice is F1 and IoU is the Jaccard index of the voxel counts.
_RATIOS = {
    "sensitivity": lambda tp, fp, fn, tn: (tp, tp + fn),
    "specificity": lambda tp, fp, fn, tn: (tn, tn + fp),
    "precision": lambda tp, fp, fn, tn: (tp, tp + fp),
    "f1": lambda tp, fp, fn, tn: (2 * tp, 2 * tp + fp + fn),
    "iou": lambda tp, fp, fn, tn: (tp, tp + fp + fn),
}


def _name(op: str) -> str:
    return f"medkern.train.{op}"


def _check_tensor(op: str, name: str, value) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{_name(op)}: {name} must be a torch.Tensor, got {type(value).__name__}")


def _check_class_indices(op: str, name: str, labels: torch.Tensor, num_classes: int) -> None:
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise ValueError(f"{_name(op)}: {name} must hold class indices in [0, {num_classes}), "
                         f"got values in [{low}, {high}]")


def _check_num_classes(op: str, num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{_name(op)}: num_classes must be an int >= 2, got {num_classes!r}")
    return num_classes


def _check_target(op: str, target) -> None:
    _check_tensor(op, "target", target)
    if target.is_floating_point() or target.is_complex():
        raise TypeError(f"{_name(op)}: target must hold class indices (an integer or bool tensor), got {target.dtype}")
    if target.dim() == 0 or target.numel() == 0:
        raise ValueError(f"{_name(op)}: target must have shape (N, *spatial) with N >= 1 and no empty "
                         f"dimension, got {tuple(target.shape)}")


def _class_labels(op: str, preds, target, num_classes, threshold: float):
    """(predicted class indices, target class indices, num_classes), the indices of target's shape."""
    _check_tensor(op, "preds", preds)
    _check_target(op, target)
    inferred = None  # the class count that preds' form implies, if any
    if preds.dim() == target.dim() + 1 and preds.shape[:1] + preds.shape[2:] == target.shape:
        scores = preds if preds.is_floating_point() else preds.float()
        if preds.shape[1] == 1:
            labels, inferred = (scores[:, 0] >= threshold).long(), 2
        else:
            labels, inferred = scores.argmax(1), preds.shape[1]
    elif preds.shape == target.shape:
        if preds.is_floating_point():
            labels, inferred = (preds >= threshold).long(), 2
        else:
            labels = preds.long()
    else:
        raise ValueError(f"{_name(op)}: preds must have target's shape {tuple(target.shape)} (class indices or "
                         f"binary scores) or (N, C, *spatial) = ({target.shape[0]}, C, "
                         f"{', '.join(map(str, target.shape[1:]))}) (class scores), got {tuple(preds.shape)}")
    if num_classes is None:
        if inferred is None:
            raise ValueError(f"{_name(op)}: num_classes must be given when preds are class indices")
        num_classes = inferred
    _check_num_classes(op, num_classes)
    if inferred is not None and inferred != num_classes:
        raise ValueError(f"{_name(op)}: preds of shape {tuple(preds.shape)} score {inferred} classes, "
                         f"but num_classes is {num_classes}")
    if inferred is None:
        _check_class_indices(op, "preds", labels, num_classes)
    _check_class_indices(op, "target", target, num_classes)
    return labels, target.long(), num_classes


def _count_confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     per_sample: bool = False) -> torch.Tensor:
    """Counts of (true class, predicted class) pairs: (C, C), or (N, C, C) one per sample."""
    size = num_classes * num_classes
    index = (target * num_classes + pred).reshape(target.shape[0], -1)
    if not per_sample:
        return torch.bincount(index.flatten(), minlength=size).reshape(num_classes, num_classes)
    # Each sample's pairs counted in a block of its own.
    index = index + size * torch.arange(target.shape[0], device=target.device).unsqueeze(1)
    return torch.bincount(index.flatten(), minlength=target.shape[0] * size).reshape(-1, num_classes, num_classes)


def _confusion(op: str, preds, target, num_classes, threshold: float, per_sample: bool = False) -> torch.Tensor:
    pred, target, num_classes = _class_labels(op, preds, target, num_classes, threshold)
    return _count_confusion(pred, target, num_classes, per_sample)


def _class_counts(matrix: torch.Tensor):
    """Per-class true positives, false positives, false negatives and true negatives of (..., C, C)."""
    tp = matrix.diagonal(dim1=-2, dim2=-1)
    fp = matrix.sum(-2) - tp  # predicted as the class, truly another
    fn = matrix.sum(-1) - tp  # truly the class, predicted as another
    tn = matrix.sum((-2, -1)).unsqueeze(-1) - tp - fp - fn
    return tp, fp, fn, tn


def _divide(numerator: torch.Tensor, denominator: torch.Tensor, zero_division: float) -> torch.Tensor:
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1),
                       torch.full_like(numerator, zero_division))


def _nan_average(scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted mean of the scores that are not NaN (NaN if none is)."""
    weights = weights.double() * ~scores.isnan()
    total = weights.sum()
    if total == 0:
        return torch.tensor(math.nan, dtype=torch.float64, device=scores.device)
    return (scores.nan_to_num() * weights).sum() / total


def _check_average(op: str, average, num_classes: int, allowed=AVERAGES) -> None:
    if average not in allowed:
        raise ValueError(f"{_name(op)}: average must be one of {allowed}, got {average!r}")
    if average == "binary" and num_classes != 2:
        raise ValueError(f"{_name(op)}: average='binary' needs num_classes == 2, got {num_classes}; "
                         "choose 'macro', 'micro', 'weighted' or None")


def _check_score(op: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{_name(op)}: {name} must be a float (such as 0.0, 1.0 or nan), got {type(value).__name__}")
    return float(value)


def _per_class_metric(op: str, ratio: str, matrix: torch.Tensor, average, zero_division) -> torch.Tensor:
    _check_average(op, average, matrix.shape[-1])
    zero_division = _check_score(op, "zero_division", zero_division)
    counts = _class_counts(matrix)
    if average == "micro":
        return _divide(*_RATIOS[ratio](*(c.sum() for c in counts)), zero_division)
    scores = _divide(*_RATIOS[ratio](*counts), zero_division)
    if average is None:
        return scores
    if average == "binary":
        return scores[1]
    tp, _, fn, _ = counts
    return _nan_average(scores, tp + fn if average == "weighted" else torch.ones_like(scores))


def _accuracy(matrix: torch.Tensor) -> torch.Tensor:
    return matrix.diagonal().sum().double() / matrix.sum()


def _balanced_accuracy(matrix: torch.Tensor) -> torch.Tensor:
    # NaN for the classes absent from target, which the mean leaves out (as sklearn does).
    return _per_class_metric("balanced_accuracy", "sensitivity", matrix, "macro", math.nan)


def _overlap(op: str, ratio: str, matrix: torch.Tensor, include_background: bool, empty_score) -> torch.Tensor:
    scores = _divide(*_RATIOS[ratio](*_class_counts(matrix)), _check_score(op, "empty_score", empty_score))
    return scores if include_background else scores[..., 1:]


def confusion_matrix(preds: torch.Tensor, target: torch.Tensor, num_classes: int | None = None,
                     threshold: float = 0.5) -> torch.Tensor:
    """The (C, C) int64 count of samples of true class i (row) predicted as class j (column), as
    sklearn's ``confusion_matrix`` with ``labels=range(num_classes)``."""
    return _confusion("confusion_matrix", preds, target, num_classes, threshold)


def accuracy(preds: torch.Tensor, target: torch.Tensor, num_classes: int | None = None,
             threshold: float = 0.5) -> torch.Tensor:
    """The fraction of samples predicted correctly."""
    return _accuracy(_confusion("accuracy", preds, target, num_classes, threshold))


def balanced_accuracy(preds: torch.Tensor, target: torch.Tensor, num_classes: int | None = None,
                      threshold: float = 0.5) -> torch.Tensor:
    """The mean sensitivity over the classes present in ``target`` (sklearn's balanced_accuracy_score)."""
    return _balanced_accuracy(_confusion("balanced_accuracy", preds, target, num_classes, threshold))


def sensitivity(preds: torch.Tensor, target: torch.Tensor, num_classes: int | None = None, average="binary",
                zero_division: float = 0.0, threshold: float = 0.5) -> torch.Tensor:
    """TP / (TP + FN), also called recall (sklearn's recall_score)."""
    matrix = _confusion("sensitivity", preds, target, num_classes, threshold)
    return _per_class_metric("sensitivity", "sensitivity", matrix, average, zero_division)


recall = sensitivity


def specificity(preds: torch.Tensor, target: torch.Tensor, num_classes: int | None = None, average="binary",
                zero_division: float = 0.0, threshold: float = 0.5) -> torch.Tensor:
    """TN / (TN + FP): for a class, the sensitivity of telling the other classes from it."""
    matrix = _confusion("specificity", preds, target, num_classes, threshold)
    return _per_class_metric("specificity", "specificity", matrix, average, zero_division)


def precision(preds: torch.Tensor, target: torch.Tensor, num_classes: int | None = None, average="binary",
              zero_division: float = 0.0, threshold: float = 0.5) -> torch.Tensor:
    """TP / (TP + FP) (sklearn's precision_score)."""
    matrix = _confusion("precision", preds, target, num_classes, threshold)
    return _per_class_metric("precision", "precision", matrix, average, zero_division)


def f1(preds: torch.Tensor, target: torch.Tensor, num_classes: int | None = None, average="binary",
       zero_division: float = 0.0, threshold: float = 0.5) -> torch.Tensor:
    """2 TP / (2 TP + FP + FN), the harmonic mean of precision and sensitivity (sklearn's f1_score)."""
    matrix = _confusion("f1", preds, target, num_classes, threshold)
    return _per_class_metric("f1", "f1", matrix, average, zero_division)


def dice(preds: torch.Tensor, target: torch.Tensor, num_classes: int | None = None, include_background: bool = True,
         empty_score: float = 1.0, per_sample: bool = False, threshold: float = 0.5) -> torch.Tensor:
    """Per-class Dice, 2 |P & T| / (|P| + |T|), of a segmentation (sizes in voxels).

    Returns (C,) from the counts over the whole batch, or (N, C) one row per sample if
    ``per_sample``; without class 0 if not ``include_background``. A class absent from both
    prediction and target scores ``empty_score`` (1.0; NaN leaves it for ``nanmean``)."""
    matrix = _confusion("dice", preds, target, num_classes, threshold, per_sample)
    return _overlap("dice", "f1", matrix, include_background, empty_score)


def iou(preds: torch.Tensor, target: torch.Tensor, num_classes: int | None = None, include_background: bool = True,
        empty_score: float = 1.0, per_sample: bool = False, threshold: float = 0.5) -> torch.Tensor:
    """Per-class intersection over union (Jaccard), |P & T| / |P | T|; arguments as for ``dice``."""
    matrix = _confusion("iou", preds, target, num_classes, threshold, per_sample)
    return _overlap("iou", "iou", matrix, include_background, empty_score)


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of the values, tied values sharing the mean of their ranks."""
    order = values.argsort()
    _, group, counts = torch.unique_consecutive(values[order], return_inverse=True, return_counts=True)
    group_rank = counts.cumsum(0) - (counts - 1) / 2  # the mean of a tie group's ranks
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order] = group_rank[group].double()
    return ranks


def _binary_auroc(op: str, scores: torch.Tensor, positive: torch.Tensor, single_class: str, where: str = ""):
    """P(score of a positive > score of a negative) + P(tie) / 2: the Mann-Whitney U statistic."""
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        if single_class == "raise":
            raise ValueError(f"{_name(op)}: AUROC is undefined with only one class in target{where} ({n_pos} "
                             f"positive, {n_neg} negative samples); pass single_class='nan' to get NaN instead")
        return torch.tensor(math.nan, dtype=torch.float64, device=scores.device)
    rank_sum = _average_ranks(scores.double())[positive].sum()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auroc(preds: torch.Tensor, target: torch.Tensor, num_classes: int | None = None, average="macro",
          single_class: str = "raise") -> torch.Tensor:
    """Area under the ROC curve (sklearn's roc_auc_score).

    Binary: ``preds`` of target's shape holds scores of class 1 (probabilities or logits: only
    their order counts), ``target`` 0/1. Multiclass: ``preds`` (N, C) holds class probabilities
    (softmax of the logits; unlike one binary score, the OvR AUROC of raw logits differs) and each
    class is scored one-vs-rest; ``average`` is "macro", "weighted" (by support) or None
    (per-class). Ties count half. A class with no positive or no negative sample raises ValueError,
    or gives NaN (left out of the average) with ``single_class="nan"``.
    """
    op = "auroc"
    _check_tensor(op, "preds", preds)
    _check_target(op, target)
    if single_class not in ("raise", "nan"):
        raise ValueError(f"{_name(op)}: single_class must be 'raise' or 'nan', got {single_class!r}")
    if not preds.is_floating_point():
        raise TypeError(f"{_name(op)}: preds must be floating-point scores, got {preds.dtype}")
    if preds.isnan().any():
        raise ValueError(f"{_name(op)}: preds must not contain NaN")
    if preds.shape == target.shape or (preds.dim() == 2 and preds.shape[1] == 1 and preds.shape[0] == target.numel()):
        if num_classes not in (None, 2):
            raise ValueError(f"{_name(op)}: binary scores (preds of target's shape) need num_classes None or 2, "
                             f"got {num_classes!r}")
        _check_class_indices(op, "target", target, 2)
        return _binary_auroc(op, preds.flatten(), target.flatten() == 1, single_class)
    if target.dim() != 1 or preds.dim() != 2 or preds.shape[0] != target.shape[0]:
        raise ValueError(f"{_name(op)}: preds must have target's shape {tuple(target.shape)} (binary scores) or "
                         f"(N, C) = ({target.shape[0]}, C) (class probabilities), got {tuple(preds.shape)}")
    classes = preds.shape[1]
    if num_classes is not None and num_classes != classes:
        raise ValueError(f"{_name(op)}: preds score {classes} classes, but num_classes is {num_classes}")
    _check_average(op, average, classes, allowed=("macro", "weighted", None))
    _check_class_indices(op, "target", target, classes)
    scores = torch.stack([_binary_auroc(op, preds[:, c], target == c, single_class, f" for class {c} one-vs-rest")
                          for c in range(classes)])
    if average is None:
        return scores
    support = torch.bincount(target, minlength=classes)
    return _nan_average(scores, support if average == "weighted" else torch.ones_like(scores))


def roc_curve(scores: torch.Tensor, target: torch.Tensor):
    """Binary ROC curve: (false-positive rates, true-positive rates, thresholds), one point per
    distinct score from the highest down, after a first point (0, 0) at threshold +inf (as
    sklearn's ``roc_curve(drop_intermediate=False)``). ``target`` is 0/1, ``scores`` of its shape."""
    op = "roc_curve"
    _check_tensor(op, "scores", scores)
    _check_target(op, target)
    if scores.shape != target.shape or not scores.is_floating_point():
        raise ValueError(f"{_name(op)}: scores must be floating-point with target's shape {tuple(target.shape)}, "
                         f"got {scores.dtype} {tuple(scores.shape)}")
    _check_class_indices(op, "target", target, 2)
    order = scores.flatten().double().argsort(descending=True)
    ordered, positive = scores.flatten().double()[order], target.flatten()[order].bool()
    last_of_tie = torch.ones_like(ordered, dtype=torch.bool)
    last_of_tie[:-1] = ordered[1:] != ordered[:-1]
    tp = positive.cumsum(0)[last_of_tie].double()
    fp = (~positive).cumsum(0)[last_of_tie].double()
    start = torch.zeros(1, dtype=torch.float64, device=scores.device)
    tpr = torch.cat([start, tp]) / tp[-1] if tp[-1] > 0 else torch.full((len(tp) + 1,), math.nan, dtype=torch.float64)
    fpr = torch.cat([start, fp]) / fp[-1] if fp[-1] > 0 else torch.full((len(fp) + 1,), math.nan, dtype=torch.float64)
    thresholds = torch.cat([torch.tensor([math.inf], dtype=torch.float64, device=scores.device), ordered[last_of_tie]])
    return fpr, tpr, thresholds


class ConfusionMatrix:
    """Accumulates the confusion matrix of batches (classification or segmentation voxels); its
    metrics equal those of the concatenated batches. Inputs as in the functions above.

    Example::

        cm = ConfusionMatrix(num_classes=3)
        for logits, y in loader:
            cm.update(logits, y)
        cm.f1(average="macro"), cm.dice(include_background=False)
    """

    def __init__(self, num_classes: int, threshold: float = 0.5):
        self.num_classes = _check_num_classes("ConfusionMatrix", num_classes)
        self.threshold = threshold
        self.matrix: torch.Tensor | None = None

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        batch = _confusion("ConfusionMatrix.update", preds, target, self.num_classes, self.threshold)
        self.matrix = batch if self.matrix is None else self.matrix + batch.to(self.matrix.device)

    def compute(self) -> torch.Tensor:
        """The (C, C) counts so far: rows true classes, columns predicted classes."""
        if self.matrix is None:
            raise ValueError(f"{_name('ConfusionMatrix.compute')}: no batch yet; call update(preds, target) first")
        return self.matrix.clone()

    def reset(self) -> None:
        self.matrix = None

    def accuracy(self) -> torch.Tensor:
        return _accuracy(self.compute())

    def balanced_accuracy(self) -> torch.Tensor:
        return _balanced_accuracy(self.compute())

    def sensitivity(self, average="binary", zero_division: float = 0.0) -> torch.Tensor:
        return _per_class_metric("ConfusionMatrix.sensitivity", "sensitivity", self.compute(), average, zero_division)

    recall = sensitivity

    def specificity(self, average="binary", zero_division: float = 0.0) -> torch.Tensor:
        return _per_class_metric("ConfusionMatrix.specificity", "specificity", self.compute(), average, zero_division)

    def precision(self, average="binary", zero_division: float = 0.0) -> torch.Tensor:
        return _per_class_metric("ConfusionMatrix.precision", "precision", self.compute(), average, zero_division)

    def f1(self, average="binary", zero_division: float = 0.0) -> torch.Tensor:
        return _per_class_metric("ConfusionMatrix.f1", "f1", self.compute(), average, zero_division)

    def dice(self, include_background: bool = True, empty_score: float = 1.0) -> torch.Tensor:
        """Per-class Dice from the voxel counts of all batches (the dataset's global Dice)."""
        return _overlap("ConfusionMatrix.dice", "f1", self.compute(), include_background, empty_score)

    def iou(self, include_background: bool = True, empty_score: float = 1.0) -> torch.Tensor:
        return _overlap("ConfusionMatrix.iou", "iou", self.compute(), include_background, empty_score)


class AUROC:
    """Keeps every batch's scores and targets; ``compute()`` is ``auroc`` on all of them."""

    def __init__(self, num_classes: int | None = None, average="macro", single_class: str = "raise"):
        self.num_classes, self.average, self.single_class = num_classes, average, single_class
        self.reset()

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        _check_tensor("AUROC.update", "preds", preds)
        _check_target("AUROC.update", target)
        self.preds.append(preds.detach())
        self.targets.append(target.detach())

    def compute(self) -> torch.Tensor:
        if not self.preds:
            raise ValueError(f"{_name('AUROC.compute')}: no batch yet; call update(preds, target) first")
        return auroc(torch.cat(self.preds), torch.cat(self.targets), self.num_classes, self.average, self.single_class)

    def reset(self) -> None:
        self.preds: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
