"""medkern.train.metrics against scikit-learn on random data (binary and multiclass, every average),
degenerate cases, the epoch accumulators, and Dice/IoU against a direct numpy count in 3D."""

import math
import warnings

import numpy as np
import pytest
import torch

from medkern import train

skm = pytest.importorskip("sklearn.metrics")

AVERAGES = ["macro", "micro", "weighted", None]
SKLEARN_RATIOS = {"precision": skm.precision_score, "sensitivity": skm.recall_score, "f1": skm.f1_score}


def _sklearn(fn, *args, **kwargs):
    """An sklearn metric with its UndefinedMetricWarning silenced (its value is what is compared)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _specificity_reference(y_true, y_pred, num_classes, average):
    """TN / (TN + FP) from sklearn's per-class (one-vs-rest) confusion matrices."""
    mcm = skm.multilabel_confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))
    tn, fp = mcm[:, 0, 0], mcm[:, 0, 1]
    per_class = np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), 0.0)
    if average is None:
        return per_class
    if average == "binary":
        return per_class[1]
    if average == "micro":
        return tn.sum() / (tn.sum() + fp.sum())
    support = np.bincount(y_true, minlength=num_classes)
    return np.average(per_class, weights=support if average == "weighted" else None)


def _random_case(seed, num_classes, n=97):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, num_classes, generator=g)
    # Bias toward the truth so that scores are neither all right nor all wrong.
    target = torch.randint(0, num_classes, (n,), generator=g)
    logits[torch.arange(n), target] += 0.7
    return logits, target


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("num_classes", [2, 4])
def test_per_class_metrics_match_sklearn(seed, num_classes):
    logits, target = _random_case(seed, num_classes)
    y_true, y_pred = target.numpy(), logits.argmax(1).numpy()
    labels = list(range(num_classes))
    averages = AVERAGES + (["binary"] if num_classes == 2 else [])
    for average in averages:
        for name, reference in SKLEARN_RATIOS.items():
            want = _sklearn(reference, y_true, y_pred, labels=labels, average=average)
            got = getattr(train, name)(logits, target, average=average)
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, err_msg=f"{name} average={average}")
        got = train.specificity(logits, target, average=average)
        np.testing.assert_allclose(got.numpy(), _specificity_reference(y_true, y_pred, num_classes, average),
                                   rtol=1e-12, err_msg=f"specificity average={average}")
    np.testing.assert_allclose(train.accuracy(logits, target).item(), skm.accuracy_score(y_true, y_pred))
    np.testing.assert_allclose(train.balanced_accuracy(logits, target).item(),
                               skm.balanced_accuracy_score(y_true, y_pred), rtol=1e-12)
    np.testing.assert_array_equal(train.confusion_matrix(logits, target).numpy(),
                                  skm.confusion_matrix(y_true, y_pred, labels=labels))


def test_every_prediction_form_gives_the_same_labels():
    """Logits, probabilities, class indices and (for two classes) thresholded scores agree."""
    logits, target = _random_case(3, 2)
    indices = logits.argmax(1)
    want = train.f1(indices, target, num_classes=2)
    torch.testing.assert_close(train.f1(logits, target), want)
    torch.testing.assert_close(train.f1(logits.softmax(1), target), want)
    score = logits.softmax(1)[:, 1]
    torch.testing.assert_close(train.f1(score, target), want)  # probability of class 1, threshold 0.5
    torch.testing.assert_close(train.f1(score.unsqueeze(1), target), want)  # one channel
    margin = logits[:, 1] - logits[:, 0]
    torch.testing.assert_close(train.f1(margin, target, threshold=0.0), want)  # a logit, threshold 0
    torch.testing.assert_close(train.f1(indices.bool(), target.bool(), num_classes=2), want)


