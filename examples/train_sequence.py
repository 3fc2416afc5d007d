"""Rhythm classification of ECG-like signals (normal, atrial fibrillation, brady-, tachycardia) with an LSTM.

    python examples/train_sequence.py
    python examples/train_sequence.py --quick --out /tmp/ecg

Per-class sensitivity, macro F1 and the confusion matrix on the test set, and the ROC curve of
atrial fibrillation against the other rhythms (roc_afib.png).
"""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.data import DataLoader

import _common
from medkern import data, train
from medkern.models import SequenceClassifier
from medkern.train import figures


def main():
    args = _common.parse_args(__doc__.splitlines()[0], epochs=12,
                              cell={"default": "lstm", "choices": ("lstm", "gru")})
    started = time.perf_counter()
    out = _common.output_folder(args, "sequence")
    ecg = data.SyntheticECG(120 if args.quick else 2000, length=250 if args.quick else 1000, sampling_rate=100 if
                            args.quick else 250, seed=args.seed)  # 2.5 s / 4 s windows
    train_set, val_set, test_set = _common.split(ecg)
    classes = len(ecg.classes)

    model = SequenceClassifier(classes, input_size=1, hidden_size=16 if args.quick else 64, num_layers=1 if
                               args.quick else 2, cell=args.cell, bidirectional=True, dropout=0.1,
                               reference=args.reference)
    loader = DataLoader(train_set, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(args.seed))
    val_loader, test_loader = (DataLoader(s, batch_size=128) for s in (val_set, test_set))
    metrics = {
        "accuracy": lambda p, t: train.accuracy(p, t),
        "macro_f1": lambda p, t: train.f1(p, t, average="macro"),
        "sensitivity": lambda p, t: train.sensitivity(p, t, average=None),  # one column per rhythm
    }
    trainer = train.Trainer(
        model, lambda params: torch.optim.Adam(params, lr=3e-3), nn.CrossEntropyLoss(), metrics=metrics,
        scheduler=lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=args.epochs * len(loader)),
        scheduler_interval="step", clip_grad_norm=1.0, device=args.device, seed=args.seed,
        early_stopping=train.EarlyStopping("val_macro_f1", mode="max", patience=4),
        checkpoint_dir=out / "checkpoints", log_dir=out, progress=not args.quick)
    history = trainer.fit(loader, val_loader, epochs=args.epochs)

    trainer.load_checkpoint(out / "checkpoints" / "best.pt")
    test = trainer.evaluate(test_loader)
    logits = trainer.predict(test_loader)
    targets = torch.cat([t for _, t in test_loader])
    matrix = train.confusion_matrix(logits, targets)
    test["confusion_matrix"] = {"rows_true_columns_predicted": list(ecg.classes), "counts": matrix.tolist()}
    afib = ecg.classes.index("afib")
    roc = figures.save_roc_curve(logits.softmax(1)[:, afib], (targets == afib).long(), out / "roc_afib.png",
                                 title="atrial fibrillation vs other rhythms (test)")
    _common.write_summary(out, "sequence", args, history, test, started, roc=roc)


if __name__ == "__main__":
    main()
