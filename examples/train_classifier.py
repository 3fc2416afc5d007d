"""Lesion / no-lesion classification of 2D images with a CNN, on synthetic scans or a MedMNIST file.

    python examples/train_classifier.py                      # synthetic lesions, 64x64
    python examples/train_classifier.py --medmnist pneumoniamnist.npz
    python examples/train_classifier.py --quick --out /tmp/clf

Class-balanced sampling for the imbalanced data, sensitivity / specificity /
AUROC as clinicians read them, early stopping on the validation AUROC, and an ROC curve of the
test set (roc.png), next to metrics.csv/json, the checkpoints and summary.json.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.data import DataLoader

import _common
from medkern import data, train
from medkern.train import figures
from medkern.models import ImageClassifier


def datasets(args):
    """(train, val, test) datasets and the training labels (for the sampler)."""
    if args.medmnist:
        parts = [data.MedMNIST(args.medmnist, split) for split in ("train", "val", "test")]
        return parts, torch.stack([torch.as_tensor(label).view(()) for _, label in parts[0]])
    # a third of the scans have lesions: imbalanced, as screening data are
    full = data.SyntheticLesions(96 if args.quick else 1500, size=32 if args.quick else 64, lesion_fraction=1 / 3,
                                 seed=args.seed)
    parts = _common.split(full)
    return parts, full.labels[list(parts[0].indices)]


def positive_score(logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(1)[:, 1]


def main():
    args = _common.parse_args(__doc__.splitlines()[0], epochs=15,
                              medmnist={"default": None, "help": "a MedMNIST .npz file (2D) instead of synthetic data"})
    started = time.perf_counter()
    out = _common.output_folder(args, "classifier")
    (train_set, val_set, test_set), labels = datasets(args)
    classes, channels = int(labels.max()) + 1, train_set[0][0].shape[0]

    model = ImageClassifier(channels, classes, widths=(8, 16) if args.quick else (32, 64, 128), dropout=0.2,
                            reference=args.reference)
    loader = DataLoader(train_set, batch_size=32, sampler=train.ClassBalancedSampler(
        labels, generator=torch.Generator().manual_seed(args.seed)))
    val_loader, test_loader = (DataLoader(s, batch_size=64) for s in (val_set, test_set))
    binary = classes == 2
    metrics = {
        "accuracy": lambda p, t: train.accuracy(p, t),
        "balanced_accuracy": lambda p, t: train.balanced_accuracy(p, t),
    }
    if binary:
        metrics |= {"sensitivity": lambda p, t: train.sensitivity(p, t),
                    "specificity": lambda p, t: train.specificity(p, t),
                    "auroc": lambda p, t: train.auroc(positive_score(p), t, single_class="nan")}
    trainer = train.Trainer(
        model, lambda params: torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4),
        nn.CrossEntropyLoss(),  # the sampler balances the classes (class weights would count them twice)
        metrics=metrics, scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs),
        device=args.device, channels_last=True, seed=args.seed,
        early_stopping=train.EarlyStopping("val_auroc" if binary else "val_balanced_accuracy", mode="max", patience=5),
        checkpoint_dir=out / "checkpoints", log_dir=out, progress=not args.quick)
    history = trainer.fit(loader, val_loader, epochs=args.epochs)

    trainer.load_checkpoint(out / "checkpoints" / "best.pt")  # test the best model, not the last
    test = trainer.evaluate(test_loader)
    files = {}
    if binary:
        logits = trainer.predict(test_loader)
        targets = torch.cat([t for _, t in test_loader]).view(-1)
        files["roc"] = figures.save_roc_curve(positive_score(logits), targets, out / "roc.png",
                                                    title="lesion vs no lesion (test)")
    _common.write_summary(out, "classifier", args, history, test, started, **files)


if __name__ == "__main__":
    main()