def test_binary_threshold_is_inclusive_and_matches_sklearn():
    target = torch.tensor([0, 1, 1, 0, 1, 0])
    scores = torch.tensor([0.5, 0.5, 0.49, 0.1, 0.9, 0.7])
    y_pred = (scores.numpy() >= 0.5).astype(int)
    assert train.precision(scores, target).item() == pytest.approx(skm.precision_score(target.numpy(), y_pred))
    assert train.sensitivity(scores, target).item() == pytest.approx(skm.recall_score(target.numpy(), y_pred))


@pytest.mark.parametrize("zero_division", [0.0, 1.0, math.nan])
@pytest.mark.parametrize("average", AVERAGES + ["binary"])
def test_no_predicted_positives_follows_sklearn_zero_division(zero_division, average):
    """Class 1 is never predicted, so its precision is 0/0: the value, and how averages treat it,
    follow sklearn for each zero_division."""
    target = torch.tensor([0, 1, 1, 0, 1])
    preds = torch.zeros(5, dtype=torch.long)
    sk_zero = "warn" if zero_division == 0.0 else zero_division  # sklearn's default gives 0
    for name, reference in SKLEARN_RATIOS.items():
        want = _sklearn(reference, target.numpy(), preds.numpy(), labels=[0, 1], average=average,
                        zero_division=sk_zero)
        got = getattr(train, name)(preds, target, num_classes=2, average=average, zero_division=zero_division)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, err_msg=f"{name} average={average}")
    assert train.precision(preds, target, num_classes=2).item() == 0.0


def test_class_absent_from_both_counts_in_macro_as_sklearn_labels_does():
    target = torch.tensor([0, 1, 1, 0])
    preds = torch.tensor([0, 1, 0, 0])
    for name, reference in SKLEARN_RATIOS.items():
        want = _sklearn(reference, target.numpy(), preds.numpy(), labels=[0, 1, 2], average="macro")
        got = getattr(train, name)(preds, target, num_classes=3, average="macro")
        assert got.item() == pytest.approx(want, rel=1e-12), name
    # balanced accuracy leaves out classes absent from the target, as sklearn does
    assert train.balanced_accuracy(preds, target, num_classes=3).item() == pytest.approx(
        skm.balanced_accuracy_score(target.numpy(), preds.numpy()))


def test_one_class_in_target():
    target = torch.ones(6, dtype=torch.long)
    preds = torch.tensor([1, 1, 0, 1, 0, 1])
    assert train.sensitivity(preds, target, num_classes=2).item() == pytest.approx(4 / 6)
    assert train.specificity(preds, target, num_classes=2).item() == 0.0  # no negatives: 0/0 -> zero_division
    assert math.isnan(train.specificity(preds, target, num_classes=2, zero_division=math.nan).item())
    want = _sklearn(skm.balanced_accuracy_score, target.numpy(), preds.numpy())
    assert train.balanced_accuracy(preds, target, num_classes=2).item() == pytest.approx(want)
    assert want == pytest.approx(4 / 6)


@pytest.mark.parametrize("num_classes", [2, 3])
def test_all_correct_and_all_wrong(num_classes):
    target = torch.arange(12) % num_classes
    right, wrong = target.clone(), (target + 1) % num_classes
    average = "binary" if num_classes == 2 else "macro"
    for name in ["precision", "sensitivity", "specificity", "f1"]:
        metric = getattr(train, name)
        assert metric(right, target, num_classes=num_classes, average=average).item() == 1.0, name
    for name in ["precision", "sensitivity", "f1"]:
        metric = getattr(train, name)
        assert metric(wrong, target, num_classes=num_classes, average=average).item() == 0.0, name
    assert train.accuracy(right, target, num_classes=num_classes).item() == 1.0
    assert train.accuracy(wrong, target, num_classes=num_classes).item() == 0.0
    assert train.balanced_accuracy(wrong, target, num_classes=num_classes).item() == 0.0
    # With two classes every wrong answer is a false positive of the other class: specificity 0.
    want_spec = 0.0 if num_classes == 2 else 0.5
    assert train.specificity(wrong, target, num_classes=num_classes, average=average).item() == want_spec


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_auroc_matches_sklearn_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 2, (200,), generator=g)
    scores = (torch.rand(200, generator=g, dtype=torch.float64) + 0.3 * target).round(decimals=1)  # many ties
    want = skm.roc_auc_score(target.numpy(), scores.numpy())
    assert train.auroc(scores, target).item() == pytest.approx(want, rel=1e-12)
    assert train.auroc(scores.unsqueeze(1), target).item() == pytest.approx(want, rel=1e-12)
    # only the order counts: a monotone map (logit) leaves it unchanged
    logit = torch.logit(scores.clamp(0.01, 0.99) / 1.5)
    assert train.auroc(logit, target).item() == pytest.approx(
        skm.roc_auc_score(target.numpy(), logit.numpy()), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_roc_curve_matches_sklearn_and_its_area_is_auroc(seed):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 2, (120,), generator=g)
    scores = (torch.rand(120, generator=g, dtype=torch.float64) + 0.4 * target).round(decimals=1)  # ties
    fpr, tpr, thresholds = train.roc_curve(scores, target)
    want_fpr, want_tpr, want_thresholds = skm.roc_curve(target.numpy(), scores.numpy(), drop_intermediate=False)
    torch.testing.assert_close(fpr, torch.from_numpy(want_fpr), rtol=0, atol=1e-15)
    torch.testing.assert_close(tpr, torch.from_numpy(want_tpr), rtol=0, atol=1e-15)
    torch.testing.assert_close(thresholds, torch.from_numpy(want_thresholds), rtol=0, atol=0)
    assert torch.trapezoid(tpr, fpr).item() == pytest.approx(train.auroc(scores, target).item(), rel=1e-12)
    with pytest.raises(ValueError, match="medkern.train.roc_curve: scores must be floating-point"):
        train.roc_curve(target, target)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("num_classes", [3, 5])
def test_multiclass_auroc_matches_sklearn_ovr(seed, num_classes):
    logits, target = _random_case(seed, num_classes, n=150)
    probs = logits.double().softmax(1)
    for average in ["macro", "weighted"]:
        want = skm.roc_auc_score(target.numpy(), probs.numpy(), multi_class="ovr", average=average)
        assert train.auroc(probs, target, average=average).item() == pytest.approx(want, rel=1e-12)
    per_class = [skm.roc_auc_score((target == c).numpy(), probs[:, c].numpy()) for c in range(num_classes)]
    np.testing.assert_allclose(train.auroc(probs, target, average=None).numpy(), per_class, rtol=1e-12)


def test_auroc_with_one_class_raises_or_gives_nan():
    target = torch.ones(5, dtype=torch.long)
    scores = torch.rand(5)
    with pytest.raises(ValueError, match=r"medkern.train.auroc: AUROC is undefined with only one class in target "
                                         r"\(5 positive, 0 negative samples\); pass single_class='nan'"):
        train.auroc(scores, target)
    assert math.isnan(train.auroc(scores, target, single_class="nan").item())

    probs = torch.rand(6, 3).softmax(1)
    target = torch.tensor([0, 1, 0, 1, 1, 0])  # no sample of class 2
    with pytest.raises(ValueError, match="AUROC is undefined with only one class in target for class 2 one-vs-rest"):
        train.auroc(probs, target)
    per_class = train.auroc(probs, target, average=None, single_class="nan")
    assert math.isnan(per_class[2].item())
    present = [skm.roc_auc_score((target == c).numpy(), probs[:, c].numpy()) for c in range(2)]
    assert train.auroc(probs, target, single_class="nan").item() == pytest.approx(np.mean(present), rel=1e-12)


def _batches(*tensors, sizes=(10, 1, 33, 20)):
    start = 0
    for size in sizes:
        yield tuple(t[start:start + size] for t in tensors)
        start += size


def test_confusion_matrix_accumulator_equals_the_metric_on_concatenated_data():
    logits, target = _random_case(7, 3, n=64)
    acc = train.ConfusionMatrix(num_classes=3)
    for batch_logits, batch_target in _batches(logits, target):
        acc.update(batch_logits, batch_target)
    torch.testing.assert_close(acc.compute(), train.confusion_matrix(logits, target))
    torch.testing.assert_close(acc.accuracy(), train.accuracy(logits, target))
    torch.testing.assert_close(acc.balanced_accuracy(), train.balanced_accuracy(logits, target))
    for name in ["sensitivity", "recall", "specificity", "precision", "f1"]:
        for average in AVERAGES:
            torch.testing.assert_close(getattr(acc, name)(average=average),
                                       getattr(train, name)(logits, target, average=average))
    torch.testing.assert_close(acc.dice(include_background=False), train.dice(logits, target)[1:])
    torch.testing.assert_close(acc.iou(), train.iou(logits, target))
    assert acc.compute().sum().item() == 64
    acc.reset()
    with pytest.raises(ValueError, match=r"medkern.train.ConfusionMatrix.compute: no batch yet"):
        acc.compute()
    acc.update(logits[:5], target[:5])
    torch.testing.assert_close(acc.compute(), train.confusion_matrix(logits[:5], target[:5]))


def test_auroc_accumulator_equals_auroc_on_concatenated_data():
    logits, target = _random_case(8, 4, n=64)
    probs = logits.softmax(1)
    acc = train.AUROC(average="weighted")
    for batch_probs, batch_target in _batches(probs, target, sizes=(20, 24, 20)):
        acc.update(batch_probs, batch_target)
    want = skm.roc_auc_score(target.numpy(), probs.numpy(), multi_class="ovr", average="weighted")
    assert acc.compute().item() == pytest.approx(want, rel=1e-6)
    acc.reset()
    with pytest.raises(ValueError, match=r"medkern.train.AUROC.compute: no batch yet"):
        acc.compute()


def _numpy_overlap(pred, target, num_classes, axes):
    """Per-class (intersection, |P|, |T|) counted over the given axes."""
    inter = np.stack([((pred == c) & (target == c)).sum(axes) for c in range(num_classes)], -1)
    sizes_p = np.stack([(pred == c).sum(axes) for c in range(num_classes)], -1)
    sizes_t = np.stack([(target == c).sum(axes) for c in range(num_classes)], -1)
    return inter, sizes_p, sizes_t


@pytest.mark.parametrize("seed", [0, 1])
def test_3d_dice_and_iou_match_a_direct_count(seed):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 4, (3, 5, 6, 7), generator=g)
    logits = torch.randn(3, 4, 5, 6, 7, generator=g) + 1.5 * torch.nn.functional.one_hot(target, 4).movedim(-1, 1)
    pred = logits.argmax(1).numpy()
    for per_sample, axes in [(False, (0, 1, 2, 3)), (True, (1, 2, 3))]:
        inter, sp, st = _numpy_overlap(pred, target.numpy(), 4, axes)
        got_dice = train.dice(logits, target, per_sample=per_sample)
        got_iou = train.iou(logits, target, per_sample=per_sample)
        np.testing.assert_allclose(got_dice.numpy(), 2 * inter / (sp + st), rtol=1e-12)
        np.testing.assert_allclose(got_iou.numpy(), inter / (sp + st - inter), rtol=1e-12)
        np.testing.assert_allclose(train.dice(logits, target, include_background=False, per_sample=per_sample),
                                   (2 * inter / (sp + st))[..., 1:], rtol=1e-12)
    # class indices and one-hot predictions give the same
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(pred), 4).movedim(-1, 1)
    torch.testing.assert_close(train.dice(one_hot, target), train.dice(logits, target))
    torch.testing.assert_close(train.dice(torch.from_numpy(pred), target, num_classes=4), train.dice(logits, target))


def test_dice_of_empty_masks():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :2, :2] = 1
    pred = target.clone()
    # class 2 absent from both: empty_score; class 1 perfect
    assert train.dice(pred, target, num_classes=3).tolist() == [1.0, 1.0, 1.0]
    got = train.iou(pred, target, num_classes=3, empty_score=math.nan)
    assert got[:2].tolist() == [1.0, 1.0] and math.isnan(got[2].item())
    # class 1 present only in the target (missed): 0; class 2 present only in the prediction: 0
    pred = torch.zeros_like(target)
    pred[0, 3, 3] = 2
    got = train.dice(pred, target, num_classes=3)
    assert got[1].item() == 0.0 and got[2].item() == 0.0
    assert got[0].item() == pytest.approx(2 * 11 / (15 + 12))
    # per sample: a sample empty in both scores empty_score, whatever the other samples hold
    target2 = torch.stack([target[0], torch.zeros(4, 4, dtype=torch.long)])
    per_sample = train.dice(target2, target2, num_classes=2, per_sample=True, empty_score=0.5)
    torch.testing.assert_close(per_sample, torch.tensor([[1.0, 1.0], [1.0, 0.5]], dtype=torch.float64))


def test_binary_segmentation_from_one_channel_probabilities():
    g = torch.Generator().manual_seed(4)
    target = torch.randint(0, 2, (2, 8, 8), generator=g)
    probs = (0.6 * target + 0.7 * torch.rand(2, 8, 8, generator=g)).clamp(max=1).unsqueeze(1)
    pred = (probs[:, 0] >= 0.5).numpy()
    inter, sp, st = _numpy_overlap(pred, target.numpy(), 2, (0, 1, 2))
    np.testing.assert_allclose(train.dice(probs, target, include_background=False).numpy(),
                               (2 * inter / (sp + st))[1:], rtol=1e-12)


def test_bad_inputs_name_the_function_and_argument():
    logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    with pytest.raises(ValueError, match=r"medkern.train.precision: average='binary' needs num_classes == 2, got 3"):
        train.precision(logits, target)
    with pytest.raises(ValueError, match=r"medkern.train.f1: average must be one of"):
        train.f1(logits, target, average="samples")
    with pytest.raises(ValueError, match=r"medkern.train.accuracy: preds must have target's shape \(4,\)"):
        train.accuracy(torch.randn(5, 3), target)
    with pytest.raises(TypeError, match=r"medkern.train.accuracy: target must hold class indices"):
        train.accuracy(logits, target.float())
    with pytest.raises(ValueError, match=r"medkern.train.dice: num_classes must be given when preds are class"):
        train.dice(target, target)
    with pytest.raises(ValueError, match=r"medkern.train.sensitivity: target must hold class indices in \[0, 3\), "
                                         r"got values in \[0, 5\]"):
        train.sensitivity(logits, torch.tensor([0, 1, 5, 1]), average="macro")
    with pytest.raises(ValueError, match=r"medkern.train.iou: preds must hold class indices in \[0, 2\)"):
        train.iou(torch.tensor([0, 2]), torch.tensor([0, 1]), num_classes=2)
    with pytest.raises(ValueError, match=r"score 3 classes, but num_classes is 4"):
        train.confusion_matrix(logits, target, num_classes=4)
    with pytest.raises(ValueError, match=r"medkern.train.confusion_matrix: num_classes must be an int >= 2"):
        train.confusion_matrix(target, target, num_classes=1)
    with pytest.raises(TypeError, match=r"medkern.train.precision: zero_division must be a float"):
        train.precision(logits, target, average="macro", zero_division="warn")
    with pytest.raises(ValueError, match=r"medkern.train.accuracy: target must have shape \(N, \*spatial\) "
                                         r"with N >= 1"):
        train.accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(TypeError, match=r"medkern.train.auroc: preds must be floating-point scores"):
        train.auroc(target, target)
    with pytest.raises(ValueError, match=r"medkern.train.auroc: single_class must be 'raise' or 'nan'"):
        train.auroc(logits.softmax(1), target, single_class="ignore")
    with pytest.raises(ValueError, match=r"medkern.train.ConfusionMatrix.update: preds must have target's shape"):
        train.ConfusionMatrix(3).update(torch.randn(4, 3, 2), target)
